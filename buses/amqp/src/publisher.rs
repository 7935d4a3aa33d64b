//! The publishing side of one connection: a channel in confirm mode and the task that collects
//! its confirms (and the messages the broker returned as unroutable).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, ExchangeKind, PublisherConfirm};
use tokio::sync::{mpsc, oneshot};

/// Watched publishes waiting to hear "returned": message ID → who to tell.
pub(crate) type Returns = DashMap<u64, oneshot::Sender<()>>;

/// Publishes on one channel before it is replaced by a fresh one: the client library remembers
/// every exchange a channel declared (for its own recovery, which this bus does not use), so a
/// channel that declared exchanges for years would hold every name it ever saw.
pub(crate) const RECYCLE_AFTER: u64 = 1 << 16;

/// What a confirm turned out to be.
pub(crate) type Outcome = Result<(), PublishFailure>;

/// Why the broker did not take a message.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum PublishFailure {
    /// The broker refused it (`basic.nack`).
    #[error("the broker refused the message (basic.nack)")]
    Nacked,
    /// The channel or connection failed before the broker confirmed it.
    #[error(transparent)]
    Lost(#[from] lapin::Error),
}

struct Pending {
    confirm: PublisherConfirm,
    reply: Option<oneshot::Sender<Outcome>>,
    /// The message ID of a watched publish.
    watch: Option<u64>,
}

/// A confirm-mode channel for publishing.
///
/// Confirm mode is always on, whatever [`crate::AmqpBusOptions::confirms`] says: the broker
/// tells which `mandatory` message it could not route only through `basic.return`, which the
/// client library hands over together with a confirm. Go peers see nothing of it.
pub(crate) struct Publisher {
    pub(crate) channel: lapin::Channel,
    pump: mpsc::UnboundedSender<Pending>,
    published: AtomicU64,
}

impl Publisher {
    /// Opens the channel, turns confirms on and starts the task collecting them.
    pub(crate) async fn open(
        connection: &lapin::Connection,
        returns: Arc<Returns>,
    ) -> lapin::Result<Publisher> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (pump, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect_confirms(channel.clone(), rx, returns));
        Ok(Publisher {
            channel,
            pump,
            published: AtomicU64::new(0),
        })
    }

    /// True when the channel has published enough to be replaced (see [`RECYCLE_AFTER`]).
    pub(crate) fn worn_out(&self) -> bool {
        self.published.load(Ordering::Relaxed) >= RECYCLE_AFTER
    }

    /// Declares the exchange (idempotently, without waiting: the broker handles the declare
    /// before the publish that follows on the same channel) and publishes to it.
    ///
    /// `watch` carries the message ID a `basic.return` is routed by; `confirmed` gets the
    /// broker's confirm.
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        payload: &[u8],
        watch: Option<u64>,
        confirmed: Option<oneshot::Sender<Outcome>>,
    ) -> lapin::Result<()> {
        self.published.fetch_add(1, Ordering::Relaxed);
        let exchange = ShortString::from(exchange);
        self.channel
            .exchange_declare(
                exchange.clone(),
                ExchangeKind::Fanout,
                exchange_options(true),
                FieldTable::default(),
            )
            .await?;
        let mut properties = BasicProperties::default();
        if let Some(id) = watch {
            properties = properties.with_message_id(ShortString::from(id.to_string()));
        }
        let confirm = self
            .channel
            .basic_publish(
                exchange,
                ShortString::from(""),
                BasicPublishOptions {
                    mandatory: watch.is_some(),
                    immediate: false,
                },
                payload,
                properties,
            )
            .await?;
        // Every confirm is collected, or the client library would keep it forever.
        let _ = self.pump.send(Pending {
            confirm,
            reply: confirmed,
            watch,
        });
        Ok(())
    }
}

/// Go's exchange: fanout, not durable, deleted with its last binding.
pub(crate) fn exchange_options(nowait: bool) -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: false,
        durable: false,
        auto_delete: true,
        internal: false,
        nowait,
    }
}

/// Awaits the confirms in publish order (the broker confirms in order), routes returned
/// messages to their watchers and closes the channel once its publisher is gone.
async fn collect_confirms(
    channel: lapin::Channel,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    returns: Arc<Returns>,
) {
    while let Some(Pending {
        confirm,
        reply,
        watch,
    }) = pending.recv().await
    {
        let outcome = match confirm.await {
            Ok(Confirmation::Ack(returned)) => {
                route_return(&returns, returned);
                Ok(())
            }
            Ok(Confirmation::Nack(returned)) => {
                route_return(&returns, returned);
                Err(PublishFailure::Nacked)
            }
            Ok(Confirmation::NotRequested) => Ok(()),
            Err(err) => Err(PublishFailure::Lost(err)),
        };
        if outcome.is_err() {
            tell_lost(&returns, watch);
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
    if channel.status().connected() {
        let _ = channel.close(200, ShortString::from("recycled")).await;
    }
}

/// A watched message the broker refused (`basic.nack`) or whose confirm was lost with its
/// channel reached nobody: its watcher hears "no receivers" now, so the call that published it
/// fails at once instead of waiting for its deadline with no answer coming.
fn tell_lost(returns: &Returns, watch: Option<u64>) {
    if let Some((_, watcher)) = watch.and_then(|id| returns.remove(&id)) {
        let _ = watcher.send(());
    }
}

/// The client library attaches a returned message to whichever confirm it completes next,
/// not necessarily the returned message's own: route it by the message ID we set.
fn route_return(returns: &Returns, returned: Option<BasicReturnMessage>) {
    let Some(message) = returned else {
        return;
    };
    let id = message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .and_then(|id| id.as_str().parse::<u64>().ok());
    if let Some((_, watcher)) = id.and_then(|id| returns.remove(&id)) {
        let _ = watcher.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_watched_message_tells_its_watcher() {
        let returns = Returns::default();
        let (tx, mut rx) = oneshot::channel();
        returns.insert(7, tx);
        let (other, mut other_rx) = oneshot::channel();
        returns.insert(8, other);
        tell_lost(&returns, None);
        assert!(rx.try_recv().is_err(), "an unwatched publish tells nobody");
        tell_lost(&returns, Some(7));
        assert_eq!(rx.try_recv(), Ok(()));
        assert!(other_rx.try_recv().is_err(), "only its own watcher");
        assert!(returns.contains_key(&8) && !returns.contains_key(&7));
    }
}
