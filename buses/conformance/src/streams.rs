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
const CHAT: MethodInfo = MethodInfo::stream("Chat");

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
        client.open_stream::<String, String>(CHAT, &[], CallOptions::new()),
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
        .open_stream::<u32, u32>(CHAT, &[], CallOptions::new())
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
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
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
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
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
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
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
    let options = ClientOptions::default()
        .stream(StreamOptions::default().keepalive_interval(Duration::from_millis(200)));
    let client = Client::with_options(SVC, bus, options).await.unwrap();
    let stream = client
        .open_stream::<String, String>(CHAT, &[], CallOptions::new())
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

/// Issue 10.1: `recv` and `send` raced against short timers (`select!`, `timeout`) lose no
/// message, keep the order, and leave the stream usable, on a real broker.
pub async fn stream_select_and_timeout_lose_nothing(h: &Harness) {
    const N: u32 = 2_000;
    let (got_tx, got_rx) = oneshot::channel::<Vec<u32>>();
    let got_slot = slot(got_tx);
    let server = Server::new(SVC, h.bus().await);
    server
        .register_stream(CHAT, &[], move |_ctx, stream: Stream<u32, u32>| {
            let got_tx = take(&got_slot);
            async move {
                let (tx, mut rx) = stream.split();
                let sending = async {
                    for i in 0..N {
                        tx.send(&i).await?;
                    }
                    Ok::<_, Error>(())
                };
                let receiving = async {
                    let mut got = Vec::new();
                    while let Some(msg) = rx.recv().await {
                        let msg = msg?;
                        got.push(msg);
                        if msg == u32::MAX {
                            // The client's last word: answer it, to show the stream still works.
                            tx.send(&u32::MAX).await?;
                        }
                    }
                    Ok::<_, Error>(got)
                };
                let (sent, got) = tokio::join!(sending, receiving);
                sent?;
                let _ = got_tx.send(got?);
                Ok(())
            }
        })
        .await
        .unwrap();
    let client = Client::new(SVC, h.bus().await).await.unwrap();
    let stream = within(
        "stream open",
        client.open_stream::<u32, u32>(CHAT, &[], CallOptions::new()),
    )
    .await
    .unwrap();
    let (tx, mut rx) = stream.split();
    let short = Duration::from_micros(100);
    let sending = async {
        let mut cancelled = 0u32;
        for i in 0..N {
            // A send that timed out sent nothing: send the same message again.
            while tokio::time::timeout(short, tx.send(&i)).await.is_err() {
                cancelled += 1;
            }
        }
        cancelled
    };
    let receiving = async {
        let mut got = Vec::new();
        let mut cancelled = 0u32;
        while got.len() < N as usize {
            tokio::select! {
                msg = rx.recv() => got.push(msg.expect("stream open").unwrap()),
                _ = tokio::time::sleep(short) => cancelled += 1,
            }
        }
        (got, cancelled)
    };
    let (send_cancelled, (got, recv_cancelled)) = within("2,000 messages each way", async {
        tokio::join!(sending, receiving)
    })
    .await;
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "client got all, in order");
    eprintln!(
        "{}: {send_cancelled} sends and {recv_cancelled} receives cancelled",
        h.name()
    );
    // Still usable: one more round trip, then a clean close.
    tx.send(&u32::MAX).await.unwrap();
    assert_eq!(
        within("last answer", rx.recv()).await.unwrap().unwrap(),
        u32::MAX
    );
    tx.close(None).await.expect("close reached the bus");
    let mut expected: Vec<u32> = (0..N).collect();
    expected.push(u32::MAX);
    assert_eq!(
        within("server's record", got_rx).await.unwrap(),
        expected,
        "server got all, in order"
    );
}

/// Issue 10.4: a stream whose peer is silent and sends no keepalives (a Go psrpc client that
/// exited) does not hold `Server::shutdown`: past the drain deadline the stream is closed with
/// `unavailable` and shutdown returns.
pub async fn shutdown_closes_streams_of_silent_peers(h: &Harness) {
    use prost::Message;
    use psrpc::wire::{self, stream_frame::Body};

    let server = Server::with_options(
        SVC,
        h.bus().await,
        psrpc::ServerOptions::default().drain_timeout(Duration::from_millis(300)),
    );
    let (opened_tx, opened_rx) = oneshot::channel::<()>();
    let opened = slot(opened_tx);
    server
        .register_stream(
            CHAT,
            &[],
            move |_ctx, mut stream: Stream<String, String>| {
                let opened = take(&opened);
                async move {
                    let _ = opened.send(());
                    // Waits for a peer that never speaks again.
                    while let Some(msg) = stream.recv().await {
                        msg?;
                    }
                    Ok(())
                }
            },
        )
        .await
        .unwrap();

    // A Go-like peer made of raw frames: it opens with no window (no keepalives), claims,
    // takes the ack, then goes silent.
    let peer = h.bus().await;
    let peer_id = "CLI_silentGoPeer";
    let sub_opts = psrpc::bus::SubscribeOptions::default();
    let mut frames = peer
        .subscribe(&psrpc::Channel::client_stream(SVC, peer_id), sub_opts)
        .await
        .unwrap();
    let mut claims = peer
        .subscribe(&psrpc::Channel::claim(SVC, peer_id), sub_opts)
        .await
        .unwrap();
    let open = wire::StreamFrame {
        stream_id: "STR_silent".into(),
        request_id: "REQ_silentOpen".into(),
        sent_at: psrpc::wire::now_unix_nanos(),
        expiry: psrpc::wire::unix_nanos_after(Duration::from_secs(10)),
        body: Some(Body::Open(wire::StreamOpen {
            node_id: peer_id.into(),
            metadata: Default::default(),
            x_window: 0,
        })),
    };
    let to_server = psrpc::Channel::server_stream(SVC, CHAT.name(), Vec::<String>::new());
    peer.publish(
        &to_server,
        wire::encode_envelope(wire::STREAM_TYPE_URL, &open),
    )
    .await
    .unwrap();
    let claim_payload = within("claim", claims.recv()).await.unwrap();
    let claim =
        wire::ClaimRequest::decode(wire::decode_envelope(claim_payload).unwrap().value).unwrap();
    let answer = wire::ClaimResponse {
        request_id: claim.request_id,
        server_id: claim.server_id,
        ..Default::default()
    };
    peer.publish(
        &psrpc::Channel::claim_response(SVC, CHAT.name(), Vec::<String>::new()),
        wire::encode_envelope(wire::CLAIM_RESPONSE_TYPE_URL, &answer),
    )
    .await
    .unwrap();
    within("handler runs", opened_rx).await.unwrap();

    let begun = std::time::Instant::now();
    within("shutdown past the drain deadline", server.shutdown()).await;
    eprintln!(
        "{}: shutdown with a silent peer took {:?} (drain timeout 300 ms)",
        h.name(),
        begun.elapsed()
    );
    // The peer was told: after the open's ack, a close with `unavailable`.
    let close = within("close frame", async {
        loop {
            let payload = frames.recv().await.expect("subscription open");
            let frame =
                wire::StreamFrame::decode(wire::decode_envelope(payload).unwrap().value).unwrap();
            if let Some(Body::Close(close)) = frame.body {
                break close;
            }
        }
    })
    .await;
    assert_eq!(close.code, ErrorCode::Unavailable.as_str());
    assert_eq!(close.error, "server shut down");
}

/// Issue 10.3: a client that closes its stream (or just the client) and exits at once still
/// delivers its last messages and the close frame.
pub async fn stream_last_frames_survive_a_client_exit(h: &Harness) {
    const N: u32 = 50;
    let (record_tx, mut record_rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u32>, bool)>();
    let server = Server::new(SVC, h.bus().await);
    server
        .register_stream(CHAT, &[], move |_ctx, mut stream: Stream<u32, u32>| {
            let record = record_tx.clone();
            async move {
                let mut got = Vec::new();
                let mut clean = true;
                while let Some(msg) = stream.recv().await {
                    match msg {
                        Ok(n) => got.push(n),
                        Err(_) => clean = false,
                    }
                }
                let _ = record.send((got, clean));
                Ok(())
            }
        })
        .await
        .unwrap();
    for close_client_only in [false, true] {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let client = Client::new(SVC, h.bus().await).await.unwrap();
                        let stream = client
                            .open_stream::<u32, u32>(CHAT, &[], CallOptions::new())
                            .await
                            .unwrap();
                        for i in 0..N {
                            stream.send(&i).await.unwrap();
                        }
                        if close_client_only {
                            client.close().await.expect("client closed and flushed");
                        } else {
                            stream.close(None).await.expect("close reached the bus");
                        }
                    });
                    drop(runtime);
                })
                .join()
                .expect("the client process ran");
        });
        let (got, clean) = within("the server's record", record_rx.recv())
            .await
            .unwrap();
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "client.close only: {close_client_only}"
        );
        assert!(clean, "a clean close");
    }
}
