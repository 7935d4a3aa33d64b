//! The connection task: drives rumqttc's event loop, routes incoming messages, pairs acks
//! with their requests and restores the subscriptions after a reconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Filter, Packet, PubAck, Publish, SubAck, Subscribe, SubscribeProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::{ConnectionError, Event, EventLoop, Request};
use tokio::sync::oneshot;

use crate::router::{Counters, Router, Shared};
use crate::{MqttBusError, SHARE_PREFIX};

/// What the first connection attempt gave.
pub(crate) type FirstConnect = oneshot::Sender<Result<ConnAck, ConnectionError>>;

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
            Ok(Event::Incoming(Packet::Publish(publish))) => route(&router, publish),
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                on_connack(&mut eventloop, &router, &ack);
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(ack));
                } else {
                    tracing::info!("reconnected to the MQTT broker; subscriptions restored");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => on_suback(&router, ack),
            Ok(Event::Incoming(Packet::PubAck(ack))) => on_puback(&router, ack),
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                let mut shared = router.lock();
                if let Some(request) = shared.sub_fifo.pop_front() {
                    shared
                        .sub_inflight
                        .entry(pkid)
                        .or_default()
                        .push_back(request);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                let mut shared = router.lock();
                if let Some(waiter) = shared.pub_fifo.pop_front() {
                    shared.pub_inflight.insert(pkid, waiter);
                }
            }
            Ok(_) => {}
            Err(err) => {
                if let Some(first) = first.take() {
                    // The bus needs a broker to start: no retries for the first connection.
                    let _ = first.send(Err(err));
                    return;
                }
                {
                    let mut shared = router.lock();
                    let was_connected = shared.connected;
                    router.connected.store(false, Ordering::Release);
                    // Requests queued before the loss would be sent on the new connection out of
                    // step with our bookkeeping (and are stale anyway): drop them all, with the
                    // lock held so no caller queues a request meanwhile.
                    eventloop.clean();
                    eventloop.pending.clear();
                    shared.disconnected();
                    if was_connected {
                        Counters::bump(&router.counters.disconnects);
                        tracing::warn!(%err, "MQTT connection lost; reconnecting");
                    }
                }
                failures = failures.saturating_add(1);
                // Back off between attempts (rumqttc retries at once when polled again).
                let delay = Duration::from_millis(50)
                    .saturating_mul(failures.min(64))
                    .min(max_reconnect_delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// A (re)connection: note the broker's limits and subscribe every filter again, ahead of any
/// request callers queue from now on (rumqttc sends `pending` before its request channel).
fn on_connack(eventloop: &mut EventLoop, router: &Router, ack: &ConnAck) {
    let mut shared = router.lock();
    let props = ack.properties.as_ref();
    shared.broker_max_packet = props.and_then(|p| p.max_packet_size);
    router.broker_max_packet.store(
        shared.broker_max_packet.map_or(usize::MAX, |m| m as usize),
        Ordering::Relaxed,
    );
    shared.sub_ids_available = props
        .and_then(|p| p.subscription_identifiers_available)
        .is_none_or(|v| v != 0);
    shared.connected = true;
    router.connected.store(true, Ordering::Release);
    let Shared { subs, sub_fifo, .. } = &mut *shared;
    for (filter, state) in subs.iter_mut() {
        eventloop
            .pending
            .push_back(Request::Subscribe(subscribe_packet(
                filter,
                state.entry.sub_id,
            )));
        sub_fifo.push_back((filter.clone(), state.entry.sub_id));
        state.sent = true;
    }
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

fn on_suback(router: &Router, ack: SubAck) {
    let mut shared = router.lock();
    let Some(queue) = shared.sub_inflight.get_mut(&ack.pkid) else {
        return;
    };
    let Some((filter, sub_id)) = queue.pop_front() else {
        return;
    };
    if queue.is_empty() {
        shared.sub_inflight.remove(&ack.pkid);
    }
    let Some(state) = shared.subs.get_mut(&filter) else {
        return;
    };
    if state.entry.sub_id != sub_id {
        // An earlier generation of this filter, since unsubscribed.
        return;
    }
    state.sent = false;
    let outcome = match ack.return_codes.first() {
        Some(SubscribeReasonCode::Success(_)) => {
            state.live = true;
            Ok(())
        }
        Some(SubscribeReasonCode::SharedSubscriptionsNotSupported) => Err(
            MqttBusError::NoSharedSubscriptions("the broker refused a shared subscription".into()),
        ),
        other => Err(MqttBusError::Refused(format!(
            "SUBSCRIBE {filter}: {other:?}"
        ))),
    };
    for waiter in state.waiters.drain(..) {
        let _ = waiter.send(match &outcome {
            Ok(()) => Ok(()),
            Err(err) => Err(psrpc::bus::BusError::Subscribe(err.to_string().into())),
        });
    }
}

fn on_puback(router: &Router, ack: PubAck) {
    let waiter = router.lock().pub_inflight.remove(&ack.pkid);
    if let Some(waiter) = waiter {
        let _ = waiter.send(Ok(ack.reason));
    }
}

/// Hands an incoming message to the local subscribers of the subscriptions it came through.
fn route(router: &Router, publish: Publish) {
    Counters::bump(&router.counters.received);
    let ids = publish
        .properties
        .map(|p| p.subscription_identifiers)
        .unwrap_or_default();
    let entries: Vec<_> = {
        let shared = router.lock();
        if !ids.is_empty() {
            ids.iter()
                .filter_map(|id| shared.by_id.get(id).cloned())
                .collect()
        } else {
            // A broker without subscription identifiers: route by topic name.
            let topic = String::from_utf8_lossy(&publish.topic);
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
        tracing::debug!(topic = ?publish.topic, "MQTT message for no local subscriber");
        return;
    }
    let payload: Bytes = publish.payload;
    for entry in entries {
        entry.deliver(&payload);
    }
}
