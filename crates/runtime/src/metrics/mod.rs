//! A socket's counters ([`Socket::metrics`](crate::Socket::metrics)) where services look
//! for them: through the [`metrics`](https://docs.rs/metrics) facade, to the exporter a
//! service already runs (feature `metrics`); as Prometheus text or JSON
//! ([`to_prometheus`], [`to_json`]); and from an HTTP endpoint of their own ([`serve()`],
//! feature `serve`, on by default) for Prometheus, `curl` or `homa metrics`.
//!
//! ```
//! let m = homa::Metrics::default();
//! let text = homa::metrics::to_prometheus(&m, &[("socket", "4000")]);
//! assert!(text.contains("homa_packets_sent_total{socket=\"4000\",type=\"data\"} 0"));
//! let json = homa::metrics::to_json(&m);
//! assert_eq!(json["packets_sent"]["data"], 0);
//! ```
//!
//! # The series
//! Every series is labelled `socket="<port>"` (the socket's local port; [`to_prometheus`]
//! and `record` take labels of your own instead).
//!
//! | name | kind | its own label |
//! |---|---|---|
//! | `homa_packets_sent_total`, `homa_bytes_sent_total`, `homa_packets_received_total`, `homa_bytes_received_total` | counter | `type`: `data`, `grant`, `resend`, `rpc_unknown`, `busy`, `cutoffs`, `freeze`, `need_ack`, `ack` |
//! | `homa_drops_total` | counter | `reason`: `malformed`, `no_socket`, `unknown_rpc`, `already_executed`, `inconsistent`, `no_buffer`, `excess`, `not_server` |
//! | `homa_malformed_total` | counter | `reason`: `truncated`, `unknown_type`, `too_many_acks`, `zero_message_length`, `message_too_long`, `segment_past_end` |
//! | `homa_retransmitted_packets_total`, `homa_timeouts_total`, `homa_requests_delivered_total`, `homa_responses_delivered_total`, `homa_restarts_total`, `homa_requests_lost_total`, `homa_one_way_delivered_total`, `homa_one_way_acked_total`, `homa_cutoff_updates_total` | counter | |
//! | `homa_client_rpcs`, `homa_server_rpcs`, `homa_peers`, `homa_client_histories`, `homa_incoming_held_bytes`, `homa_outgoing_held_bytes`, `homa_outgoing_responses_held_bytes`, `homa_total_incoming_bytes` | gauge | |
//!
//! What each counts is in [`Metrics`]'s field docs (and the `# HELP` lines).
//!
//! # Through the `metrics` facade (feature `metrics`)
//! With the feature on, every socket the process opens, blocking or tokio, client or
//! server (the ones `homa-tonic` opens too), is published to the recorder installed for
//! the facade: by a background thread every `PUBLISH_INTERVAL` (one second; see
//! `set_publish_interval`), and whenever you call `publish`. Install your exporter
//! (`metrics-exporter-prometheus`, or any other recorder) and Homa's series appear beside
//! your own, with no second port. `crates/tonic/examples/metrics_server.rs` shows a tonic
//! service doing so.
//!
//! The facade is `metrics` 0.24: your exporter must be built on the same major version
//! (`metrics-exporter-prometheus` 0.18 and `metrics-util` 0.20, which the examples and
//! tests here use, are). Each major
//! version of `metrics` has a global recorder of its own, so an exporter on another one
//! sees none of Homa's series, and nothing warns of it.
//!
//! The packet path does not pay for it. The engine keeps its counters as plain integers,
//! with or without the feature; a facade call per packet (a registry look-up or an atomic
//! add each time) would cost every packet for numbers a scraper reads every few seconds.
//! Instead each socket's counters are copied under its lock once per interval and given
//! to the recorder as absolute values (`Counter::absolute`, `Gauge::set`). The price is
//! staleness: a scrape sees values up to one interval old, unless you call `publish`
//! right before your exporter renders.
//!
//! A series belongs to a port. Sockets of one process that share a port (IPv4 and IPv6,
//! say) are summed into its series; the sockets closed on a port keep their counts in
//! it, so its counters never go back when a new socket opens on the same port, and a
//! socket that lived between two publications is counted all the same. Once every
//! socket on a port has closed, its counters stay at their last values and its gauges
//! read 0. A process that opens sockets on ever new ports (a client per connection, on
//! ephemeral ports) leaves one set of series per port in the recorder: let your exporter
//! forget idle series (`metrics-exporter-prometheus`: `PrometheusBuilder::idle_timeout`).
//!
#![cfg_attr(feature = "metrics", doc = "```")]
#![cfg_attr(not(feature = "metrics"), doc = "```ignore")]
//! use metrics_util::debugging::DebuggingRecorder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = DebuggingRecorder::new(); // a service installs its exporter instead
//! let snapshotter = recorder.snapshotter();
//! let sock = homa::Socket::bind("127.0.0.1:0".parse()?)?;
//! metrics::with_local_recorder(&recorder, homa::metrics::publish);
//! let names: Vec<String> = snapshotter.snapshot().into_vec().into_iter()
//!     .map(|(key, ..)| key.key().name().to_string())
//!     .collect();
//! assert!(names.iter().any(|n| n == "homa_packets_sent_total"));
//! # Ok(())
//! # }
//! ```

use homa_core::{DropReason, Metrics};
use homa_wire::{PacketType, ParseError};
use serde_json::{json, Map, Value};
use std::fmt::Write;

#[cfg(feature = "metrics")]
mod facade;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "metrics")]
pub use facade::{publish, record, set_publish_interval, PUBLISH_INTERVAL};
#[cfg(feature = "metrics")]
pub(crate) use facade::{register, retire};
#[cfg(feature = "serve")]
pub use serve::{
    serve, MetricsServer, Source, MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT,
};

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A metric: its full name, kind and help text.
#[derive(Debug, Clone, Copy)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

/// Lower-case packet type names, the `type` label, indexed by `code - 0x10`.
const TYPE_LABELS: [&str; 9] = [
    "data",
    "grant",
    "resend",
    "rpc_unknown",
    "busy",
    "cutoffs",
    "freeze",
    "need_ack",
    "ack",
];

/// Every series of a snapshot, in output order: `f(family, label, value)`, where `label`
/// is the series' own label (`type`, `reason`) if it has one. The Prometheus text and the
/// `metrics` facade both come from here, so they name the same things the same way.
fn each_series(m: &Metrics, mut f: impl FnMut(Family, Option<(&'static str, &'static str)>, u64)) {
    let per_type: [(Family, &[u64; 9]); 4] = [
        (
            counter("homa_packets_sent_total", "Homa packets sent, by type."),
            &m.packets_sent,
        ),
        (
            counter(
                "homa_bytes_sent_total",
                "Homa bytes (headers and payload) sent, by packet type.",
            ),
            &m.bytes_sent,
        ),
        (
            counter(
                "homa_packets_received_total",
                "Homa packets received and parsed, by type.",
            ),
            &m.packets_received,
        ),
        (
            counter(
                "homa_bytes_received_total",
                "Homa bytes received, by packet type.",
            ),
            &m.bytes_received,
        ),
    ];
    for (family, values) in per_type {
        for t in PacketType::ALL {
            let i = usize::from(t.code() - 0x10);
            f(family, Some(("type", TYPE_LABELS[i])), values[i]);
        }
    }
    let drops = counter(
        "homa_drops_total",
        "Received packets dropped without effect, by reason.",
    );
    for r in DropReason::ALL {
        f(drops, Some(("reason", r.name())), m.dropped(r));
    }
    let malformed = counter(
        "homa_malformed_total",
        "Received packets that did not parse, by parse error (their sum is the drops for \
         reason malformed).",
    );
    for (i, reason) in ParseError::REASONS.iter().enumerate() {
        f(malformed, Some(("reason", reason)), m.malformed[i]);
    }
    let scalars: [(Family, u64); 17] = [
        (
            counter(
                "homa_retransmitted_packets_total",
                "DATA packets retransmitted in answer to RESENDs.",
            ),
            m.retransmitted_packets,
        ),
        (
            counter(
                "homa_timeouts_total",
                "RPCs that failed or were discarded because the peer went silent.",
            ),
            m.timeouts,
        ),
        (
            counter(
                "homa_requests_delivered_total",
                "Requests delivered to server sockets.",
            ),
            m.requests_delivered,
        ),
        (
            counter(
                "homa_responses_delivered_total",
                "Responses delivered to clients.",
            ),
            m.responses_delivered,
        ),
        (
            counter(
                "homa_restarts_total",
                "Client RPCs restarted after RPC_UNKNOWN.",
            ),
            m.restarts,
        ),
        (
            counter(
                "homa_requests_lost_total",
                "Client RPCs failed because their request never got to the server whole \
                 (restarted again and again: a path dropping long packets?).",
            ),
            m.requests_lost,
        ),
        (
            counter(
                "homa_one_way_delivered_total",
                "One-way messages delivered to the sockets that took them.",
            ),
            m.one_way_delivered,
        ),
        (
            counter(
                "homa_one_way_acked_total",
                "Our one-way messages their receivers acknowledged.",
            ),
            m.one_way_acked,
        ),
        (
            counter(
                "homa_cutoff_updates_total",
                "Times new unscheduled priority cutoffs were learned from the traffic.",
            ),
            m.cutoff_updates,
        ),
        (
            gauge("homa_client_rpcs", "Live client RPCs."),
            m.client_rpcs,
        ),
        (
            gauge("homa_server_rpcs", "Live server RPCs."),
            m.server_rpcs,
        ),
        (
            gauge(
                "homa_peers",
                "Peers known (hosts with RPCs, or heard from lately).",
            ),
            m.peers,
        ),
        (
            gauge(
                "homa_client_histories",
                "Client sockets whose at-most-once history is kept.",
            ),
            m.client_histories,
        ),
        (
            gauge(
                "homa_incoming_held_bytes",
                "Bytes of incoming message data held.",
            ),
            m.incoming_held,
        ),
        (
            gauge(
                "homa_outgoing_held_bytes",
                "Bytes of outgoing message data held.",
            ),
            m.outgoing_held,
        ),
        (
            gauge(
                "homa_outgoing_responses_held_bytes",
                "Bytes of outgoing responses held (part of homa_outgoing_held_bytes).",
            ),
            m.outgoing_responses_held,
        ),
        (
            gauge(
                "homa_total_incoming_bytes",
                "Granted but not yet received bytes.",
            ),
            m.total_incoming,
        ),
    ];
    for (family, value) in scalars {
        f(family, None, value);
    }
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The counters in the Prometheus text exposition format (version 0.0.4): every metric
/// named `homa_...`, with `# HELP` and `# TYPE` lines, per-packet-type series labelled
/// `type="data"`, `type="grant"`..., drops labelled `reason="malformed"`..., and `labels`
/// added to every series (for example `[("socket", "4000")]`).
pub fn to_prometheus(m: &Metrics, labels: &[(&str, &str)]) -> String {
    let base: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    let mut out = String::new();
    let mut last = "";
    each_series(m, |family, label, value| {
        if family.name != last {
            last = family.name;
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        }
        let mut parts = base.clone();
        if let Some((k, v)) = label {
            parts.push(format!("{k}=\"{}\"", escape(v)));
        }
        let _ = match parts.is_empty() {
            true => writeln!(out, "{} {value}", family.name),
            false => writeln!(out, "{}{{{}}} {value}", family.name, parts.join(",")),
        };
    });
    out
}

/// The counters as a JSON object: per-type maps keyed by lower-case packet type
/// (`"data"`, `"grant"`...), `drops` keyed by reason (`"malformed"`...), `malformed`
/// keyed by what was wrong with the packet, and the scalar counters and gauges under
/// their field names.
pub fn to_json(m: &Metrics) -> Value {
    let per_type = |values: &[u64; 9]| {
        let mut o = Map::new();
        for (label, value) in TYPE_LABELS.iter().zip(values) {
            o.insert((*label).to_string(), json!(value));
        }
        Value::Object(o)
    };
    let mut drops = Map::new();
    for r in DropReason::ALL {
        drops.insert(r.name().to_string(), json!(m.dropped(r)));
    }
    let mut malformed = Map::new();
    for (reason, value) in ParseError::REASONS.iter().zip(m.malformed) {
        malformed.insert((*reason).to_string(), json!(value));
    }
    json!({
        "packets_sent": per_type(&m.packets_sent),
        "bytes_sent": per_type(&m.bytes_sent),
        "packets_received": per_type(&m.packets_received),
        "bytes_received": per_type(&m.bytes_received),
        "drops": Value::Object(drops),
        "malformed": Value::Object(malformed),
        "retransmitted_packets": m.retransmitted_packets,
        "timeouts": m.timeouts,
        "requests_delivered": m.requests_delivered,
        "responses_delivered": m.responses_delivered,
        "restarts": m.restarts,
        "requests_lost": m.requests_lost,
        "one_way_delivered": m.one_way_delivered,
        "one_way_acked": m.one_way_acked,
        "cutoff_updates": m.cutoff_updates,
        "client_rpcs": m.client_rpcs,
        "server_rpcs": m.server_rpcs,
        "peers": m.peers,
        "client_histories": m.client_histories,
        "incoming_held": m.incoming_held,
        "outgoing_held": m.outgoing_held,
        "outgoing_responses_held": m.outgoing_responses_held,
        "total_incoming": m.total_incoming,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_has_help_type_and_labels() {
        let mut m = Metrics::default();
        m.packets_sent[1] = 3;
        m.drops[0] = 2;
        m.client_rpcs = 1;
        let t = to_prometheus(&m, &[("socket", "a\"b")]);
        assert!(t.contains("# TYPE homa_packets_sent_total counter"));
        assert!(
            t.contains("homa_packets_sent_total{socket=\"a\\\"b\",type=\"grant\"} 3"),
            "{t}"
        );
        assert!(t.contains("homa_drops_total{socket=\"a\\\"b\",reason=\"malformed\"} 2"));
        assert!(t.contains("# TYPE homa_client_rpcs gauge\nhoma_client_rpcs{socket=\"a\\\"b\"} 1"));
        let bare = to_prometheus(&m, &[]);
        assert!(bare.contains("homa_client_rpcs 1\n"));
        assert!(bare.contains("homa_packets_sent_total{type=\"grant\"} 3"));
        let j = to_json(&m);
        assert_eq!(j["packets_sent"]["grant"], 3);
        assert_eq!(j["drops"]["malformed"], 2);
        assert_eq!(j["client_rpcs"], 1);
    }
}
