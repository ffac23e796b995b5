//! Engine counters as Prometheus text or JSON, and an HTTP endpoint serving them
//! ([`serve()`], feature `serve`, on by default) for Prometheus, `curl` or `homa metrics`.
//!
//! ```
//! let m = homa_core::Metrics::default();
//! let text = homa::metrics::to_prometheus(&m, &[("socket", "4000")]);
//! assert!(text.contains("homa_packets_sent_total{socket=\"4000\",type=\"data\"} 0"));
//! let json = homa::metrics::to_json(&m);
//! assert_eq!(json["packets_sent"]["data"], 0);
//! ```

use homa_core::{DropReason, Metrics};
use homa_wire::PacketType;
use serde_json::{json, Map, Value};
use std::fmt::Write;

#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
pub use serve::{
    serve, MetricsServer, Source, MAX_CONNECTIONS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT,
};

fn type_label(t: PacketType) -> String {
    t.name().to_ascii_lowercase()
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

fn labels(base: &str, extra: Option<(&str, &str)>) -> String {
    let mut parts = base.to_string();
    if let Some((k, v)) = extra {
        if !parts.is_empty() {
            parts.push(',');
        }
        let _ = write!(parts, "{k}=\"{}\"", escape(v));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{parts}}}")
    }
}

/// The counters in the Prometheus text exposition format (version 0.0.4): every metric
/// named `homa_...`, with `# HELP` and `# TYPE` lines, per-packet-type series labelled
/// `type="data"`, `type="grant"`..., drops labelled `reason="malformed"`..., and `labels`
/// added to every series (for example `[("socket", "4000")]`).
pub fn to_prometheus(m: &Metrics, labels_in: &[(&str, &str)]) -> String {
    let base = labels_in
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = String::new();
    let mut per_type = |name: &str, help: &str, values: &[u64; 9]| {
        let _ = writeln!(out, "# HELP homa_{name} {help}");
        let _ = writeln!(out, "# TYPE homa_{name} counter");
        for t in PacketType::ALL {
            let v = values[(t.code() - 0x10) as usize];
            let l = labels(&base, Some(("type", &type_label(t))));
            let _ = writeln!(out, "homa_{name}{l} {v}");
        }
    };
    per_type(
        "packets_sent_total",
        "Homa packets sent, by type.",
        &m.packets_sent,
    );
    per_type(
        "bytes_sent_total",
        "Homa bytes (headers and payload) sent, by packet type.",
        &m.bytes_sent,
    );
    per_type(
        "packets_received_total",
        "Homa packets received and parsed, by type.",
        &m.packets_received,
    );
    per_type(
        "bytes_received_total",
        "Homa bytes received, by packet type.",
        &m.bytes_received,
    );
    let _ = writeln!(
        out,
        "# HELP homa_drops_total Received packets dropped without effect, by reason."
    );
    let _ = writeln!(out, "# TYPE homa_drops_total counter");
    for r in DropReason::ALL {
        let l = labels(&base, Some(("reason", r.name())));
        let _ = writeln!(out, "homa_drops_total{l} {}", m.dropped(r));
    }
    let l = labels(&base, None);
    let scalars: [(&str, &str, &str, u64); 10] = [
        (
            "retransmitted_packets_total",
            "counter",
            "DATA packets retransmitted in answer to RESENDs.",
            m.retransmitted_packets,
        ),
        (
            "timeouts_total",
            "counter",
            "RPCs that failed or were discarded because the peer went silent.",
            m.timeouts,
        ),
        (
            "requests_delivered_total",
            "counter",
            "Requests delivered to server sockets.",
            m.requests_delivered,
        ),
        (
            "responses_delivered_total",
            "counter",
            "Responses delivered to clients.",
            m.responses_delivered,
        ),
        (
            "restarts_total",
            "counter",
            "Client RPCs restarted after RPC_UNKNOWN.",
            m.restarts,
        ),
        ("client_rpcs", "gauge", "Live client RPCs.", m.client_rpcs),
        ("server_rpcs", "gauge", "Live server RPCs.", m.server_rpcs),
        (
            "incoming_held_bytes",
            "gauge",
            "Bytes of incoming message data held.",
            m.incoming_held,
        ),
        (
            "outgoing_held_bytes",
            "gauge",
            "Bytes of outgoing message data held.",
            m.outgoing_held,
        ),
        (
            "total_incoming_bytes",
            "gauge",
            "Granted but not yet received bytes.",
            m.total_incoming,
        ),
    ];
    for (name, ty, help, v) in scalars {
        let _ = writeln!(out, "# HELP homa_{name} {help}");
        let _ = writeln!(out, "# TYPE homa_{name} {ty}");
        let _ = writeln!(out, "homa_{name}{l} {v}");
    }
    out
}

/// The counters as a JSON object: per-type maps keyed by lower-case packet type
/// (`"data"`, `"grant"`...), `drops` keyed by reason (`"malformed"`...), and the scalar
/// counters and gauges under their field names.
pub fn to_json(m: &Metrics) -> Value {
    let per_type = |values: &[u64; 9]| {
        let mut o = Map::new();
        for t in PacketType::ALL {
            o.insert(type_label(t), json!(values[(t.code() - 0x10) as usize]));
        }
        Value::Object(o)
    };
    let mut drops = Map::new();
    for r in DropReason::ALL {
        drops.insert(r.name().to_string(), json!(m.dropped(r)));
    }
    json!({
        "packets_sent": per_type(&m.packets_sent),
        "bytes_sent": per_type(&m.bytes_sent),
        "packets_received": per_type(&m.packets_received),
        "bytes_received": per_type(&m.bytes_received),
        "drops": Value::Object(drops),
        "retransmitted_packets": m.retransmitted_packets,
        "timeouts": m.timeouts,
        "requests_delivered": m.requests_delivered,
        "responses_delivered": m.responses_delivered,
        "restarts": m.restarts,
        "client_rpcs": m.client_rpcs,
        "server_rpcs": m.server_rpcs,
        "incoming_held": m.incoming_held,
        "outgoing_held": m.outgoing_held,
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
