//! Stream cases of the conformance suite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use psrpc::bus::Tap;
use psrpc::stream::{Stream, StreamOptions};
use psrpc::{CallOptions, Client, ClientOptions, Error, ErrorCode, MethodInfo, Server};
use tokio::sync::oneshot;

use crate::{Harness, within};

const SVC: &str = "ConformanceStreams";
const CHAT: MethodInfo = MethodInfo::unary("Chat");

/// Hands a value out of a handler closure once.
fn slot<T>(value: T) -> Arc<Mutex<Option<T>>> {
    Arc::new(Mutex::new(Some(value)))
}

fn take<T>(slot: &Arc<Mutex<Option<T>>>) -> T {
    slot.lock().unwrap().take().expect("used once")
}

async fn echo_server(h: &Harness) -> Server {
    let server = Server::new(SVC, h.bus().await);
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                while let Some(msg) = stream.recv().await {
                    stream.send(&format!("echo {}", msg?)).await?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    server
}

/// Messages go both ways on one stream, and a clean close ends it on both sides.
pub async fn stream_ping_pong(h: &Harness) {
    let _server = echo_server(h).await;
    let client = Client::new(SVC, h.bus().await).await.unwrap();
    let mut stream = within(
        "stream open",
        client.open_stream::<String, String>(&CHAT, &[], CallOptions::new()),
    )
    .await
    .unwrap();
    for word in ["one", "two", "three"] {
        stream.send(&word.to_string()).await.unwrap();
        let reply = within("echo", stream.recv()).await.unwrap().unwrap();
        assert_eq!(reply, format!("echo {word}"));
    }
    within("close", stream.close(None))
        .await
        .expect("close reached the bus");
    assert_eq!(stream.recv().await, None);
}

/// 10,000 messages each way, in order, with both directions in flight at once.
pub async fn stream_ten_thousand_each_way_in_order(h: &Harness) {
    const N: u32 = 10_000;
    let server = Server::new(SVC, h.bus().await);
    server
        .register_stream(CHAT, &[], |_ctx, stream: Stream<u32, u32>| async move {
            let (tx, mut rx) = stream.split();
            let sending = async {
                for i in 0..N {
                    tx.send(&i).await?;
                }
                Ok::<_, Error>(())
            };
            let receiving = async {
                for i in 0..N {
                    let got = rx.recv().await.expect("open")?;
                    assert_eq!(got, i, "server received out of order");
                }
                Ok::<_, Error>(())
            };
            let (sent, received) = tokio::join!(sending, receiving);
            sent?;
            received?;
            tx.closed().await;
            Ok(())
        })
        .await
        .unwrap();
    let client = Client::new(SVC, h.bus().await).await.unwrap();
    let stream = client
        .open_stream::<u32, u32>(&CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    let (tx, mut rx) = stream.split();
    let sending = async {
        for i in 0..N {
            tx.send(&i).await.unwrap();
        }
    };
    let receiving = async {
        for i in 0..N {
            assert_eq!(
                rx.recv().await.unwrap().unwrap(),
                i,
                "client received out of order"
            );
        }
    };
    // Generous: 20,000 acknowledged messages through a real broker on a busy debug build.
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(sending, receiving)
    })
    .await
    .expect("10,000 messages each way within a minute");
    tx.close(None).await.expect("close reached the bus");
}

/// A handler error closes the stream with its code and message at the client.
pub async fn stream_close_with_error_propagates_its_code(h: &Harness) {
    let server = Server::new(SVC, h.bus().await);
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                let first = stream.recv().await.unwrap()?;
                Err(Error::new(
                    ErrorCode::PermissionDenied,
                    format!("no {first}"),
                ))
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, h.bus().await).await.unwrap();
    let mut stream = client
        .open_stream::<String, String>(&CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    stream.send(&"entry".to_string()).await.unwrap();
    let err = within("the error close", stream.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, Error::new(ErrorCode::PermissionDenied, "no entry"));
}

/// A handler returning closes the stream cleanly after what it sent arrived.
pub async fn stream_handler_return_closes_the_stream(h: &Harness) {
    let server = Server::new(SVC, h.bus().await);
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, stream: Stream<String, String>| async move {
                stream.send(&"last words".to_string()).await?;
                Ok(())
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, h.bus().await).await.unwrap();
    let mut stream = client
        .open_stream::<String, String>(&CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    assert_eq!(
        within("message", stream.recv()).await.unwrap().unwrap(),
        "last words"
    );
    assert_eq!(within("clean end", stream.recv()).await, None);
}

/// Dropping the client's handle ends the server's side.
pub async fn stream_client_drop_closes_the_server_side(h: &Harness) {
    let server = Server::new(SVC, h.bus().await);
    let (ended_tx, ended_rx) = oneshot::channel::<bool>();
    let ended = slot(ended_tx);
    server
        .register_stream(
            CHAT,
            &[],
            move |_ctx, mut stream: Stream<String, String>| {
                let ended = take(&ended);
                async move {
                    let _ = ended.send(stream.recv().await.is_none());
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, h.bus().await).await.unwrap();
    let stream = client
        .open_stream::<String, String>(&CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    drop(stream);
    assert!(
        within("server side end", ended_rx).await.unwrap(),
        "a clean end"
    );
}

/// A client whose network goes away (no close, no keepalives) is detected by the server.
pub async fn stream_vanished_peer_is_detected(h: &Harness) {
    let server = Server::new(SVC, h.bus().await);
    let (outcome_tx, outcome_rx) = oneshot::channel::<Option<Error>>();
    let outcome = slot(outcome_tx);
    server
        .register_stream(
            CHAT,
            &[],
            move |_ctx, mut stream: Stream<String, String>| {
                let outcome = take(&outcome);
                async move {
                    let _ = outcome.send(stream.recv().await.and_then(Result::err));
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let partitioned = Arc::new(AtomicBool::new(false));
    let flag = partitioned.clone();
    // A client whose network can go away: its publishes vanish once the flag is set.
    let bus = Tap::new(h.bus().await, move |_, _| !flag.load(Ordering::SeqCst));
    let options = ClientOptions {
        stream: StreamOptions {
            keepalive_interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    };
    let client = Client::with_options(SVC, bus, options).await.unwrap();
    let stream = client
        .open_stream::<String, String>(&CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    partitioned.store(true, Ordering::SeqCst);
    // The server's default idle timeout is 5 s; the harness waits up to 10 s.
    let err = within("detection", outcome_rx)
        .await
        .unwrap()
        .expect("an error");
    assert_eq!(
        err,
        Error::new(ErrorCode::Unavailable, "stream peer vanished")
    );
    drop(stream);
}
