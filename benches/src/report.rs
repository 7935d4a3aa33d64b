//! Measurements, their JSON lines and the markdown summary.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::stats::Latencies;

/// What a measurement measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Sequential calls: percentiles of the round trip.
    Latency,
    /// Concurrent work: operations (or messages) per second.
    Throughput,
    /// Memory: bytes.
    Memory,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Throughput => "throughput",
            Kind::Memory => "memory",
        }
    }
}

/// One result line.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// `local`, `nats` or `redis`.
    pub bus: &'static str,
    /// What ran, e.g. `rpc_direct` or `raw_request_reply`.
    pub case: String,
    /// Servers (responders, subscribers) taking part.
    pub servers: usize,
    /// Payload size in bytes.
    pub payload: usize,
    /// Latency, throughput or memory.
    pub kind: Kind,
    /// Calls timed, or operations counted.
    pub samples: u64,
    /// Latency percentiles, for [`Kind::Latency`].
    pub latency: Option<Latencies>,
    /// Operations per second, for [`Kind::Throughput`].
    pub ops_per_sec: Option<f64>,
    /// Bytes, for [`Kind::Memory`].
    pub bytes: Option<f64>,
    /// The raw case this is compared with, and the ratio (latency: p50 / raw p50; throughput:
    /// ops / raw ops).
    pub ratio_to_raw: Option<(String, f64)>,
    /// CPU time of this process, and of the brokers this run started, per operation (µs).
    pub cpu_us_per_op: Option<(f64, Option<f64>)>,
    /// Calls that failed (timed out, or an error).
    pub errors: u64,
    /// Anything else worth keeping (drops, deliveries per second, …).
    pub extra: Map<String, Value>,
}

impl Measurement {
    /// A measurement with no figures yet.
    pub fn new(bus: &'static str, case: impl Into<String>, kind: Kind) -> Self {
        Measurement {
            bus,
            case: case.into(),
            servers: 1,
            payload: 0,
            kind,
            samples: 0,
            latency: None,
            ops_per_sec: None,
            bytes: None,
            ratio_to_raw: None,
            cpu_us_per_op: None,
            errors: 0,
            extra: Map::new(),
        }
    }

    /// Sets the number of servers.
    pub fn servers(mut self, servers: usize) -> Self {
        self.servers = servers;
        self
    }

    /// Sets the payload size.
    pub fn payload(mut self, payload: usize) -> Self {
        self.payload = payload;
        self
    }

    /// Adds an extra field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The key raw baselines are looked up by: bus, kind, case, servers, payload.
    pub fn key(&self) -> String {
        key(self.bus, self.kind, &self.case, self.servers, self.payload)
    }

    /// The figure a ratio compares: p50 for latency, ops/s for throughput.
    fn headline(&self) -> Option<f64> {
        match self.kind {
            Kind::Latency => self.latency.as_ref().map(|l| l.p50_us),
            Kind::Throughput => self.ops_per_sec,
            Kind::Memory => self.bytes,
        }
    }

    /// The JSON line.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "bus": self.bus,
            "case": self.case,
            "kind": self.kind.as_str(),
            "servers": self.servers,
            "payload": self.payload,
            "samples": self.samples,
            "errors": self.errors,
        });
        let map = out.as_object_mut().expect("an object");
        if let Some(l) = &self.latency {
            map.insert("p50_us".into(), round(l.p50_us).into());
            map.insert("p90_us".into(), round(l.p90_us).into());
            map.insert("p99_us".into(), round(l.p99_us).into());
            map.insert("mean_us".into(), round(l.mean_us).into());
        }
        if let Some(ops) = self.ops_per_sec {
            map.insert("ops_per_sec".into(), ops.round().into());
        }
        if let Some((ours, brokers)) = self.cpu_us_per_op {
            map.insert("cpu_us_per_op".into(), round(ours).into());
            if let Some(b) = brokers {
                map.insert("broker_cpu_us_per_op".into(), round(b).into());
            }
        }
        if let Some(bytes) = self.bytes {
            map.insert("bytes".into(), bytes.round().into());
        }
        match &self.ratio_to_raw {
            Some((baseline, ratio)) => {
                map.insert("ratio_to_raw".into(), round(*ratio).into());
                map.insert("baseline".into(), baseline.clone().into());
            }
            None => {
                map.insert("ratio_to_raw".into(), Value::Null);
            }
        }
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        // The process's peak so far, so the case that raised it can be found.
        map.insert("vm_hwm".into(), crate::mem::read().peak.into());
        out
    }
}

/// The lookup key of a measurement.
pub fn key(bus: &str, kind: Kind, case: &str, servers: usize, payload: usize) -> String {
    format!("{bus}/{}/{case}/{servers}/{payload}", kind.as_str())
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Collects measurements, prints each as a JSON line, and renders the summary.
#[derive(Default)]
pub struct Report {
    rows: Vec<Measurement>,
    by_key: HashMap<String, usize>,
}

impl Report {
    /// Records a measurement compared with the raw one at `baseline` (a [`key`]) if that was
    /// measured in this run, and prints its JSON line.
    pub fn add(&mut self, mut m: Measurement, baseline: Option<String>) {
        if let Some(base_key) = baseline
            && let Some(base) = self.by_key.get(&base_key).map(|&i| &self.rows[i])
            && let (Some(ours), Some(theirs)) = (m.headline(), base.headline())
            && theirs > 0.0
        {
            let label = format!("{}@{}", base.case, base.servers);
            m.ratio_to_raw = Some((label, ours / theirs));
        }
        println!("{}", m.to_json());
        self.by_key.insert(m.key(), self.rows.len());
        self.rows.push(m);
    }

    /// The markdown tables: latency and throughput of one case side by side, memory apart.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| bus | case | srv | payload | p50 µs | p90 µs | p99 µs | p50 × raw | ops/s | ops × raw | CPU µs/op | errors |\n",
        );
        out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        // One row per case, in the order first measured.
        let mut order: Vec<String> = Vec::new();
        let mut rows: HashMap<String, (Option<&Measurement>, Option<&Measurement>)> =
            HashMap::new();
        for m in self.rows.iter().filter(|m| m.kind != Kind::Memory) {
            let id = format!("{}/{}/{}/{}", m.bus, m.case, m.servers, m.payload);
            let row = rows.entry(id.clone()).or_insert_with(|| {
                order.push(id);
                (None, None)
            });
            match m.kind {
                Kind::Latency => row.0 = Some(m),
                _ => row.1 = Some(m),
            }
        }
        for id in &order {
            let (lat, tput) = rows[id];
            let any = lat.or(tput).expect("a row has a measurement");
            let (p50, p90, p99) = match lat.and_then(|m| m.latency.as_ref()) {
                Some(l) => (fmt_us(l.p50_us), fmt_us(l.p90_us), fmt_us(l.p99_us)),
                None => Default::default(),
            };
            let ratio = |m: Option<&Measurement>| {
                m.and_then(|m| m.ratio_to_raw.as_ref())
                    .map(|(_, r)| format!("{r:.2}"))
                    .unwrap_or_default()
            };
            let ops = tput
                .and_then(|m| m.ops_per_sec)
                .map(fmt_count)
                .unwrap_or_default();
            let mut errors =
                (lat.map_or(0, |m| m.errors) + tput.map_or(0, |m| m.errors)).to_string();
            // Floods count what never arrived rather than failed calls.
            if let Some(lost) = tput
                .and_then(|m| m.extra.get("lost"))
                .and_then(Value::as_u64)
            {
                let _ = write!(errors, " ({lost} lost)");
            }
            // Ours, plus the broker's when this run started it.
            let cpu = match tput.and_then(|m| m.cpu_us_per_op) {
                Some((ours, Some(broker))) => format!("{ours:.1} + {broker:.1}"),
                Some((ours, None)) => format!("{ours:.1}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {p50} | {p90} | {p99} | {} | {ops} | {} | {cpu} | {errors} |",
                any.bus,
                any.case,
                any.servers,
                fmt_size(any.payload),
                ratio(lat),
                ratio(tput),
            );
        }
        let memory: Vec<&Measurement> = self
            .rows
            .iter()
            .filter(|m| m.kind == Kind::Memory)
            .collect();
        if !memory.is_empty() {
            out.push_str("\n| bus | memory | bytes |\n|---|---|--:|\n");
            for m in memory {
                let bytes = m.bytes.map(fmt_bytes).unwrap_or_default();
                let _ = writeln!(out, "| {} | {} | {bytes} |", m.bus, m.case);
            }
        }
        out
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

fn fmt_count(x: f64) -> String {
    // Thousands separators keep a column of throughputs readable.
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_size(bytes: usize) -> String {
    match bytes {
        0 => "-".to_owned(),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} B"),
    }
}

fn fmt_bytes(bytes: f64) -> String {
    if bytes >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else if bytes >= 10.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_uses_the_baseline_of_the_same_run() {
        let mut report = Report::default();
        let mut raw = Measurement::new("nats", "raw", Kind::Throughput);
        raw.ops_per_sec = Some(100.0);
        let raw_key = raw.key();
        report.add(raw, None);
        let mut ours = Measurement::new("nats", "rpc", Kind::Throughput);
        ours.ops_per_sec = Some(80.0);
        report.add(ours, Some(raw_key));
        let (label, ratio) = report.rows[1].ratio_to_raw.clone().unwrap();
        assert_eq!(label, "raw@1");
        assert!((ratio - 0.8).abs() < 1e-9);
        assert!(
            report.markdown().contains("| 0.80 |"),
            "{}",
            report.markdown()
        );
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_count(1234567.4), "1,234,567");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_size(8192), "8 KiB");
        assert_eq!(fmt_size(16), "16 B");
    }
}
