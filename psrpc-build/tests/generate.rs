//! The generator on small protos: imports, validation errors, output shape.

use std::path::Path;

use psrpc_build::Error;

/// Writes `files` into a temporary include folder, generates into another, and returns the
/// generated files by name.
fn generate(files: &[(&str, &str)]) -> Result<Vec<(String, String)>, Error> {
    generate_with(files, |b| b)
}

fn generate_with(
    files: &[(&str, &str)],
    configure: impl FnOnce(psrpc_build::Builder) -> psrpc_build::Builder,
) -> Result<Vec<(String, String)>, Error> {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = src.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let protos: Vec<&str> = files
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !name.starts_with("psrpc/"))
        .collect();
    configure(
        psrpc_build::configure()
            .out_dir(out.path())
            .emit_rerun_if_changed(false),
    )
    .compile_protos(&protos, &[src.path()])?;
    Ok(read_dir(out.path()))
}

fn read_dir(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn service(options: &str) -> String {
    format!(
        r#"syntax = "proto3";
package demo;
import "psrpc/options.proto";
message Req {{ string id = 1; }}
service Svc {{
  rpc Call(Req) returns (Req) {{ {options} }}
}}
"#
    )
}

/// The generation error for a service with one method `Call` with these options.
fn method_error(options: &str) -> String {
    let err = generate(&[("demo.proto", &service(options))]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMethod { file, service, method, .. }
            if file == "demo.proto" && service == "Svc" && method == "Call"),
        "{err:?}"
    );
    err.to_string()
}

#[test]
fn both_import_spellings_are_served_from_the_embedded_file() {
    for import in ["psrpc/options.proto", "options.proto"] {
        let proto = format!(
            r#"syntax = "proto3";
package demo;
import "{import}";
message Req {{ string id = 1; }}
service Svc {{
  rpc All(Req) returns (Req) {{ option (psrpc.options).type = MULTI; }}
}}
"#
        );
        let files = generate(&[("demo.proto", &proto)]).unwrap();
        // Only the user's package is written: the options file is read, not generated.
        assert_eq!(files.len(), 1, "{import}");
        assert_eq!(files[0].0, "demo.rs");
        assert!(
            files[0].1.contains(r#"MethodInfo::multi("All")"#),
            "{import}"
        );
        assert!(files[0].1.contains("impl ::psrpc::prost::Name for Req"));
        assert!(
            files[0]
                .1
                .contains(r#""type.googleapis.com/demo.Req".into()"#)
        );
    }
}

#[test]
fn an_options_file_on_the_include_path_wins() {
    let files = generate(&[
        ("psrpc/options.proto", psrpc_build::OPTIONS_PROTO),
        (
            "demo.proto",
            &service("option (psrpc.options).type = AFFINITY;"),
        ),
    ])
    .unwrap();
    assert!(files[0].1.contains(r#"MethodInfo::affinity("Call")"#));
    assert!(
        files[0]
            .1
            .contains("fn call_affinity(&self, req: &Req) -> f32")
    );
}

#[test]
fn protos_without_psrpc_options_use_the_defaults() {
    let proto = r#"syntax = "proto3";
package plain;
message Req { string id = 1; }
service Plain { rpc Get(Req) returns (Req); }
"#;
    let files = generate(&[("plain.proto", proto)]).unwrap();
    assert!(files[0].1.contains(r#"MethodInfo::unary("Get")"#));
}

#[test]
fn topic_params_without_topics() {
    let msg = method_error(r#"option (psrpc.options).topic_params.names = "region";"#);
    assert!(
        msg.starts_with("demo.proto: service Svc, method Call:"),
        "{msg}"
    );
    assert!(msg.contains("`topics`"), "{msg}");
}

#[test]
fn multi_stream() {
    let msg =
        method_error("option (psrpc.options).stream = true; option (psrpc.options).type = MULTI;");
    assert!(msg.contains("MULTI"), "{msg}");
}

#[test]
fn affinity_streams_are_not_supported_yet() {
    let msg = method_error(
        "option (psrpc.options).stream = true; option (psrpc.options).type = AFFINITY;",
    );
    assert!(msg.contains("not supported"), "{msg}");
}

#[test]
fn streams_open_typed_streams() {
    let files = generate(&[(
        "demo.proto",
        &service("option (psrpc.options).stream = true;"),
    )])
    .unwrap();
    let code = &files[0].1;
    assert!(
        code.contains("::psrpc::Result<::psrpc::stream::Stream<Req, Req>>"),
        "{code}"
    );
    assert!(code.contains(".register_stream("), "{code}");
}

#[test]
fn subscription_with_streaming_types() {
    let proto = r#"syntax = "proto3";
package demo;
import "psrpc/options.proto";
message Req { string id = 1; }
service Svc {
  rpc Call(Req) returns (stream Req) { option (psrpc.options).subscription = true; }
}
"#;
    let err = generate(&[("demo.proto", proto)]).unwrap_err();
    assert!(matches!(&err, Error::InvalidMethod { method, .. } if method == "Call"));
    assert!(err.to_string().contains("streaming"), "{err}");
}

#[test]
fn affinity_subscription() {
    let msg = method_error(
        "option (psrpc.options).subscription = true; option (psrpc.options).type = AFFINITY;",
    );
    assert!(msg.contains("AFFINITY"), "{msg}");
}

#[test]
fn single_server_affinity() {
    let msg = method_error(
        "option (psrpc.options) = { type: AFFINITY topics: true topic_params: { single_server: true } };",
    );
    assert!(msg.contains("single_server"), "{msg}");
}

#[test]
fn topic_names_that_collide() {
    let msg = method_error(
        r#"option (psrpc.options) = { topics: true topic_params: { names: ["node_id", "nodeId"] } };"#,
    );
    assert!(msg.contains("collide"), "{msg}");
}

#[test]
fn method_names_that_collide_after_case_conversion() {
    let proto = r#"syntax = "proto3";
package demo;
message Req { string id = 1; }
service Svc {
  rpc GetRoom(Req) returns (Req);
  rpc get_room(Req) returns (Req);
}
"#;
    let err = generate(&[("demo.proto", proto)]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidService { file, service, .. } if file == "demo.proto" && service == "Svc"),
        "{err:?}"
    );
    assert!(err.to_string().contains("collide"), "{err}");
}

#[test]
fn method_names_that_collide_with_generated_ones() {
    let proto = r#"syntax = "proto3";
package demo;
message Req { string id = 1; }
service Svc { rpc New(Req) returns (Req); }
"#;
    let err = generate(&[("demo.proto", proto)]).unwrap_err();
    assert!(err.to_string().contains("`new`"), "{err}");
}

#[test]
fn service_names_that_collide_with_messages() {
    let proto = r#"syntax = "proto3";
package demo;
message SvcClient { string id = 1; }
service Svc { rpc Get(SvcClient) returns (SvcClient); }
"#;
    let err = generate(&[("demo.proto", proto)]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidService { service, .. } if service == "Svc"),
        "{err:?}"
    );
    assert!(err.to_string().contains("SvcClient"), "{err}");
}

#[test]
fn topic_group_members_must_agree() {
    let proto = r#"syntax = "proto3";
package demo;
import "psrpc/options.proto";
message Req { string id = 1; }
service Svc {
  rpc A(Req) returns (Req) {
    option (psrpc.options) = { topics: true topic_params: { group: "g" names: ["region"] } };
  }
  rpc B(Req) returns (Req) {
    option (psrpc.options) = { topics: true topic_params: { group: "g" names: ["node"] } };
  }
}
"#;
    let err = generate(&[("demo.proto", proto)]).unwrap_err();
    assert!(err.to_string().contains("topic group"), "{err}");
}

#[test]
fn proto_errors_name_the_file() {
    let err = generate(&[("broken.proto", "syntax = \"proto3\"; message {")]).unwrap_err();
    assert!(matches!(err, Error::Compile(_)), "{err:?}");
    assert!(err.to_string().contains("broken.proto"), "{err}");
}

#[test]
fn extern_types_get_no_named_message_impl() {
    let shared = r#"syntax = "proto3";
package shared;
message Thing { string id = 1; }
"#;
    let user = r#"syntax = "proto3";
package user;
import "shared.proto";
message Own { shared.Thing thing = 1; }
service Things { rpc Get(shared.Thing) returns (Own); }
"#;
    let files = generate_with(&[("shared.proto", shared), ("user.proto", user)], |b| {
        b.extern_path(".shared", "::shared_crate")
    })
    .unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["user.rs"]);
    let code = &files[0].1;
    assert!(code.contains("impl ::psrpc::prost::Name for Own"));
    assert!(!code.contains("Name for ::shared_crate"));
    assert!(
        code.contains("request::<::shared_crate::Thing, Own>"),
        "{code}"
    );
}

#[test]
fn client_or_server_only() {
    let proto = service("");
    let files = generate_with(&[("demo.proto", &proto)], |b| b.build_server(false)).unwrap();
    assert!(files[0].1.contains("pub struct SvcClient"));
    assert!(!files[0].1.contains("SvcServer"));
    let files = generate_with(&[("demo.proto", &proto)], |b| b.build_client(false)).unwrap();
    assert!(!files[0].1.contains("SvcClient"));
    assert!(files[0].1.contains("pub trait SvcServerImpl"));
}

#[test]
fn comments_become_docs_without_doctests() {
    let proto = r#"syntax = "proto3";
package demo;
message Req { string id = 1; }
// Rooms.
service Svc {
  // Gets one.
  //
  //     indented text is not a doctest
  // ```
  // fenced();
  // ```
  rpc Get(Req) returns (Req);
}
"#;
    let files = generate(&[("demo.proto", proto)]).unwrap();
    let code = &files[0].1;
    assert!(code.contains("/// Gets one."), "{code}");
    assert!(
        code.contains("/// indented text is not a doctest"),
        "{code}"
    );
    assert!(code.contains("/// ```text"), "{code}");
}

/// The Rust option types of the `psrpc` crate agree with the embedded `.proto`.
#[test]
fn runtime_option_types_match_the_proto() {
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};
    use psrpc::options::{DeprecatedRouting, Options, Routing, TopicParamOptions};

    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("psrpc")).unwrap();
    std::fs::write(
        src.path().join("psrpc/options.proto"),
        psrpc_build::OPTIONS_PROTO,
    )
    .unwrap();
    let fds = protox::compile(["psrpc/options.proto"], [src.path()]).unwrap();
    let pool = DescriptorPool::from_file_descriptor_set(fds).unwrap();
    let desc = pool.get_message_by_name("psrpc.Options").unwrap();
    let ext = pool.get_extension_by_name("psrpc.options").unwrap();
    assert_eq!(ext.number(), psrpc::options::EXTENSION_NUMBER);

    let opts = Options {
        subscription: true,
        topics: true,
        topic_params: Some(TopicParamOptions {
            group: "g".into(),
            names: vec!["a".into(), "b".into()],
            typed: true,
            single_server: true,
        }),
        stream: true,
        routing: Some(DeprecatedRouting::AffinityFunc(true)),
        r#type: Routing::Multi as i32,
    };
    let dynamic = DynamicMessage::decode(desc, opts.encode_to_vec().as_slice()).unwrap();
    let field = |name: &str| dynamic.get_field_by_name(name).unwrap().into_owned();
    assert_eq!(field("subscription"), Value::Bool(true));
    assert_eq!(field("topics"), Value::Bool(true));
    assert_eq!(field("stream"), Value::Bool(true));
    assert_eq!(field("affinity_func"), Value::Bool(true));
    assert_eq!(field("type"), Value::EnumNumber(2));
    let params = field("topic_params");
    let params = params.as_message().unwrap();
    assert_eq!(
        params
            .get_field_by_name("names")
            .unwrap()
            .as_list()
            .unwrap(),
        [Value::String("a".into()), Value::String("b".into())]
    );
    assert_eq!(
        *params.get_field_by_name("group").unwrap(),
        Value::String("g".into())
    );
    assert_eq!(
        *params.get_field_by_name("typed").unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        *params.get_field_by_name("single_server").unwrap(),
        Value::Bool(true)
    );
    // And back: the dynamic encoding decodes into the same Rust value.
    assert_eq!(
        Options::decode(dynamic.encode_to_vec().as_slice()).unwrap(),
        opts
    );
}

fn durable_service(options: &str) -> String {
    format!(
        r#"syntax = "proto3";
package d;
import "psrpc/options.proto";
import "psrpc/durable.proto";
message M {{}}
service S {{
  rpc Work(M) returns (M) {{
    option (psrpc.durable) = {{}};
    {options}
  }}
}}
"#
    )
}

#[test]
fn durable_methods_must_be_plain_unary() {
    for options in [
        "option (psrpc.options).type = MULTI;",
        "option (psrpc.options).type = AFFINITY;",
        "option (psrpc.options).topics = true;",
        "option (psrpc.options).subscription = true;",
    ] {
        let err = generate(&[("d.proto", &durable_service(options))]).unwrap_err();
        assert!(
            err.to_string()
                .contains("durable method must be a plain unary"),
            "{options}: {err}"
        );
    }
    let out = generate(&[("d.proto", &durable_service(""))]).unwrap();
    let code = &out[0].1;
    assert!(code.contains("pub struct SDurableClient"), "{code}");
    assert!(code.contains("pub trait SDurableWorker"), "{code}");
    // The option file itself is never generated.
    assert!(!code.contains("DurableOptions"), "{code}");
}

#[test]
fn subscriptions_name_messages_by_their_proto_name() {
    let proto = r#"syntax = "proto3";
package demo;
import "google/protobuf/empty.proto";
import "google/protobuf/struct.proto";
import "psrpc/options.proto";
service Svc {
  rpc Changes(google.protobuf.Empty) returns (google.protobuf.Struct) {
    option (psrpc.options).subscription = true;
  }
}
"#;
    let files = generate(&[("demo.proto", proto)]).unwrap();
    let code = &files[0].1;
    // `prost_types::Struct` has no `prost::Name`: the name comes from the proto.
    assert!(
        code.contains("subscribe_named::<")
            && code.contains("(svc_methods::CHANGES, &[], \"google.protobuf.Struct\")"),
        "{code}"
    );
    assert!(code.contains(".publish_named("), "{code}");
}
