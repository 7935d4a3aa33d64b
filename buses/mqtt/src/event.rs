//! The connection task: drives rumqttc's event loop, routes incoming messages, pairs acks
//! with their requests and restores the subscriptions after a reconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, PubAckReason, Subscribe, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::{Event, EventLoop, Request};
use tokio::sync::oneshot;

use crate::router::{Counters, Router, Shared};
use crate::{MqttBusError, SHARE_PREFIX};

/// What the first connection attempt gave: the broker's word on shared subscriptions
/// (MQTT 5's CONNACK property; `None` when it did not say, or on MQTT 3.1.1).
pub(crate) type FirstConnect = oneshot::Sender<Result<Option<u8>, MqttBusError>>;

/// Runs the connection until the bus is dropped (which aborts this task).
pub(crate) async fn run(
    mut eventloop: EventLoop,
    router: Arc<Router>,
    mut first: Option<FirstConnect>,
    max_reconnect_delay: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let ids = publish
                    .properties
                    .map(|p| p.subscription_identifiers)
                    .unwrap_or_default();
                route(&router, &publish.topic, publish.payload, &ids);
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                on_connack(&mut eventloop, &router, &ack);
                let shared = ack
                    .properties
                    .as_ref()
                    .and_then(|p| p.shared_subscription_available);
                connected(&mut first, shared);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let outcome = match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => SubOutcome::Granted,
                    Some(SubscribeReasonCode::SharedSubscriptionsNotSupported) => {
                        SubOutcome::NoSharedSubscriptions
                    }
                    other => SubOutcome::Refused(format!("{other:?}")),
                };
                on_suback(&router, ack.pkid, outcome);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => on_puback(&router, ack.pkid, ack.reason),
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => on_outgoing_subscribe(&router, pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                on_outgoing_publish(&router, pkid);
            }
            Ok(_) => {}
            Err(err) => {
                if let Some(first) = first.take() {
                    // The bus needs a broker to start: no retries for the first connection.
                    let _ = first.send(Err(MqttBusError::Connect(err)));
                    return;
                }
                on_lost(&router, &err, || {
                    eventloop.clean();
                    eventloop.pending.clear();
                });
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures, max_reconnect_delay)).await;
            }
        }
    }
}

/// The pause before reconnection attempt `failures` (rumqttc retries at once when polled
/// again).
pub(crate) fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_millis(50)
        .saturating_mul(failures.min(64))
        .min(max)
}

/// A CONNACK arrived: the first one completes `connect`, later ones are reconnections.
pub(crate) fn connected(first: &mut Option<FirstConnect>, shared_subscriptions: Option<u8>) {
    if let Some(first) = first.take() {
        let _ = first.send(Ok(shared_subscriptions));
    } else {
        tracing::info!("reconnected to the MQTT broker; subscriptions restored");
    }
}

/// The connection broke: nothing queued or in flight will be answered. `clean` empties the
/// client library's queues; it runs under the lock, so no caller queues a request meanwhile
/// (requests queued before the loss would go out on the new connection out of step with our
/// bookkeeping, and are stale anyway).
pub(crate) fn on_lost(router: &Router, err: &dyn std::fmt::Display, clean: impl FnOnce()) {
    let mut shared = router.lock();
    let was_connected = shared.connected;
    router.connected.store(false, Ordering::Release);
    clean();
    shared.disconnected();
    if was_connected {
        Counters::bump(&router.counters.disconnects);
        tracing::warn!(%err, "MQTT connection lost; reconnecting");
    }
}

/// rumqttc sent a SUBSCRIBE with packet ID `pkid`: the oldest queued one.
pub(crate) fn on_outgoing_subscribe(router: &Router, pkid: u16) {
    let mut shared = router.lock();
    if let Some(request) = shared.sub_fifo.pop_front() {
        shared
            .sub_inflight
            .entry(pkid)
            .or_default()
            .push_back(request);
    }
}

/// rumqttc sent a QoS 1 PUBLISH with packet ID `pkid`: the oldest queued one.
pub(crate) fn on_outgoing_publish(router: &Router, pkid: u16) {
    let mut shared = router.lock();
    if let Some(waiter) = shared.pub_fifo.pop_front() {
        shared.pub_inflight.insert(pkid, waiter);
    }
}

/// A (re)connection: note the broker's limits and subscribe every filter again, ahead of any
/// request callers queue from now on (rumqttc sends `pending` before its request channel).
fn on_connack(eventloop: &mut EventLoop, router: &Router, ack: &ConnAck) {
    let props = ack.properties.as_ref();
    let sub_ids = props
        .and_then(|p| p.subscription_identifiers_available)
        .is_none_or(|v| v != 0);
    on_connected(
        router,
        props.and_then(|p| p.max_packet_size),
        sub_ids,
        |filter, sub_id| {
            eventloop
                .pending
                .push_back(Request::Subscribe(subscribe_packet(filter, sub_id)));
        },
    );
}

/// A (re)connection on either protocol: note the broker's limits and queue, through
/// `resubscribe`, the SUBSCRIBE of every filter, ahead of any request callers queue from now
/// on.
pub(crate) fn on_connected(
    router: &Router,
    broker_max_packet: Option<u32>,
    sub_ids_available: bool,
    mut resubscribe: impl FnMut(&str, usize),
) {
    let mut shared = router.lock();
    shared.broker_max_packet = broker_max_packet;
    router.broker_max_packet.store(
        broker_max_packet.map_or(usize::MAX, |m| m as usize),
        Ordering::Relaxed,
    );
    shared.sub_ids_available = sub_ids_available;
    shared.connected = true;
    router.connected.store(true, Ordering::Release);
    let Shared { subs, sub_fifo, .. } = &mut *shared;
    for (filter, state) in subs.iter_mut() {
        resubscribe(filter, state.entry.sub_id);
        sub_fifo.push_back((filter.clone(), state.entry.sub_id));
        state.sent = true;
    }
}

/// A SUBACK's answer, on either protocol.
pub(crate) enum SubOutcome {
    Granted,
    NoSharedSubscriptions,
    Refused(String),
}

/// The SUBSCRIBE packet of one filter: QoS 0, our own messages included (a client and a
/// server often share a bus), tagged with the subscription identifier.
pub(crate) fn subscribe_packet(filter: &str, sub_id: usize) -> Subscribe {
    let mut filter = Filter::new(filter, QoS::AtMostOnce);
    filter.nolocal = false;
    Subscribe::new(
        filter,
        Some(SubscribeProperties {
            id: Some(sub_id),
            user_properties: Vec::new(),
        }),
    )
}

pub(crate) fn on_suback(router: &Router, pkid: u16, outcome: SubOutcome) {
    let mut shared = router.lock();
    let Some(queue) = shared.sub_inflight.get_mut(&pkid) else {
        return;
    };
    let Some((filter, sub_id)) = queue.pop_front() else {
        return;
    };
    if queue.is_empty() {
        shared.sub_inflight.remove(&pkid);
    }
    let Some(state) = shared.subs.get_mut(&filter) else {
        return;
    };
    if state.entry.sub_id != sub_id {
        // An earlier generation of this filter, since unsubscribed.
        return;
    }
    state.sent = false;
    let outcome = match outcome {
        SubOutcome::Granted => {
            state.live = true;
            Ok(())
        }
        SubOutcome::NoSharedSubscriptions => Err(MqttBusError::NoSharedSubscriptions(
            "the broker refused a shared subscription".into(),
        )),
        SubOutcome::Refused(why) => {
            Err(MqttBusError::Refused(format!("SUBSCRIBE {filter}: {why}")))
        }
    };
    for waiter in state.waiters.drain(..) {
        let _ = waiter.send(match &outcome {
            Ok(()) => Ok(()),
            Err(err) => Err(psrpc::bus::BusError::Subscribe(err.to_string().into())),
        });
    }
}

pub(crate) fn on_puback(router: &Router, pkid: u16, reason: PubAckReason) {
    let waiter = router.lock().pub_inflight.remove(&pkid);
    if let Some(waiter) = waiter {
        let _ = waiter.send(Ok(reason));
    }
}

/// Hands an incoming message to the local subscribers of the subscriptions it came through
/// (`ids`: its subscription identifiers; none on MQTT 3.1.1).
pub(crate) fn route(router: &Router, topic: &[u8], payload: Bytes, ids: &[usize]) {
    Counters::bump(&router.counters.received);
    let entries: Vec<_> = {
        let shared = router.lock();
        if !ids.is_empty() {
            ids.iter()
                .filter_map(|id| shared.by_id.get(id).cloned())
                .collect()
        } else {
            // A broker without subscription identifiers: route by topic name.
            let topic = String::from_utf8_lossy(topic);
            [
                shared.subs.get(topic.as_ref()),
                shared.subs.get(&format!("{SHARE_PREFIX}{topic}")),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.entry.clone())
            .collect()
        }
    };
    if entries.is_empty() {
        Counters::bump(&router.counters.unroutable);
        tracing::debug!(?topic, "MQTT message for no local subscriber");
        return;
    }
    for entry in entries {
        entry.deliver(&payload);
    }
}
