//! Bidirectional streams on the in-process bus.

mod common;

use std::time::Duration;

use common::{CuttableBus, RecordingBus};
use psrpc::bus::LocalBus;
use psrpc::stream::{Stream, StreamOptions};
use psrpc::wire::{self, stream_frame::Body};
use psrpc::{
    CallOptions, Client, ClientOptions, Error, ErrorCode, MethodInfo, Server, ServerOptions,
};
use tokio::sync::oneshot;

const SVC: &str = "Streams";
const CHAT: MethodInfo = MethodInfo::stream("Chat");

fn s(v: &str) -> String {
    v.to_owned()
}

/// A server whose Chat echoes every message with its ID, until the client ends the stream.
async fn echo_server(bus: impl psrpc::IntoBus) -> Server {
    let server = Server::new(SVC, bus);
    server
        .register_stream(
            CHAT,
            &[],
            |ctx, mut stream: Stream<String, String>| async move {
                while let Some(msg) = stream.recv().await {
                    stream
                        .send(&format!("{}: {}", ctx.server_id(), msg?))
                        .await?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();
    server
}

#[tokio::test(start_paused = true)]
async fn ping_pong() {
    let bus = LocalBus::new();
    let server = echo_server(bus.clone()).await;
    let client = Client::new(SVC, bus).await.unwrap();
    let mut stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    for word in ["hi", "there", "bye"] {
        stream.send(&s(word)).await.unwrap();
        let reply = stream.recv().await.unwrap().unwrap();
        assert_eq!(reply, format!("{}: {word}", server.id()));
    }
    stream.close(None).await.unwrap();
    assert!(stream.is_closed());
    assert_eq!(stream.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_messages_each_way_in_order() {
    const N: u32 = 10_000;
    let bus = LocalBus::new();
    // Full duplex: each side sends and receives at once through split halves.
    let server = Server::new(SVC, bus.clone());
    server
        .register_stream(
            CHAT,
            &["bulk"],
            |_ctx, stream: Stream<u32, u32>| async move {
                let (tx, mut rx) = stream.split();
                let sending = async {
                    for i in 0..N {
                        tx.send(&i).await?;
                    }
                    Ok::<_, Error>(())
                };
                let receiving = async {
                    for i in 0..N {
                        assert_eq!(
                            rx.recv().await.expect("open")?,
                            i,
                            "server received out of order"
                        );
                    }
                    Ok::<_, Error>(())
                };
                let (sent, received) = tokio::join!(sending, receiving);
                sent?;
                received?;
                tx.closed().await;
                Ok(())
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let stream = client
        .open_stream::<u32, u32>(CHAT, &["bulk"], CallOptions::new())
        .await
        .unwrap();
    assert_eq!(stream.dropped(), 0);
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
    tokio::join!(sending, receiving);
    tx.close(None).await.expect("close reached the bus");
}

#[tokio::test(start_paused = true)]
async fn a_slow_receiver_holds_the_sender_back_without_loss() {
    let bus = LocalBus::new();
    let window = 4;
    let (got_tx, got_rx) = oneshot::channel::<Vec<u32>>();
    let got_tx = common::slot(got_tx);
    let server = Server::with_options(
        SVC,
        bus.clone(),
        ServerOptions::default().stream(StreamOptions::default().window(window)),
    );
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = common::slot(release_rx);
    server
        .register_stream(CHAT, &[], move |_ctx, mut stream: Stream<u32, u32>| {
            let got_tx = common::take(&got_tx);
            let release = common::take(&release_rx);
            async move {
                // Take nothing until released: the client's sends must stall at the window.
                let _ = release.await;
                let mut got = Vec::new();
                while let Some(msg) = stream.recv().await {
                    got.push(msg?);
                    if got.len() == 20 {
                        break;
                    }
                }
                let _ = got_tx.send(got);
                Ok(())
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let stream = client
        .open_stream::<u32, u32>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    for i in 0..window {
        stream.send(&i).await.unwrap();
    }
    // The window is full: the next send waits.
    let next = stream.send(&window);
    tokio::pin!(next);
    assert!(futures::poll!(next.as_mut()).is_pending());
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        futures::poll!(next.as_mut()).is_pending(),
        "send must wait for window space"
    );
    release_tx.send(()).unwrap();
    next.await.unwrap();
    for i in window + 1..20 {
        stream.send(&i).await.unwrap();
    }
    assert_eq!(got_rx.await.unwrap(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn handler_error_closes_the_stream_with_its_code() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                let first = stream.recv().await.unwrap()?;
                Err(Error::new(
                    ErrorCode::PermissionDenied,
                    format!("no {first} for you"),
                ))
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let mut stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    stream.send(&s("soup")).await.unwrap();
    let err = stream.recv().await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied);
    assert_eq!(err.message(), "no soup for you");
    assert!(stream.is_closed());
    assert_eq!(stream.send(&s("more")).await.unwrap_err(), err);
}

#[tokio::test(start_paused = true)]
async fn client_close_with_error_reaches_the_handler() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    let (seen_tx, seen_rx) = oneshot::channel::<Option<Error>>();
    let seen_tx = common::slot(seen_tx);
    server
        .register_stream(
            CHAT,
            &[],
            move |_ctx, mut stream: Stream<String, String>| {
                let seen = common::take(&seen_tx);
                async move {
                    let outcome = stream.recv().await.and_then(Result::err);
                    let _ = seen.send(outcome);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    stream
        .close(Some(Error::new(ErrorCode::Aborted, "changed my mind")))
        .await
        .unwrap();
    let err = seen_rx.await.unwrap().expect("the handler saw an error");
    assert_eq!(err, Error::new(ErrorCode::Aborted, "changed my mind"));
}

#[tokio::test(start_paused = true)]
async fn handler_returning_closes_the_stream_cleanly() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, stream: Stream<String, String>| async move {
                stream.send(&s("only one")).await?;
                Ok(())
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let mut stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), "only one");
    assert_eq!(stream.recv().await, None, "a clean end, not an error");
    assert_eq!(server.open_streams(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_client_handle_closes_the_server_side() {
    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    let (ended_tx, ended_rx) = oneshot::channel::<bool>();
    let ended_tx = common::slot(ended_tx);
    server
        .register_stream(CHAT, &[], move |ctx, mut stream: Stream<String, String>| {
            let ended = common::take(&ended_tx);
            async move {
                let clean_end = stream.recv().await.is_none();
                let _ = ended.send(clean_end && ctx.is_cancelled());
                Ok(())
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    drop(stream);
    assert!(
        ended_rx.await.unwrap(),
        "the handler saw a clean end and its context cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_vanished_client_is_detected_by_the_server() {
    let local = LocalBus::new();
    let server = Server::new(SVC, local.clone());
    let (outcome_tx, outcome_rx) = oneshot::channel::<Option<Error>>();
    let outcome_tx = common::slot(outcome_tx);
    server
        .register_stream(
            CHAT,
            &[],
            move |_ctx, mut stream: Stream<String, String>| {
                let outcome = common::take(&outcome_tx);
                async move {
                    let end = stream.recv().await.and_then(Result::err);
                    let _ = outcome.send(end);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let client_bus = CuttableBus::new(local);
    let client = Client::new(SVC, client_bus.clone()).await.unwrap();
    let stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    let opened = tokio::time::Instant::now();
    // The client's network goes away: no close, no keepalives.
    client_bus.cut();
    let err = outcome_rx.await.unwrap().expect("the server noticed");
    assert_eq!(
        err,
        Error::new(ErrorCode::Unavailable, "stream peer vanished")
    );
    let idle = StreamOptions::default().idle_timeout;
    let waited = opened.elapsed();
    assert!(
        waited >= idle && waited <= idle + Duration::from_secs(2),
        "{waited:?}"
    );
    drop(stream);
}

#[tokio::test(start_paused = true)]
async fn a_vanished_server_is_detected_by_the_client() {
    let local = LocalBus::new();
    let server_bus = CuttableBus::new(local.clone());
    let _server = echo_server(server_bus.clone()).await;
    let client = Client::with_options(
        SVC,
        local,
        ClientOptions::default().stream(
            StreamOptions::default()
                .idle_timeout(Duration::from_secs(2))
                .keepalive_interval(Duration::from_millis(500)),
        ),
    )
    .await
    .unwrap();
    let mut stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    server_bus.cut();
    let err = stream.recv().await.unwrap().unwrap_err();
    assert_eq!(
        err,
        Error::new(ErrorCode::Unavailable, "stream peer vanished")
    );
}

#[tokio::test(start_paused = true)]
async fn unacknowledged_messages_fail_the_stream() {
    let local = LocalBus::new();
    let server_bus = CuttableBus::new(local.clone());
    // A server that never reads: its acks never come (and its keepalives are cut too).
    let server = Server::new(SVC, server_bus.clone());
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, stream: Stream<String, String>| async move {
                stream.closed().await;
                Ok(())
            },
        )
        .await
        .unwrap();
    let client = Client::new(SVC, local).await.unwrap();
    let stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    server_bus.cut();
    stream.send(&s("anyone?")).await.unwrap();
    stream.closed().await;
    let err = stream.send(&s("again")).await.unwrap_err();
    assert!(
        err.code() == ErrorCode::DeadlineExceeded || err.code() == ErrorCode::Unavailable,
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn frames_follow_the_go_exchange() {
    let local = LocalBus::new();
    let server_bus = RecordingBus::new(local.clone());
    let server = echo_server(server_bus.clone()).await;
    let client_bus = RecordingBus::new(local);
    let client = Client::new(SVC, client_bus.clone()).await.unwrap();
    let mut stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new().metadata("x-echo", "s1"))
        .await
        .unwrap();
    stream.send(&s("hi")).await.unwrap();
    assert_eq!(
        stream.recv().await.unwrap().unwrap(),
        format!("{}: hi", server.id())
    );
    stream.close(None).await.unwrap();
    server.shutdown().await;

    let frames = |bus: &RecordingBus| -> Vec<String> {
        bus.payloads()
            .into_iter()
            .map(|p| {
                let msg = wire::decode_envelope(p).unwrap();
                match msg.type_url.as_str() {
                    wire::STREAM_TYPE_URL => {
                        let frame: wire::StreamFrame = prost::Message::decode(msg.value).unwrap();
                        match frame.body {
                            Some(Body::Open(o)) => format!("open(window={})", o.x_window),
                            Some(Body::Message(_)) => "message".into(),
                            Some(Body::Ack(a)) => format!("ack(window={})", a.x_window),
                            Some(Body::Close(c)) => format!("close({}/{})", c.error, c.code),
                            Some(Body::XPing(_)) => "ping".into(),
                            None => "empty".into(),
                        }
                    }
                    other => other
                        .trim_start_matches("type.googleapis.com/internal.")
                        .to_owned(),
                }
            })
            .filter(|f| f != "ping")
            .collect()
    };
    assert_eq!(
        frames(&client_bus),
        [
            "open(window=64)",
            "ClaimResponse",
            "message",
            "ack(window=0)",
            "close(stream closed/canceled)"
        ]
    );
    assert_eq!(
        frames(&server_bus),
        ["ClaimRequest", "ack(window=64)", "ack(window=0)", "message"]
    );
}

/// Issue 10.1: `recv` in a `select!` against a timer shorter than one publish loses nothing.
/// (Before the fix, the ack publish was cancelled with the message already taken: 0 of 20
/// arrived and the stream died of unacknowledged messages.)
#[tokio::test(start_paused = true)]
async fn recv_in_select_loses_nothing() {
    const N: u32 = 200;
    let bus = LocalBus::new();
    let slow = || common::SlowBus::new(bus.clone(), Duration::from_millis(5));
    let server = Server::new(SVC, slow());
    server
        .register_stream(CHAT, &[], |_ctx, mut stream: Stream<u32, u32>| async move {
            for i in 0..N {
                stream.send(&i).await?;
            }
            // Then echo, to show the stream still works both ways.
            while let Some(msg) = stream.recv().await {
                stream.send(&(msg? + 1000)).await?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let client = Client::new(SVC, slow()).await.unwrap();
    let mut stream = client
        .open_stream::<u32, u32>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut timer_won = 0;
    while got.len() < N as usize {
        tokio::select! {
            msg = stream.recv() => got.push(msg.expect("stream open").unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(2)) => timer_won += 1,
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every message, in order");
    assert!(
        timer_won > 0,
        "the timer won some rounds, so recv was cancelled"
    );
    // Past the ack timeout: nothing is left unacknowledged on either side.
    tokio::time::sleep(StreamOptions::default().ack_timeout * 2).await;
    stream.send(&7).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), 1007);
    let _ = stream.close(None).await;
}

/// Issue 10.1: `send` under a `timeout` that fires leaves no phantom in-flight message. (Before
/// the fix, a send cancelled during its publish stayed recorded as unacknowledged and killed the
/// stream when its ack timeout passed.)
#[tokio::test(start_paused = true)]
async fn send_under_timeout_leaves_no_phantom() {
    const N: u32 = 300;
    let bus = LocalBus::new();
    let slow = || common::SlowBus::new(bus.clone(), Duration::from_millis(5));
    let (got_tx, got_rx) = oneshot::channel::<Vec<u32>>();
    let got_slot = common::slot(got_tx);
    let server = Server::new(SVC, slow());
    server
        .register_stream(CHAT, &[], move |_ctx, mut stream: Stream<u32, u32>| {
            let got_tx = common::take(&got_slot);
            async move {
                let mut got = Vec::new();
                while let Some(msg) = stream.recv().await {
                    got.push(msg?);
                }
                let _ = got_tx.send(got);
                Ok(())
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, slow()).await.unwrap();
    let stream = client
        .open_stream::<u32, u32>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    let mut timeouts = 0;
    for i in 0..N {
        // A send that timed out sent nothing: send the same message again.
        while tokio::time::timeout(Duration::from_millis(1), stream.send(&i))
            .await
            .is_err()
        {
            timeouts += 1;
        }
    }
    assert!(
        timeouts > 0,
        "some sends waited for window room and were cancelled"
    );
    tokio::time::sleep(StreamOptions::default().ack_timeout * 2).await;
    assert!(!stream.is_closed(), "no phantom message killed the stream");
    let _ = stream.close(None).await;
    assert_eq!(got_rx.await.unwrap(), (0..N).collect::<Vec<_>>());
}

/// Issue 10.2: the receiving side is a `futures::Stream`, and an ended stream says why.
#[tokio::test(start_paused = true)]
async fn receiving_side_is_a_stream_and_ends_say_why() {
    use futures::StreamExt;
    use psrpc::stream::StreamEnd;

    let bus = LocalBus::new();
    let server = Server::new(SVC, bus.clone());
    server
        .register_stream(CHAT, &[], |_ctx, mut stream: Stream<u32, u32>| async move {
            let first = stream.recv().await.unwrap()?;
            for i in 0..first {
                stream.send(&i).await?;
            }
            match first {
                3 => Ok(()),
                _ => Err(Error::new(ErrorCode::OutOfRange, format!("no {first}"))),
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus.clone()).await.unwrap();
    let open = || client.open_stream::<u32, u32>(CHAT, &[], CallOptions::new());

    // A clean end by the peer: the messages, then `None`.
    let mut stream = open().await.unwrap();
    assert_eq!(stream.end_reason(), None);
    stream.send(&3).await.unwrap();
    let all: Vec<u32> = (&mut stream).map(|m| m.unwrap()).collect().await;
    assert_eq!(all, [0, 1, 2]);
    assert_eq!(stream.end_reason(), Some(StreamEnd::PeerClosed));
    assert_eq!(stream.closed().await, StreamEnd::PeerClosed);

    // An error end by the peer: the messages, the error once, then `None`.
    let mut stream = open().await.unwrap();
    stream.send(&2).await.unwrap();
    let items: Vec<_> = (&mut stream).collect().await;
    let err = Error::new(ErrorCode::OutOfRange, "no 2");
    assert_eq!(items, [Ok(0), Ok(1), Err(err.clone())]);
    assert_eq!(stream.end_reason(), Some(StreamEnd::PeerError(err.clone())));
    assert_eq!(stream.next().await, None, "the error is reported once");
    assert_eq!(
        stream.send(&1).await,
        Err(err),
        "a send after the end says why"
    );

    // Closed here, with an error.
    let stream = open().await.unwrap();
    let mine = Error::new(ErrorCode::Aborted, "enough");
    stream.close(Some(mine.clone())).await.unwrap();
    assert_eq!(stream.end_reason(), Some(StreamEnd::ClosedWithError(mine)));
}

/// Issue 10.2: `close` reports a close frame that did not reach the bus.
#[tokio::test(start_paused = true)]
async fn close_reports_a_failed_close_frame() {
    let bus = LocalBus::new();
    let _server = echo_server(bus.clone()).await;
    let client_bus = common::SlowBus::new(bus, Duration::from_millis(1));
    let client = Client::new(SVC, client_bus.clone()).await.unwrap();
    let stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    client_bus.failing();
    let err = stream.close(None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Canceled, "the bus error: {err}");
    assert!(stream.is_closed());
}

/// Issue 10.4: past the drain deadline, `shutdown` cancels a handler that ignores it, and its
/// caller hears `unavailable`.
#[tokio::test(start_paused = true)]
async fn shutdown_cancels_handlers_past_the_drain_deadline() {
    const SLOW: MethodInfo = MethodInfo::unary("Slow");
    let bus = LocalBus::new();
    let options = ServerOptions::default().drain_timeout(Duration::from_secs(1));
    let server = Server::with_options(SVC, bus.clone(), options);
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let started = common::slot(started_tx);
    server
        .register_unary(SLOW, &[], move |_ctx, _req: String| {
            let started = common::take(&started);
            async move {
                let _ = started.send(());
                std::future::pending::<()>().await;
                Ok(String::new())
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, bus).await.unwrap();
    let call = tokio::spawn(async move {
        client
            .request::<String, String>(
                SLOW,
                &[],
                &s("x"),
                CallOptions::new().timeout(Duration::from_secs(60)),
            )
            .await
    });
    started_rx.await.unwrap();
    let begun = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "shutdown kept its bound"
    );
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err, Error::new(ErrorCode::Unavailable, "server shut down"));
}

/// Issue 10.1: every public async method of servers and clients, dropped half-way, leaves its
/// object usable (registrations, calls, stream opens, subscriptions).
#[tokio::test(start_paused = true)]
async fn dropped_futures_leave_servers_and_clients_usable() {
    const ECHO: MethodInfo = MethodInfo::unary("Echo");
    const NEWS: MethodInfo = MethodInfo::subscription("News");
    let bus = common::SlowBus::new(LocalBus::new(), Duration::from_millis(5));
    let server = Server::new(SVC, bus.clone());
    let echo = |_ctx, req: String| async move { Ok(req) };
    let short = Duration::from_millis(1);

    // A registration dropped while subscribing is not registered, and can be made again.
    assert!(
        tokio::time::timeout(short, server.register_unary(ECHO, &[], echo))
            .await
            .is_err()
    );
    assert!(!server.is_registered(ECHO, &[]));
    server.register_unary(ECHO, &[], echo).await.unwrap();
    server
        .register_stream(
            CHAT,
            &[],
            |_ctx, mut stream: Stream<String, String>| async move {
                while let Some(msg) = stream.recv().await {
                    stream.send(&msg?).await?;
                }
                Ok(())
            },
        )
        .await
        .unwrap();

    let client = Client::new(SVC, bus.clone()).await.unwrap();
    let hi = s("hi");
    let call = || client.request::<String, String>(ECHO, &[], &hi, CallOptions::new());
    assert!(tokio::time::timeout(short, call()).await.is_err());
    assert_eq!(call().await.unwrap(), "hi");

    let open = || client.open_stream::<String, String>(CHAT, &[], CallOptions::new());
    assert!(tokio::time::timeout(short, open()).await.is_err());
    let mut stream = open().await.unwrap();
    stream.send(&s("again")).await.unwrap();
    assert_eq!(stream.recv().await.unwrap().unwrap(), "again");
    stream.close(None).await.unwrap();

    assert!(
        tokio::time::timeout(short, client.subscribe::<String>(NEWS, &[]))
            .await
            .is_err()
    );
    let mut news = client.subscribe::<String>(NEWS, &[]).await.unwrap();
    server.publish(NEWS, &[], &s("extra")).await.unwrap();
    assert_eq!(news.recv().await.unwrap(), "extra");
    assert_eq!(client.stats().pending, 0, "no call left behind");
}

/// Issue 16.5: under load, acks to a Rust peer leave in batches (fewer frames than messages),
/// while a peer that announced no window (as Go peers) still gets one ack per message.
#[tokio::test(start_paused = true)]
async fn acks_are_batched_for_rust_peers_only() {
    const N: u32 = 500;
    for go_like_client in [false, true] {
        let local = LocalBus::new();
        let server_bus = RecordingBus::new(local.clone());
        let server = Server::new(
            SVC,
            common::SlowBus::new(server_bus.bus(), Duration::from_millis(1)),
        );
        let (got_tx, got_rx) = oneshot::channel::<u32>();
        let got_slot = common::slot(got_tx);
        server
            .register_stream(CHAT, &[], move |_ctx, mut stream: Stream<u32, u32>| {
                let got_tx = common::take(&got_slot);
                async move {
                    let mut count = 0;
                    while let Some(msg) = stream.recv().await {
                        assert_eq!(msg?, count, "in order");
                        count += 1;
                    }
                    let _ = got_tx.send(count);
                    Ok(())
                }
            })
            .await
            .unwrap();
        let (_client, stream) = open_u32_stream(local, go_like_client).await;
        for i in 0..N {
            stream.send(&i).await.unwrap();
        }
        stream.close(None).await.unwrap();
        assert_eq!(got_rx.await.unwrap(), N);

        // The acks the server sent: frames, and messages acknowledged.
        let batches = ack_batches(&server_bus);
        let (frames, acked) = (batches.len(), batches.iter().sum::<usize>());
        assert_eq!(acked, N as usize, "every message acknowledged once");
        if go_like_client {
            assert_eq!(frames, N as usize, "one ack per message for a Go-like peer");
        } else {
            assert!(
                frames < N as usize / 2,
                "batched: {frames} ack frames for {N} messages"
            );
        }
    }
}

/// The ack frames a recording bus saw: for each, how many messages it acknowledged.
fn ack_batches(recorded: &RecordingBus) -> Vec<usize> {
    let mut batches = Vec::new();
    for payload in recorded.payloads() {
        let msg = wire::decode_envelope(payload).unwrap();
        if msg.type_url != wire::STREAM_TYPE_URL {
            continue;
        }
        let frame: wire::StreamFrame = prost::Message::decode(msg.value).unwrap();
        if let Some(Body::Ack(ack)) = frame.body
            && ack.x_window == 0
        {
            batches.push(1 + ack.x_more.len());
        }
    }
    batches
}

/// Between Rust peers, a receiver that takes a message while more wait in its inbox holds the
/// ack and sends it with the next ones, even when its driver is idle in between (each take
/// below is followed by a pause in which the driver could have published a lone ack). The last
/// take empties the inbox and sends the batch; a Go-like peer still gets one ack per message.
#[tokio::test(start_paused = true)]
async fn acks_held_while_more_wait_leave_as_one_frame() {
    const N: usize = 5;
    for go_like_client in [false, true] {
        let local = LocalBus::new();
        let server_bus = RecordingBus::new(local.clone());
        let server = Server::new(SVC, server_bus.bus());
        let (got_tx, got_rx) = oneshot::channel::<Vec<u32>>();
        let got_slot = common::slot(got_tx);
        server
            .register_stream(CHAT, &[], move |_ctx, mut stream: Stream<u32, u32>| {
                let got_tx = common::take(&got_slot);
                async move {
                    // Virtual time: every sent message has arrived when this returns.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let mut got = Vec::new();
                    while got.len() < N {
                        got.push(stream.recv().await.unwrap()?);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let _ = got_tx.send(got);
                    stream.recv().await;
                    Ok(())
                }
            })
            .await
            .unwrap();
        let (_client, stream) = open_u32_stream(local, go_like_client).await;
        // A Go-like peer sends stop-and-wait: each message leaves after the previous ack.
        for i in 0..N as u32 {
            stream.send(&i).await.unwrap();
        }
        assert_eq!(got_rx.await.unwrap(), (0..N as u32).collect::<Vec<_>>());
        stream.close(None).await.unwrap();
        let batches = ack_batches(&server_bus);
        assert_eq!(batches.iter().sum::<usize>(), N, "each message acked once");
        if go_like_client {
            assert_eq!(
                batches,
                vec![1; N],
                "one ack per message for a Go-like peer"
            );
        } else {
            assert_eq!(batches, vec![N], "held, then sent together: {batches:?}");
        }
    }
}

/// A message's publish fails whether `send` finished it itself (a bus that answers on the first
/// poll) or handed it to the driver (a bus that takes its time): either way the stream ends with
/// the bus error, reported by the next send, and the peer sees no message out of order.
#[tokio::test(start_paused = true)]
async fn a_failed_message_publish_ends_the_stream() {
    use psrpc::stream::StreamEnd;
    for delay in [Duration::ZERO, Duration::from_millis(1)] {
        let bus = LocalBus::new();
        let _server = echo_server(bus.clone()).await;
        let client_bus = common::SlowBus::new(bus, delay);
        let client = Client::new(SVC, client_bus.clone()).await.unwrap();
        let mut stream = client
            .open_stream::<String, String>(CHAT, &[], CallOptions::new())
            .await
            .unwrap();
        for word in ["one", "two", "three"] {
            stream.send(&s(word)).await.unwrap();
        }
        for word in ["one", "two", "three"] {
            assert!(
                stream.recv().await.unwrap().unwrap().ends_with(word),
                "{delay:?}"
            );
        }
        client_bus.failing();
        // Committed, then its publish fails: the stream ends with the bus error.
        stream.send(&s("lost")).await.unwrap();
        let end = stream.closed().await;
        assert!(matches!(end, StreamEnd::Bus(_)), "{delay:?}: {end:?}");
        let err = stream.send(&s("after")).await.unwrap_err();
        assert_eq!(Some(err), end.error());
    }
}

/// A client and a `u32` stream to the Chat method; a Go-like client announces no window.
async fn open_u32_stream(bus: LocalBus, go_like_client: bool) -> (Client, Stream<u32, u32>) {
    let window = if go_like_client { 0 } else { 64 };
    let options = ClientOptions::default().stream(StreamOptions::default().window(window));
    let client = Client::with_options(SVC, bus, options).await.unwrap();
    let stream = client
        .open_stream::<u32, u32>(CHAT, &[], CallOptions::new())
        .await
        .unwrap();
    (client, stream)
}
