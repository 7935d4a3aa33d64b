//! The test kit starts, kills and restarts real brokers.

use std::io::{Read, Write};
use std::net::TcpStream;

use psrpc_testkit::{NatsOptions, NatsServer, RedisOptions, RedisServer};

fn redis_roundtrip(port: u16, command: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(command).unwrap();
    let mut buf = [0u8; 128];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn redis_starts_kills_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start().unwrap();
    let port = redis.port();
    assert_eq!(redis_roundtrip(port, b"PING\r\n"), "+PONG\r\n");
    redis.kill();
    assert!(!redis.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(redis_roundtrip(port, b"PING\r\n"), "+PONG\r\n");
}

#[test]
fn redis_with_persistence_keeps_acknowledged_writes_across_a_kill() {
    let mut redis = RedisServer::start_with(RedisOptions {
        persistence: true,
        ..Default::default()
    })
    .unwrap();
    let port = redis.port();
    assert_eq!(
        redis_roundtrip(port, b"SET kept yes\r\n"),
        "+OK\r\n",
        "acknowledged write"
    );
    redis.kill();
    redis.restart().unwrap();
    assert_eq!(redis_roundtrip(port, b"GET kept\r\n"), "$3\r\nyes\r\n");
}

#[test]
fn redis_password_is_required() {
    let redis = RedisServer::start_with(RedisOptions {
        password: Some("s3cret".into()),
        ..Default::default()
    })
    .unwrap();
    assert!(redis_roundtrip(redis.port(), b"PING\r\n").starts_with("-NOAUTH"));
    assert!(redis.url().contains(":s3cret@"));
}

#[test]
fn nats_starts_kills_and_restarts_on_the_same_port() {
    let mut nats = NatsServer::start().unwrap();
    let port = nats.port();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"INFO ");
    nats.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    nats.restart().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
}

#[test]
fn nats_options_reach_the_server() {
    let nats = NatsServer::start_with(NatsOptions {
        credentials: Some(("alice".into(), "pw".into())),
        max_payload: Some(4096),
        jetstream: true,
        ..Default::default()
    })
    .unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", nats.port())).unwrap();
    let mut info = vec![0u8; 2048];
    let n = stream.read(&mut info).unwrap();
    let info = String::from_utf8_lossy(&info[..n]);
    assert!(info.contains("\"auth_required\":true"), "{info}");
    assert!(info.contains("\"max_payload\":4096"), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");
}

fn amqp_server_properties(port: u16) -> bool {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let mut frame = [0u8; 7];
    stream.read_exact(&mut frame).is_ok() && frame[0] == 1
}

#[test]
fn rabbitmq_starts_kills_and_restarts_on_the_same_port() {
    let rabbit = psrpc_testkit::RabbitMqServer::start().unwrap();
    let port = rabbit.port();
    assert!(amqp_server_properties(port));
    let first = rabbit.fresh_url().unwrap();
    let second = rabbit.fresh_url().unwrap();
    assert_ne!(first, second);
    assert!(first.starts_with(&format!("amqp://psrpc:psrpc@127.0.0.1:{port}/t")));
    rabbit.kill();
    assert!(!rabbit.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    rabbit.restart().unwrap();
    assert!(rabbit.is_running());
    assert!(amqp_server_properties(port));
}

#[test]
fn rabbitmq_makes_more_virtual_hosts_when_the_boot_ones_run_out() {
    let rabbit = psrpc_testkit::RabbitMqServer::shared().unwrap();
    let urls: std::collections::HashSet<String> =
        (0..30).map(|_| rabbit.fresh_url().unwrap()).collect();
    assert_eq!(urls.len(), 30);
    assert!(std::ptr::eq(
        rabbit,
        psrpc_testkit::RabbitMqServer::shared().unwrap()
    ));
}
