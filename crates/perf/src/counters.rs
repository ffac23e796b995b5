//! The perf server's own counters: requests and bytes answered, by transport. Both the
//! Homa and the TCP server threads count here, and `homa perf server` reports them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

/// Requests answered, by transport (shared by all server threads).
#[derive(Debug, Default)]
pub struct ServerCounters {
    homa_requests: AtomicU64,
    homa_bytes_in: AtomicU64,
    homa_bytes_out: AtomicU64,
    tcp_requests: AtomicU64,
    tcp_bytes_in: AtomicU64,
    tcp_bytes_out: AtomicU64,
    malformed: AtomicU64,
}

/// A copy of [`ServerCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Homa requests answered.
    pub homa_requests: u64,
    /// Homa request bytes received.
    pub homa_bytes_in: u64,
    /// Homa response bytes sent.
    pub homa_bytes_out: u64,
    /// TCP requests answered.
    pub tcp_requests: u64,
    /// TCP request bytes received.
    pub tcp_bytes_in: u64,
    /// TCP response bytes sent.
    pub tcp_bytes_out: u64,
    /// Requests too short for the perf header (dropped for Homa, answered empty for TCP).
    pub malformed: u64,
}

impl ServerCounters {
    /// One Homa request of `bytes_in` answered with `bytes_out`.
    pub fn count_homa(&self, bytes_in: usize, bytes_out: usize) {
        self.homa_requests.fetch_add(1, Ordering::Relaxed);
        self.homa_bytes_in
            .fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.homa_bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
    }

    /// One TCP request of `bytes_in` answered with `bytes_out`.
    pub fn count_tcp(&self, bytes_in: usize, bytes_out: usize) {
        self.tcp_requests.fetch_add(1, Ordering::Relaxed);
        self.tcp_bytes_in
            .fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.tcp_bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
    }

    /// One request too short for the header.
    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            homa_requests: l(&self.homa_requests),
            homa_bytes_in: l(&self.homa_bytes_in),
            homa_bytes_out: l(&self.homa_bytes_out),
            tcp_requests: l(&self.tcp_requests),
            tcp_bytes_in: l(&self.tcp_bytes_in),
            tcp_bytes_out: l(&self.tcp_bytes_out),
            malformed: l(&self.malformed),
        }
    }
}

impl CounterSnapshot {
    /// Prometheus text for the perf server's own counters.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut family = |name: &str, help: &str, homa: u64, tcp: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{proto=\"homa\"}} {homa}\n{name}{{proto=\"tcp\"}} {tcp}\n"
            ));
        };
        family(
            "homa_perf_requests_total",
            "Perf requests answered.",
            self.homa_requests,
            self.tcp_requests,
        );
        family(
            "homa_perf_request_bytes_total",
            "Perf request bytes received.",
            self.homa_bytes_in,
            self.tcp_bytes_in,
        );
        family(
            "homa_perf_response_bytes_total",
            "Perf response bytes sent.",
            self.homa_bytes_out,
            self.tcp_bytes_out,
        );
        s.push_str(&format!(
            "# HELP homa_perf_malformed_requests_total Requests shorter than the perf header.\n# TYPE homa_perf_malformed_requests_total counter\nhoma_perf_malformed_requests_total {}\n",
            self.malformed
        ));
        s
    }

    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "homa": {"requests": self.homa_requests, "request_bytes": self.homa_bytes_in, "response_bytes": self.homa_bytes_out},
            "tcp": {"requests": self.tcp_requests, "request_bytes": self.tcp_bytes_in, "response_bytes": self.tcp_bytes_out},
            "malformed": self.malformed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_well_formed() {
        let c = ServerCounters::default();
        c.count_tcp(100, 10);
        c.count_homa(5, 6);
        c.count_malformed();
        let text = c.snapshot().prometheus();
        assert!(text.contains("homa_perf_requests_total{proto=\"tcp\"} 1\n"));
        assert!(text.contains("homa_perf_request_bytes_total{proto=\"homa\"} 5\n"));
        assert!(text.contains("homa_perf_malformed_requests_total 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("homa_perf_"), "{line}");
            value.parse::<u64>().unwrap();
        }
        assert_eq!(c.snapshot().json()["tcp"]["response_bytes"], 10);
    }
}
