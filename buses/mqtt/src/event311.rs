//! The connection task on MQTT 3.1.1 (rumqttc's v4 client): the same bookkeeping as
//! [`crate::event`], without what 3.1.1 lacks (subscription identifiers, PUBACK reasons,
//! CONNACK properties).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::PubAckReason;
use rumqttc::{
    ConnectReturnCode, Event, EventLoop, Outgoing, Packet, QoS, Request, Subscribe,
    SubscribeReasonCode,
};

use crate::MqttBusError;
use crate::event::{self, FirstConnect, SubOutcome};
use crate::router::Router;

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
                event::route(&router, publish.topic.as_bytes(), publish.payload, &[]);
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                failures = 0;
                event::on_connected(&router, None, false, |filter, _| {
                    eventloop
                        .pending
                        .push_back(Request::Subscribe(Subscribe::new(filter, QoS::AtMostOnce)));
                });
                event::connected(&mut first, None);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let outcome = match ack.return_codes.first() {
                    Some(SubscribeReasonCode::Success(_)) => SubOutcome::Granted,
                    // 3.1.1 has one failure code: for a shared filter, most likely that.
                    other => SubOutcome::Refused(format!("{other:?}")),
                };
                event::on_suback(&router, ack.pkid, outcome);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                // 3.1.1 PUBACKs carry no reason: the broker has the message.
                event::on_puback(&router, ack.pkid, PubAckReason::Success);
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => {
                event::on_outgoing_subscribe(&router, pkid);
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                event::on_outgoing_publish(&router, pkid);
            }
            Ok(_) => {}
            Err(err) => {
                if let Some(first) = first.take() {
                    // The bus needs a broker to start: no retries for the first connection.
                    let _ = first.send(Err(MqttBusError::Connect311(Box::new(err))));
                    return;
                }
                event::on_lost(&router, &err, || {
                    eventloop.clean();
                    eventloop.pending.clear();
                });
                failures = failures.saturating_add(1);
                tokio::time::sleep(event::backoff(failures, max_reconnect_delay)).await;
            }
        }
    }
}
