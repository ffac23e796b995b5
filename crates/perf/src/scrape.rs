//! Reading a process's Homa metrics endpoint, as `homa metrics` does: fetch the Prometheus
//! text from `http://ADDR/metrics`, parse it into series, and turn two samples into rates
//! (the way the Linux module's `metrics.py` shows the change in `/proc/net/homa_metrics`).
//!
//! Userspace Homa keeps its counters in the process that runs it, so there is no
//! system-wide file to read: a process serves them with `homa::metrics::serve` (the perf
//! server does, on 127.0.0.1:9100 by default). Any Prometheus endpoint works.
//!
//! ```
//! use homa_perf::scrape::{parse, Kind};
//!
//! let text = "# TYPE homa_timeouts_total counter\nhoma_timeouts_total{socket=\"4000\"} 3\n";
//! let series = parse(text).unwrap();
//! assert_eq!(series[0].name, "homa_timeouts_total{socket=\"4000\"}");
//! assert_eq!((series[0].kind, series[0].value), (Kind::Counter, 3.0));
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long to wait for the endpoint to connect and to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a series measures, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (histogram and summary parts count as counters).
    Counter,
    /// Goes up and down.
    Gauge,
    /// No `# TYPE` line: shown like a gauge.
    Untyped,
}

/// One sample line of Prometheus text.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name with its labels, as written (`name{label="v",...}`).
    pub name: String,
    /// Its family's type.
    pub kind: Kind,
    /// The value.
    pub value: f64,
}

/// Where a metrics endpoint is: its address and the path to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address.
    pub addr: SocketAddr,
    /// The path (`/metrics` unless the URL named another).
    pub path: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.addr, self.path)
    }
}

/// The longest answer read: Homa's series for a few thousand sockets take a few MB.
pub const MAX_ANSWER: usize = 64 << 20;

/// Why an endpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The address did not parse.
    #[error("{0:?} is not an endpoint address: give HOST:PORT (such as 127.0.0.1:9100) or http://HOST:PORT/PATH")]
    BadAddress(String),
    /// The host name did not resolve.
    #[error("cannot resolve {host:?}: {source}")]
    Unresolved {
        /// The host and port given.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// No connection, or no answer.
    #[error("cannot read {target}: {source} (is `homa perf server`, or a program calling homa::metrics::serve, running there?)")]
    Unreachable {
        /// The endpoint.
        target: Target,
        /// What went wrong.
        source: io::Error,
    },
    /// The endpoint answered with an error status, or not in HTTP.
    #[error("{}", status_text(target, *status))]
    Status {
        /// The endpoint.
        target: Target,
        /// The HTTP status code (0: not an HTTP answer).
        status: u16,
    },
    /// The answer is longer than [`MAX_ANSWER`].
    #[error("{target} answered more than {} MB: not a metrics endpoint", MAX_ANSWER >> 20)]
    TooLong {
        /// The endpoint.
        target: Target,
    },
    /// The body is JSON: a `/metrics.json` address, where the Prometheus text is wanted.
    #[error("the answer is JSON, not Prometheus text: give the /metrics address (a perf server serves both; /metrics.json is for other tools)")]
    Json,
    /// The body is not Prometheus text.
    #[error("line {line} of the metrics is not Prometheus text: {text:?}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

fn status_text(target: &Target, status: u16) -> String {
    if status == 0 {
        format!(
            "{target} did not answer in HTTP: not a metrics endpoint \
             (`homa perf server` serves its metrics on 127.0.0.1:9100 unless told otherwise)"
        )
    } else {
        format!("{target} answered HTTP {status}")
    }
}

/// `HOST:PORT` or `http://HOST:PORT[/PATH]` to an address and a path (`/metrics` when
/// none is given).
pub fn resolve(addr: &str) -> Result<Target, ScrapeError> {
    let bad = || ScrapeError::BadAddress(addr.to_string());
    let rest = addr.strip_prefix("http://").unwrap_or(addr);
    let (hostport, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // Only a URL may name a path; "/" alone asks for the default.
    if !path.is_empty() && !addr.starts_with("http://") {
        return Err(bad());
    }
    let path = match path {
        "" | "/" => "/metrics".to_string(),
        p if p.chars().all(|c| c.is_ascii_graphic()) => p.to_string(),
        _ => return Err(bad()),
    };
    // HOST:PORT with a numeric port; the name is then looked up.
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(bad()),
    }
    let unresolved = |source| ScrapeError::Unresolved {
        host: hostport.to_string(),
        source,
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(unresolved)?
        .next()
        .ok_or_else(|| unresolved(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
    Ok(Target { addr, path })
}

/// `GET` the target's path: the body of a 200 answer (within 5 s to connect and 5 s for
/// the whole answer, of at most [`MAX_ANSWER`] bytes).
pub fn fetch(target: &Target) -> Result<String, ScrapeError> {
    let unreachable = |source: io::Error| ScrapeError::Unreachable {
        target: target.clone(),
        source,
    };
    let late = || {
        unreachable(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no whole answer within {} s", TIMEOUT.as_secs()),
        ))
    };
    let mut s = TcpStream::connect_timeout(&target.addr, TIMEOUT).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => late(),
        _ => unreachable(e),
    })?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\n\r\n",
        target.path, target.addr
    );
    s.write_all(request.as_bytes()).map_err(unreachable)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        s.set_read_timeout(Some(left)).map_err(unreachable)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if raw.len() + n > MAX_ANSWER => {
                return Err(ScrapeError::TooLong {
                    target: target.clone(),
                })
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A read that waited out its timeout reports "Resource temporarily unavailable".
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late())
            }
            Err(e) => return Err(unreachable(e)),
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(ScrapeError::Status {
            target: target.clone(),
            status,
        });
    }
    Ok(body.to_string())
}

/// Parse the Prometheus text exposition format (version 0.0.4): `# TYPE` lines give
/// each family's kind; other comments and blank lines are skipped; a sample is
/// `name{labels} value [timestamp]`.
pub fn parse(text: &str) -> Result<Vec<Series>, ScrapeError> {
    // (A JSON object starts `{"`; a Prometheus sample never does.)
    if text.trim_start().starts_with("{\"") {
        return Err(ScrapeError::Json);
    }
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        // (The line as said in the error: its start, if it is long.)
        let bad = || ScrapeError::Parse {
            line: i + 1,
            text: line.chars().take(120).collect(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                    return Err(bad());
                };
                let kind = match kind {
                    "counter" | "histogram" | "summary" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    _ => Kind::Untyped,
                };
                kinds.insert(family, kind);
            }
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).ok_or_else(bad)?;
        let metric = &line[..name_end];
        let labels_end = if line[name_end..].starts_with('{') {
            name_end + labels_len(&line[name_end..]).ok_or_else(bad)?
        } else {
            name_end
        };
        let value = line[labels_end..]
            .split_whitespace()
            .next()
            .and_then(parse_value)
            .ok_or_else(bad)?;
        if metric.is_empty() {
            return Err(bad());
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s).filter(|f| kinds.contains_key(f)))
            .unwrap_or(metric);
        out.push(Series {
            name: line[..labels_end].to_string(),
            kind: kinds.get(family).copied().unwrap_or(Kind::Untyped),
            value,
        });
    }
    Ok(out)
}

/// Length of the `{...}` block that starts `s`, with quoted label values (which may hold
/// `}` and escaped quotes) skipped.
fn labels_len(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, _, '"') => quoted = !quoted,
            (false, _, '}') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// A series between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate<'a> {
    /// The series, as in the later sample.
    pub series: &'a Series,
    /// Per second, for counters present in both samples.
    pub per_second: Option<f64>,
}

impl Rate<'_> {
    /// Worth showing when only what changed is wanted: a counter that moved, or a gauge
    /// that is not zero.
    pub fn shown(&self) -> bool {
        match self.per_second {
            Some(r) => r != 0.0,
            None => self.series.kind != Kind::Counter && self.series.value != 0.0,
        }
    }
}

/// Each series of `now` with its rate since `before`, `secs` earlier.
pub fn rates<'a>(before: &[Series], now: &'a [Series], secs: f64) -> Vec<Rate<'a>> {
    let old: HashMap<&str, f64> = before.iter().map(|s| (s.name.as_str(), s.value)).collect();
    now.iter()
        .map(|s| Rate {
            series: s,
            per_second: (s.kind == Kind::Counter)
                .then(|| old.get(s.name.as_str()))
                .flatten()
                .map(|v| (s.value - v) / secs),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_labels_with_braces_and_quotes_timestamps_and_histograms() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\n\
                    a_total{k=\"x}y\",q=\"say \\\"hi\\\"\"} 7 1700000000\n\
                    # TYPE g gauge\ng 2.5\n\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 4\nh_sum 9\nh_count 4\n\
                    plain 1e3\n";
        let s = parse(text).unwrap();
        let got: Vec<(&str, Kind, f64)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.kind, s.value))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "a_total{k=\"x}y\",q=\"say \\\"hi\\\"\"}",
                    Kind::Counter,
                    7.0
                ),
                ("g", Kind::Gauge, 2.5),
                ("h_bucket{le=\"+Inf\"}", Kind::Counter, 4.0),
                ("h_sum", Kind::Counter, 9.0),
                ("h_count", Kind::Counter, 4.0),
                ("plain", Kind::Untyped, 1000.0),
            ]
        );
    }

    #[test]
    fn rejects_what_is_not_prometheus_text() {
        for (text, line) in [
            ("<html>\n", 1),
            ("a 1\nb{x=\"1\" 2\n", 2),
            ("a one\n", 1),
            ("# TYPE a\n", 1),
            ("{x=\"1\"} 2\n", 1),
        ] {
            match parse(text) {
                Err(ScrapeError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // The JSON a /metrics.json address gives is named as such, not quoted whole.
        let json = format!("{{\"homa\": {{\"x\": \"{}\"}}}}\n", "y".repeat(10_000));
        assert!(matches!(parse(&json), Err(ScrapeError::Json)));
        match parse(&format!("a 1\n{}\n", "z".repeat(10_000))) {
            Err(ScrapeError::Parse { text, .. }) => assert_eq!(text.len(), 120),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rates_are_for_counters_seen_twice() {
        let before = parse("# TYPE c counter\nc 10\n# TYPE g gauge\ng 5\n").unwrap();
        let now = parse("# TYPE c counter\nc 40\nnew_total 3\n# TYPE g gauge\ng 0\n").unwrap();
        let r = rates(&before, &now, 2.0);
        let got: Vec<(&str, Option<f64>, bool)> = r
            .iter()
            .map(|r| (r.series.name.as_str(), r.per_second, r.shown()))
            .collect();
        assert_eq!(
            got,
            [
                ("c", Some(15.0), true),
                ("new_total", None, true),
                ("g", None, false)
            ]
        );
    }

    #[test]
    fn addresses() {
        let at = |path: &str| Target {
            addr: "127.0.0.1:9100".parse().unwrap(),
            path: path.into(),
        };
        assert_eq!(resolve("127.0.0.1:9100").unwrap(), at("/metrics"));
        assert_eq!(resolve("http://127.0.0.1:9100").unwrap(), at("/metrics"));
        assert_eq!(resolve("http://127.0.0.1:9100/").unwrap(), at("/metrics"));
        assert_eq!(
            resolve("http://127.0.0.1:9100/metrics").unwrap(),
            at("/metrics")
        );
        // The path of a URL is the one asked for.
        assert_eq!(resolve("http://127.0.0.1:9100/x/m").unwrap(), at("/x/m"));
        assert_eq!(at("/x/m").to_string(), "http://127.0.0.1:9100/x/m");
        for bad in [
            "9100",
            "http://",
            "127.0.0.1:9100/metrics",
            "host:port",
            ":9100",
        ] {
            assert!(
                matches!(resolve(bad), Err(ScrapeError::BadAddress(_))),
                "{bad}"
            );
        }
        // A HOST:PORT whose name does not resolve says so.
        assert!(matches!(
            resolve("nosuchhost.invalid:9100"),
            Err(ScrapeError::Unresolved { .. })
        ));
    }
}
