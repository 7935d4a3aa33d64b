//! `call`, `sub` and `pub`: one method of a `.proto`, from and to JSON.

use std::process::ExitCode;

use futures::StreamExt;
use prost::Message;
use psrpc::bus::SubscribeOptions;
use psrpc::discovery::Discovery;
use psrpc::{CallOptions, Channel, Client, wire};
use serde_json::{Value, json};

use crate::raw::Raw;
use crate::schema::{self, Method};
use crate::{CallArgs, Fail, MethodArgs, PubArgs, SubArgs};

fn load(target: &MethodArgs) -> Result<Method, Fail> {
    schema::load(&target.proto, &target.includes, &target.method)
}

fn topics(target: &MethodArgs) -> Vec<&str> {
    target.topics.iter().map(String::as_str).collect()
}

fn error_json(method: &Method, err: &psrpc::Error) -> Value {
    let details: Vec<Value> = err
        .details()
        .iter()
        .map(|d| schema::detail_json(&method.pool, d))
        .collect();
    json!({ "code": err.wire_code(), "message": err.message(), "details": details })
}

/// `psrpc call`: a unary or affinity call prints the answer; a multi call one line per server.
pub(crate) async fn call(args: CallArgs) -> Result<ExitCode, Fail> {
    let method = load(&args.target)?;
    if method.info.is_subscription() {
        return Err(format!(
            "{} is a subscription: use `psrpc sub` or `psrpc pub`",
            args.target.method
        ));
    }
    if method.stream {
        return Err(format!(
            "{} is a stream method, which `psrpc call` does not open",
            args.target.method
        ));
    }
    let request = schema::from_json(&method.input, args.request.as_deref().unwrap_or("{}"))?;
    let request = Raw(request.encode_to_vec());
    let bus = crate::bus::connect(&args.target.bus).await?;
    let discovery = if args.early && method.info.is_multi() {
        let d = Discovery::new(bus.clone())
            .await
            .map_err(|err| format!("cannot watch the bus: {err}"))?;
        // Learn who is there before calling: every server answers the query.
        d.query(
            &method.service,
            false,
            std::time::Duration::from_millis(500),
        )
        .await
        .map_err(|err| format!("cannot query the bus: {err}"))?;
        Some(d)
    } else {
        None
    };
    let client = Client::new(method.service.clone(), bus)
        .await
        .map_err(|err| format!("cannot start a client: {err}"))?;
    let mut opts = CallOptions::new().timeout(args.timeout);
    for (k, v) in &args.metadata {
        opts = opts.metadata(k.clone(), v.clone());
    }
    let topics = topics(&args.target);
    if method.info.is_multi() {
        let mut answers = client
            .request_multi::<Raw, Raw>(method.info, &topics, &request, opts)
            .await
            .map_err(|err| format!("{}: {}", err.wire_code(), err.message()))?;
        if let Some(d) = &discovery {
            answers = answers.until(d.all_known(&method.service, method.info.name(), &topics));
        }
        let mut failed = false;
        let mut any = false;
        while let Some(answer) = answers.next().await {
            any = true;
            let line = match answer.result {
                Ok(raw) => match schema::to_json(&method.output, &raw.0) {
                    Ok(v) => json!({ "server_id": answer.server_id, "response": v }),
                    Err(message) => {
                        failed = true;
                        json!({ "server_id": answer.server_id, "error": { "code": "malformed", "message": message } })
                    }
                },
                Err(err) => {
                    failed = true;
                    json!({ "server_id": answer.server_id, "error": error_json(&method, &err) })
                }
            };
            println!("{line}");
        }
        if !any {
            return Err(format!("no server answered within {:?}", args.timeout));
        }
        return Ok(if failed {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    match client
        .request::<Raw, Raw>(method.info, &topics, &request, opts)
        .await
    {
        Ok(raw) => {
            println!("{}", schema::to_json(&method.output, &raw.0)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            let details = error_json(&method, &err)["details"].clone();
            let details = match details.as_array() {
                Some(d) if !d.is_empty() => format!(" details: {details}"),
                _ => String::new(),
            };
            Err(format!("{}: {}{details}", err.wire_code(), err.message()))
        }
    }
}

fn subscription(method: &Method, target: &MethodArgs) -> Result<Channel, Fail> {
    if !method.info.is_subscription() {
        return Err(format!("{} is not a subscription", target.method));
    }
    Ok(Channel::request(
        method.service.clone(),
        method.info.name(),
        target.topics.iter().cloned(),
        method.info.is_queued(),
    ))
}

/// `psrpc sub`: prints each message as a JSON line, until `--count`, `--duration` or Ctrl-C.
pub(crate) async fn sub(args: SubArgs) -> Result<ExitCode, Fail> {
    let method = load(&args.target)?;
    let channel = subscription(&method, &args.target)?;
    let bus = crate::bus::connect(&args.target.bus).await?;
    let mut sub = bus
        .subscribe(&channel, SubscribeOptions::default())
        .await
        .map_err(|err| format!("cannot subscribe: {err}"))?;
    // Tells whoever drives the CLI (a script, a test) that nothing published from now is missed.
    eprintln!("psrpc: subscribed to {}", args.target.method);
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let type_url = wire::type_url_for(method.output.full_name());
    let mut seen = 0;
    while args.count.is_none_or(|n| seen < n) {
        let payload = tokio::select! {
            payload = sub.recv() => payload,
            _ = &mut until => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(payload) = payload else {
            return Err("the bus closed the subscription".into());
        };
        let Ok(msg) = wire::decode_envelope(payload) else {
            eprintln!("psrpc: skipped a message that is not a psrpc envelope");
            continue;
        };
        if msg.type_url != type_url {
            eprintln!("psrpc: skipped a message of type {}", msg.type_url);
            continue;
        }
        match schema::to_json(&method.output, &msg.value) {
            Ok(v) => println!("{v}"),
            Err(message) => eprintln!("psrpc: skipped a message: {message}"),
        }
        seen += 1;
    }
    Ok(ExitCode::SUCCESS)
}

/// `psrpc pub`: publishes one message as a server of the method would.
pub(crate) async fn publish(args: PubArgs) -> Result<ExitCode, Fail> {
    let method = load(&args.target)?;
    let channel = subscription(&method, &args.target)?;
    let msg = schema::from_json(&method.output, &args.message)?;
    let payload = wire::encode_envelope_raw(
        &wire::type_url_for(method.output.full_name()),
        &msg.encode_to_vec(),
    );
    let bus = crate::bus::connect(&args.target.bus).await?;
    psrpc::bus::check_payload_size(payload.len(), bus.max_payload())
        .map_err(|err| err.to_string())?;
    bus.publish(&channel, payload)
        .await
        .map_err(|err| format!("cannot publish: {err}"))?;
    bus.flush()
        .await
        .map_err(|err| format!("cannot flush: {err}"))?;
    Ok(ExitCode::SUCCESS)
}
