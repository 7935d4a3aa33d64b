//! `ls`, `info` and `stats`: what discovery knows of the servers on a bus.

use std::collections::BTreeMap;
use std::process::ExitCode;

use psrpc::discovery::{Discovery, HealthStatus, MethodStats, ServerInfo, StatsSnapshot};
use serde_json::{Value, json};

use crate::{Fail, Introspect, StatsArgs};

type Answers = Vec<(ServerInfo, Option<StatsSnapshot>)>;

/// Asks the servers (of the service, if given) to announce themselves.
async fn gather(args: &Introspect, stats: bool) -> Result<Answers, Fail> {
    let bus = crate::bus::connect(&args.bus).await?;
    let discovery = Discovery::new(bus)
        .await
        .map_err(|err| format!("cannot watch the bus: {err}"))?;
    let service = args.service.as_deref().unwrap_or("");
    let mut answers = discovery
        .query(service, stats, args.wait)
        .await
        .map_err(|err| format!("cannot query the bus: {err}"))?;
    if let Some(id) = &args.server {
        answers.retain(|(info, _)| &info.server_id == id);
        if answers.is_empty() {
            return Err(format!("no server {id} answered within {:?}", args.wait));
        }
    }
    Ok(answers)
}

fn health_name(info: &ServerInfo) -> &'static str {
    match info.health() {
        HealthStatus::Serving => "SERVING",
        HealthStatus::NotServing => "NOT_SERVING",
        HealthStatus::Unknown => "UNKNOWN",
    }
}

fn uptime(info: &ServerInfo) -> std::time::Duration {
    let nanos = psrpc::wire::now_unix_nanos().saturating_sub(info.started_at);
    std::time::Duration::from_secs(u64::try_from(nanos / 1_000_000_000).unwrap_or(0))
}

fn registrations_json(info: &ServerInfo) -> Value {
    info.registrations
        .iter()
        .map(|r| {
            let kind = if r.stream {
                "stream"
            } else if r.multi {
                "multi"
            } else if r.require_claim && !r.queue {
                "affinity"
            } else {
                "unary"
            };
            json!({ "method": r.method, "topics": r.topics, "kind": kind })
        })
        .collect()
}

fn info_json(info: &ServerInfo) -> Value {
    json!({
        "server_id": info.server_id,
        "service": info.service,
        "health": health_name(info),
        "version": info.version,
        "psrpc_version": info.psrpc_version,
        "host": info.host,
        "pid": info.pid,
        "bus": info.bus,
        "started_at_unix_ns": info.started_at,
        "uptime_s": uptime(info).as_secs(),
        "in_flight": info.in_flight,
        "heartbeat_ms": info.heartbeat_ms,
        "registrations": registrations_json(info),
    })
}

fn print_json(value: &Value) {
    println!("{value}");
}

/// `psrpc ls`: one row per server, grouped by service.
pub(crate) async fn ls(args: Introspect) -> Result<ExitCode, Fail> {
    let answers = gather(&args, false).await?;
    if args.json {
        let mut services: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (info, _) in &answers {
            services
                .entry(info.service.clone())
                .or_default()
                .push(json!({
                    "server_id": info.server_id,
                    "health": health_name(info),
                    "version": info.version,
                    "uptime_s": uptime(info).as_secs(),
                    "in_flight": info.in_flight,
                    "host": info.host,
                    "pid": info.pid,
                }));
        }
        let list: Vec<Value> = services
            .into_iter()
            .map(|(service, servers)| json!({ "service": service, "servers": servers }))
            .collect();
        print_json(&Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    if answers.is_empty() {
        println!("no psrpc servers answered (Go servers do not announce themselves)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<22} {:<12} {:<10} {:>8} {:>9}  HOST:PID",
        "SERVICE", "SERVER", "HEALTH", "VERSION", "UPTIME", "IN_FLIGHT"
    );
    for (info, _) in &answers {
        println!(
            "{:<24} {:<22} {:<12} {:<10} {:>7}s {:>9}  {}:{}",
            info.service,
            info.server_id,
            health_name(info),
            if info.version.is_empty() {
                "-"
            } else {
                &info.version
            },
            uptime(info).as_secs(),
            info.in_flight,
            info.host,
            info.pid
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `psrpc info`: everything each server announced.
pub(crate) async fn info(args: Introspect) -> Result<ExitCode, Fail> {
    let answers = gather(&args, false).await?;
    if args.json {
        print_json(&answers.iter().map(|(i, _)| info_json(i)).collect());
        return Ok(ExitCode::SUCCESS);
    }
    if answers.is_empty() {
        println!("no psrpc servers answered");
    }
    for (info, _) in &answers {
        println!("{} ({})", info.server_id, info.service);
        println!("  health:   {}", health_name(info));
        println!(
            "  version:  {} (psrpc {})",
            if info.version.is_empty() {
                "-"
            } else {
                &info.version
            },
            info.psrpc_version
        );
        println!("  process:  {}:{} on {}", info.host, info.pid, info.bus);
        println!("  uptime:   {}s", uptime(info).as_secs());
        println!("  methods:");
        for r in registrations_json(info).as_array().into_iter().flatten() {
            println!(
                "    {} [{}] topics {}",
                r["method"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
                r["topics"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn method_json(m: &MethodStats) -> Value {
    json!({
        "method": m.method, "calls": m.calls, "errors": m.errors, "in_flight": m.in_flight,
        "p50_us": m.p50_us, "p90_us": m.p90_us, "p99_us": m.p99_us,
    })
}

fn stats_json(s: &StatsSnapshot) -> Value {
    json!({
        "received": s.received, "handled": s.handled, "malformed": s.malformed, "shed": s.shed,
        "in_flight": s.in_flight,
        "methods": s.methods.iter().map(method_json).collect::<Vec<_>>(),
    })
}

/// Adds `s` into `total` (percentiles: the worst server's).
fn add(total: &mut StatsSnapshot, s: &StatsSnapshot) {
    total.received += s.received;
    total.handled += s.handled;
    total.malformed += s.malformed;
    total.shed += s.shed;
    total.in_flight += s.in_flight;
    for m in &s.methods {
        match total.methods.iter_mut().find(|t| t.method == m.method) {
            Some(t) => {
                t.calls += m.calls;
                t.errors += m.errors;
                t.in_flight += m.in_flight;
                t.p50_us = t.p50_us.max(m.p50_us);
                t.p90_us = t.p90_us.max(m.p90_us);
                t.p99_us = t.p99_us.max(m.p99_us);
            }
            None => total.methods.push(m.clone()),
        }
    }
}

/// `psrpc stats`: counters per server, or summed per service.
pub(crate) async fn stats(args: StatsArgs) -> Result<ExitCode, Fail> {
    let answers = gather(&args.inner, true).await?;
    let rows: Vec<(String, String, StatsSnapshot)> = if args.sum {
        let mut sums: BTreeMap<String, (usize, StatsSnapshot)> = BTreeMap::new();
        for (info, stats) in &answers {
            let entry = sums.entry(info.service.clone()).or_default();
            entry.0 += 1;
            if let Some(s) = stats {
                add(&mut entry.1, s);
            }
        }
        sums.into_iter()
            .map(|(service, (n, s))| (service, format!("{n} servers"), s))
            .collect()
    } else {
        answers
            .iter()
            .map(|(i, s)| {
                (
                    i.service.clone(),
                    i.server_id.clone(),
                    s.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    if args.inner.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(service, server, s)| {
                let mut v = stats_json(s);
                v["service"] = service.clone().into();
                if args.sum {
                    v["servers"] = answers
                        .iter()
                        .filter(|(i, _)| &i.service == service)
                        .count()
                        .into();
                } else {
                    v["server_id"] = server.clone().into();
                }
                v
            })
            .collect();
        print_json(&Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no psrpc servers answered");
    }
    for (service, server, s) in &rows {
        println!(
            "{service} {server}: received {} handled {} in flight {} shed {} malformed {}",
            s.received, s.handled, s.in_flight, s.shed, s.malformed
        );
        for m in &s.methods {
            println!(
                "  {:<20} calls {:>8} errors {:>6} in flight {:>4}  p50 {}µs p90 {}µs p99 {}µs",
                m.method, m.calls, m.errors, m.in_flight, m.p50_us, m.p90_us, m.p99_us
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
