//! The well-known types that do not implement `prost::Name` (`Struct`, `Value`, `ListValue`,
//! `FieldMask`) work as requests, responses and subscription messages.

use std::collections::BTreeMap;
use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::prost_types::{self, FieldMask, ListValue, Struct, Timestamp, Value, value::Kind};
use psrpc::{CallOptions, RequestContext};
use psrpc_build_e2e::wellknown::{KnownClient, KnownServer, KnownServerImpl, known_methods};

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn record() -> Struct {
    Struct {
        fields: BTreeMap::from([("name".to_owned(), text("psrpc"))]),
    }
}

struct Known;

impl KnownServerImpl for Known {
    async fn echo(&self, _ctx: RequestContext, req: Struct) -> psrpc::Result<Struct> {
        Ok(req)
    }

    async fn pick(&self, _ctx: RequestContext, req: FieldMask) -> psrpc::Result<Value> {
        Ok(text(&req.paths.join(",")))
    }

    async fn gather(&self, _ctx: RequestContext, _req: ()) -> psrpc::Result<ListValue> {
        Ok(ListValue {
            values: vec![text("a"), text("b")],
        })
    }

    async fn later(
        &self,
        _ctx: RequestContext,
        req: prost_types::Duration,
    ) -> psrpc::Result<Timestamp> {
        Ok(Timestamp {
            seconds: 100 + req.seconds,
            nanos: 0,
        })
    }
}

#[tokio::test]
async fn well_known_requests_and_responses() {
    let bus = LocalBus::new();
    let _server = KnownServer::new(Known, bus.clone()).await.unwrap();
    let client: KnownClient = KnownClient::new(bus).await.unwrap();

    let echoed = client.echo(&record(), CallOptions::new()).await.unwrap();
    assert_eq!(echoed, record());
    let mask = FieldMask {
        paths: vec!["a.b".to_owned(), "c".to_owned()],
    };
    assert_eq!(
        client.pick(&mask, CallOptions::new()).await.unwrap(),
        text("a.b,c")
    );
    let later = client
        .later(
            &prost_types::Duration {
                seconds: 5,
                nanos: 0,
            },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(later.seconds, 105);
    let lists = client
        .gather(&(), CallOptions::new().timeout(Duration::from_secs(1)))
        .await
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(lists[0].result.as_ref().unwrap().values.len(), 2);
}

#[tokio::test]
async fn well_known_subscriptions() {
    let bus = LocalBus::new();
    let server = KnownServer::new(Known, bus.clone()).await.unwrap();
    let client: KnownClient = KnownClient::new(bus).await.unwrap();

    let mut changes = client.subscribe_changes().await.unwrap();
    let mut values = client.subscribe_values().await.unwrap();
    let mut masks = client.subscribe_masks("lobby").await.unwrap();
    let mut lists = client.subscribe_lists().await.unwrap();

    server.publish_changes(&record()).await.unwrap();
    server.publish_values(&text("v")).await.unwrap();
    let mask = FieldMask {
        paths: vec!["x".to_owned()],
    };
    server.publish_masks("elsewhere", &mask).await.unwrap();
    server.publish_masks("lobby", &mask).await.unwrap();
    let list = ListValue {
        values: vec![text("l")],
    };
    server.publish_lists(&list).await.unwrap();

    assert_eq!(changes.recv().await.unwrap(), record());
    assert_eq!(values.recv().await.unwrap(), text("v"));
    assert_eq!(masks.recv().await.unwrap(), mask);
    assert_eq!(lists.recv().await.unwrap(), list);
    // Each message travels under its proto name, so nothing was skipped as another type.
    assert_eq!(
        changes.malformed() + values.malformed() + masks.malformed(),
        0
    );

    // The proto name is the one Go psrpc puts on the wire: a generic subscriber naming the
    // type itself reads the generated publisher's messages.
    let mut raw = client
        .client()
        .subscribe_named::<Struct>(known_methods::CHANGES, &[], "google.protobuf.Struct")
        .await
        .unwrap();
    server.publish_changes(&record()).await.unwrap();
    assert_eq!(raw.recv().await.unwrap(), record());
}
