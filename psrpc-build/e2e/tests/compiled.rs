//! The code generated from several files, packages and odd names compiles and works.

use std::time::Duration;

use psrpc::bus::LocalBus;
use psrpc::prost::Name;
use psrpc::{CallOptions, ErrorCode, MethodInfo, RequestContext};
use psrpc_build_e2e::drawing::{
    Canvas, DrawClient, DrawServer, DrawServerImpl, SnakeServiceClient, SnakeServiceServer,
    SnakeServiceServerImpl, draw_methods, snake_service_methods,
};
use psrpc_build_e2e::legacy::{LegacyClient, LegacyServer, LegacyServerImpl, Ping};
use psrpc_build_e2e::routing::routing_methods;
use psrpc_build_e2e::shapes::{EmptyClient, EmptyServer, EmptyServerImpl, Point, Shape};

/// Implements only `Draw`, the method named like its service, across packages, and `Now`.
struct Drawer;

impl DrawServerImpl for Drawer {
    const SERVED: &'static [MethodInfo] = &[draw_methods::DRAW, draw_methods::NOW];

    async fn draw(&self, _ctx: RequestContext, shape: Shape) -> psrpc::Result<Canvas> {
        Ok(Canvas {
            shapes: vec![shape],
        })
    }

    async fn now(
        &self,
        _ctx: RequestContext,
        _req: (),
    ) -> psrpc::Result<psrpc::prost_types::Timestamp> {
        Ok(psrpc::prost_types::Timestamp {
            seconds: 42,
            nanos: 0,
        })
    }
}

#[tokio::test]
async fn imports_across_packages_and_well_known_types() {
    let bus = LocalBus::new();
    let _server = DrawServer::new(Drawer, bus.clone()).await.unwrap();
    let client = DrawClient::new(bus).await.unwrap();

    let shape = Shape {
        points: vec![Point { x: 1, y: 2 }],
        created: Some(psrpc::prost_types::Timestamp::default()),
        labels: [("k".to_owned(), "v".to_owned())].into(),
    };
    let canvas = client.draw(&shape, CallOptions::new()).await.unwrap();
    assert_eq!(canvas.shapes, [shape]);
    assert_eq!(
        client.now(&(), CallOptions::new()).await.unwrap().seconds,
        42
    );
    // Not served: no server takes the call (the default stubs are never registered).
    let err = client.clear(&(), CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    let answers = client
        .name(
            &"n".to_owned(),
            CallOptions::new().timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(answers.is_empty(), "{answers:?}");

    assert_eq!(draw_methods::SERVICE, "Draw");
    assert_eq!(draw_methods::DRAW, MethodInfo::unary("Draw"));
    assert_eq!(Canvas::full_name(), "drawing.Canvas");
    assert_eq!(Point::full_name(), "shapes.Point");
}

struct Snake;

impl SnakeServiceServerImpl for Snake {
    const SERVED: &'static [MethodInfo] = &[
        snake_service_methods::GET_POINT,
        snake_service_methods::TYPE,
    ];

    async fn get_point(&self, _ctx: RequestContext, p: Point) -> psrpc::Result<Point> {
        Ok(p)
    }

    async fn r#type(&self, ctx: RequestContext, p: Point) -> psrpc::Result<Point> {
        assert_eq!(ctx.topics(), ["t"]);
        Ok(Point { x: p.y, y: p.x })
    }
}

#[tokio::test]
async fn snake_case_and_keyword_names() {
    assert_eq!(snake_service_methods::SERVICE, "SnakeService");
    assert_eq!(snake_service_methods::GET_POINT.name(), "GetPoint");
    assert_eq!(snake_service_methods::TYPE.name(), "Type");
    assert_eq!(snake_service_methods::PRIVATE.name(), "XPrivate");

    let bus = LocalBus::new();
    let server = SnakeServiceServer::new(Snake, bus.clone()).await.unwrap();
    server.register_type_topic("t").await.unwrap();
    let client = SnakeServiceClient::new(bus).await.unwrap();
    let p = Point { x: 1, y: 2 };
    assert_eq!(client.get_point(&p, CallOptions::new()).await.unwrap(), p);
    let swapped = client.r#type("t", &p, CallOptions::new()).await.unwrap();
    assert_eq!((swapped.x, swapped.y), (2, 1));
    let err = client.private(&p, CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
}

struct Nothing;

impl EmptyServerImpl for Nothing {}

#[tokio::test]
async fn empty_service() {
    let bus = LocalBus::new();
    let server = EmptyServer::new(Nothing, bus.clone()).await.unwrap();
    let client = EmptyClient::new(bus).await.unwrap();
    assert_eq!(client.client().service(), "Empty");
    server.shutdown().await;
}

struct Ponger;

impl LegacyServerImpl for Ponger {
    async fn ping(&self, ctx: RequestContext, ping: Ping) -> psrpc::Result<Ping> {
        Ok(Ping {
            id: format!("{}:{}", ping.id, ctx.topics()[0]),
        })
    }
}

#[tokio::test]
async fn go_style_options_import() {
    let bus = LocalBus::new();
    let server = LegacyServer::new(Ponger, bus.clone()).await.unwrap();
    server.register_ping_topic("n1").await.unwrap();
    let client = LegacyClient::new(bus).await.unwrap();
    let pong = client
        .ping("n1", &Ping { id: "x".into() }, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(pong.id, "x:n1");
}

/// The routing of a method, without its name.
fn routing(info: MethodInfo) -> psrpc::MethodKind {
    info.kind()
}

#[test]
fn deprecated_spellings_route_like_type() {
    use routing_methods as m;
    assert_eq!(routing(m::MULTI_OLD), routing(m::MULTI_NEW));
    assert_eq!(routing(m::MULTI_OLD), routing(MethodInfo::multi("")));
    assert_eq!(routing(m::AFFINITY_OLD), routing(m::AFFINITY_NEW));
    assert_eq!(routing(m::AFFINITY_OLD), routing(MethodInfo::affinity("")));
    assert_eq!(routing(m::QUEUE_OLD), routing(m::QUEUE_NEW));
    assert_eq!(routing(m::QUEUE_OLD), routing(MethodInfo::unary("")));
    assert_eq!(routing(m::SUB_OLD), routing(m::SUB_NEW));
    assert_eq!(routing(m::SUB_OLD), routing(MethodInfo::subscription("")));
    // When both are set, the deprecated spelling wins.
    assert_eq!(routing(m::BOTH), routing(MethodInfo::multi("")));
}
