//! Round trips through the server, to know it has processed what this client sent before.
//!
//! async-nats's `Client::flush` only flushes the socket; it does not wait for the server (unlike
//! nats.go's `Flush`, a PING/PONG), and async-nats has no public PING. The server handles one
//! connection's operations in order, so we get the same guarantee from an echo: publish an
//! empty message to a private inbox this client subscribes to, and wait for it to come back.
//! When it does, every SUB, UNSUB and PUB sent before it has been processed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OnceCell, oneshot};
use tokio_util::sync::CancellationToken;

use psrpc::bus::NoReceivers;

use crate::error::SetupFailure;
use crate::router::lock;

/// How long one echo may take before it is sent again (it can be lost across a reconnect).
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// The echo machinery of one bus: a private inbox and the round trips waiting on it.
pub(crate) struct Confirmer {
    client: async_nats::Client,
    inbox: String,
    started: OnceCell<()>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next: AtomicU64,
    /// Cancelled when the bus goes: the inbox reader unsubscribes and ends.
    stop: CancellationToken,
}

impl Confirmer {
    pub(crate) fn new(client: async_nats::Client) -> Self {
        let inbox = client.new_inbox();
        Confirmer {
            client,
            inbox,
            started: OnceCell::new(),
            waiters: Mutex::default(),
            next: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }
    }

    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Subscribes to the inbox once. No confirmation is needed: the first echo is sent after
    /// this SUB on the same connection, so the server has the SUB when the echo arrives.
    async fn start(self: &Arc<Self>) -> Result<(), SetupFailure> {
        self.started
            .get_or_try_init(|| async {
                let subscriber = self
                    .client
                    .subscribe(format!("{}.*", self.inbox))
                    .await
                    .map_err(SetupFailure::from_subscribe)?;
                tokio::spawn(read_echoes(
                    Arc::downgrade(self),
                    subscriber,
                    self.stop.clone(),
                ));
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Returns once the server has processed every operation this client sent before the call.
    ///
    /// Callers bound it with a timeout: while disconnected it waits for the reconnect.
    pub(crate) async fn round_trip(self: &Arc<Self>) -> Result<(), SetupFailure> {
        self.start().await?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = oneshot::channel();
        lock(&self.waiters).insert(token, tx);
        let _forget = ForgetWaiter {
            confirmer: self,
            token,
        };
        let subject = format!("{}.{token}", self.inbox);
        loop {
            self.client
                .publish(subject.clone(), Bytes::new())
                .await
                .map_err(|err| SetupFailure::Connection(Arc::new(err)))?;
            match tokio::time::timeout(RESEND_AFTER, &mut rx).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => return Err(SetupFailure::Closed),
                // Lost with a broken connection; a duplicate echo later is harmless.
                Err(_) => continue,
            }
        }
    }
}

impl Confirmer {
    /// A reply subject for a publish, and a report that resolves if the broker answers on it
    /// with its no-responders status: the server sends that (and nothing else arrives there,
    /// since psrpc servers never reply to a reply subject) when no subscription matched.
    pub(crate) async fn watch(self: &Arc<Self>) -> Result<(String, NoReceivers), SetupFailure> {
        self.start().await?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(token, tx);
        // Built outside the report, so dropping the report unpolled still forgets the waiter.
        let forget = OwnedForget {
            confirmer: self.clone(),
            token,
        };
        let report = async move {
            let _forget = forget;
            if rx.await.is_ok() {
                return;
            }
            // The bus went away: nobody will report anything.
            std::future::pending::<()>().await
        };
        Ok((
            format!("{}.{token}", self.inbox),
            NoReceivers::later(report),
        ))
    }
}

struct OwnedForget {
    confirmer: Arc<Confirmer>,
    token: u64,
}

impl Drop for OwnedForget {
    fn drop(&mut self) {
        lock(&self.confirmer.waiters).remove(&self.token);
    }
}

struct ForgetWaiter<'a> {
    confirmer: &'a Confirmer,
    token: u64,
}

impl Drop for ForgetWaiter<'_> {
    fn drop(&mut self) {
        lock(&self.confirmer.waiters).remove(&self.token);
    }
}

async fn read_echoes(
    confirmer: Weak<Confirmer>,
    mut subscriber: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                // Best effort: the bus is going away.
                let _ = subscriber.unsubscribe().await;
                break;
            }
            message = subscriber.next() => {
                let Some(message) = message else { break };
                let Some(confirmer) = confirmer.upgrade() else { break };
                let token = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(waiter) = token.and_then(|t| lock(&confirmer.waiters).remove(&t)) {
                    let _ = waiter.send(());
                }
            }
        }
    }
    // Wake every waiter: no echo will come any more.
    if let Some(confirmer) = confirmer.upgrade() {
        lock(&confirmer.waiters).clear();
    }
}
