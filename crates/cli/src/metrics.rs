//! `homa metrics`: read a process's Homa metrics endpoint and print its series, or their
//! rates over an interval (the way the Linux module's `metrics.py` shows the change in
//! `/proc/net/homa_metrics`).
//!
//! Userspace Homa keeps its counters in the process that runs it, so there is no
//! system-wide file to read: a process serves them with `homa::metrics::serve` (`homa
//! perf server` does, on 127.0.0.1:9100 by default), and this command fetches the
//! Prometheus text from `http://ADDR/metrics`. Any Prometheus endpoint works.
//!
//! ```
//! use homa_cli::metrics::{parse, Kind};
//!
//! let text = "# TYPE homa_timeouts_total counter\nhoma_timeouts_total{socket=\"4000\"} 3\n";
//! let series = parse(text).unwrap();
//! assert_eq!(series[0].name, "homa_timeouts_total{socket=\"4000\"}");
//! assert_eq!((series[0].kind, series[0].value), (Kind::Counter, 3.0));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

/// How long to wait for the endpoint to connect and to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `homa metrics`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// The endpoint: HOST:PORT, as `homa perf server` prints it, or an http:// URL.
    #[arg(default_value = "127.0.0.1:9100")]
    pub addr: String,
    /// Sample every this many seconds and print the rates: counters per second, gauges
    /// as they stand.
    #[arg(long)]
    pub interval: Option<f64>,
    /// With --interval, stop after this many intervals (default: until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Also show series that are zero (with --interval: counters that did not move).
    #[arg(long)]
    pub all: bool,
    /// Only series whose name and labels contain this text (e.g. `drops`, `grant`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How `homa metrics` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line: `{"values":{..}}`, and with --interval
    /// `{"seconds":..,"values":{..},"rates":{..}}` (rates of counters only).
    Json,
    /// The endpoint's Prometheus text, unchanged (one sample; not with --interval).
    Prometheus,
}

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

/// Why `homa metrics` failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address did not parse or resolve.
    #[error("{0:?} is not an endpoint address: give HOST:PORT (such as 127.0.0.1:9100) or http://HOST:PORT/metrics")]
    BadAddress(String),
    /// No connection, or no answer.
    #[error("cannot read http://{addr}/metrics: {source} (is `homa perf server`, or a program calling homa::metrics::serve, running there?)")]
    Unreachable {
        /// The endpoint.
        addr: SocketAddr,
        /// What went wrong.
        source: io::Error,
    },
    /// The endpoint answered with an error status.
    #[error("http://{addr}/metrics answered HTTP {status}")]
    Status {
        /// The endpoint.
        addr: SocketAddr,
        /// The HTTP status code (0: not an HTTP answer).
        status: u16,
    },
    /// The body is not Prometheus text.
    #[error("line {line} of the metrics is not Prometheus text: {text:?}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
}

/// Runs `homa metrics`; errors are printed on stderr.
pub fn run(args: &MetricsArgs) -> ExitCode {
    match metrics(args, &mut io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("homa metrics: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `homa metrics`, printing to `out`.
pub fn metrics(args: &MetricsArgs, out: &mut dyn Write) -> Result<(), MetricsError> {
    let addr = resolve(&args.addr)?;
    let interval = match args.interval {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(MetricsError::Usage(format!(
                "--interval {s}: give a number of seconds above 0"
            )))
        }
    };
    if interval.is_some() && args.format == Format::Prometheus {
        return Err(MetricsError::Usage(
            "--format prometheus prints one sample; use table or json with --interval".into(),
        ));
    }
    let keep = |s: &Series| {
        args.filter
            .as_ref()
            .is_none_or(|f| s.name.contains(f.as_str()))
    };
    let text = fetch(addr)?;
    // A closed stdout (piped into `head`) ends the command quietly.
    let mut emit = |s: String| out.write_all(s.as_bytes()).is_ok();
    let Some(interval) = interval else {
        let rendered = match args.format {
            Format::Prometheus => text,
            Format::Json => values_json(parse(&text)?.iter().filter(|s| keep(s)), None),
            Format::Table => snapshot_table(addr, &parse(&text)?, args.all, &keep),
        };
        emit(rendered);
        return Ok(());
    };
    let mut before = parse(&text)?;
    let mut at = Instant::now();
    let start = at;
    for _ in 0..args.count.unwrap_or(u64::MAX) {
        std::thread::sleep(interval.saturating_sub(at.elapsed()));
        let now = parse(&fetch(addr)?)?;
        let taken = Instant::now();
        let secs = taken.duration_since(at).as_secs_f64();
        let rows = rates(&before, &now, secs);
        let rows: Vec<&Rate> = rows
            .iter()
            .filter(|r| keep(r.series) && (args.all || r.shown()))
            .collect();
        let elapsed = taken.duration_since(start).as_secs_f64();
        let rendered = match args.format {
            Format::Json => values_json(rows.iter().map(|r| r.series), Some((elapsed, &rows))),
            _ => rate_table(elapsed, secs, &rows),
        };
        if !emit(rendered) {
            break;
        }
        before = now;
        at = taken;
    }
    Ok(())
}

/// `HOST:PORT` or `http://HOST:PORT[/path]` to one address.
fn resolve(addr: &str) -> Result<SocketAddr, MetricsError> {
    let bad = || MetricsError::BadAddress(addr.to_string());
    let hostport = addr.strip_prefix("http://").unwrap_or(addr);
    let hostport = hostport.split('/').next().unwrap_or("");
    hostport
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// `GET /metrics` from `addr`: the body of a 200 answer.
fn fetch(addr: SocketAddr) -> Result<String, MetricsError> {
    let unreachable = |source| MetricsError::Unreachable { addr, source };
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(unreachable)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(MetricsError::Status { addr, status });
    }
    Ok(body.to_string())
}

/// Parse the Prometheus text exposition format (version 0.0.4): `# TYPE` lines give
/// each family's kind; other comments and blank lines are skipped; a sample is
/// `name{labels} value [timestamp]`.
pub fn parse(text: &str) -> Result<Vec<Series>, MetricsError> {
    let mut kinds: HashMap<&str, Kind> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let bad = || MetricsError::Parse {
            line: i + 1,
            text: line.to_string(),
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
struct Rate<'a> {
    series: &'a Series,
    /// Per second, for counters present in both samples.
    per_second: Option<f64>,
}

impl Rate<'_> {
    /// Worth a line without --all: a counter that moved, or a gauge that is not zero.
    fn shown(&self) -> bool {
        match self.per_second {
            Some(r) => r != 0.0,
            None => self.series.kind != Kind::Counter && self.series.value != 0.0,
        }
    }
}

fn rates<'a>(before: &[Series], now: &'a [Series], secs: f64) -> Vec<Rate<'a>> {
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

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn snapshot_table(
    addr: SocketAddr,
    series: &[Series],
    all: bool,
    keep: &dyn Fn(&Series) -> bool,
) -> String {
    let rows: Vec<&Series> = series
        .iter()
        .filter(|s| keep(s) && (all || s.value != 0.0))
        .collect();
    let width = rows.iter().map(|s| s.name.len()).max().unwrap_or(6).max(6);
    let mut t = format!(
        "http://{addr}/metrics: {} series, {} shown{}\n{:<width$}  {:>16}\n",
        series.len(),
        rows.len(),
        if all {
            ""
        } else {
            " (not zero; --all for every one)"
        },
        "series",
        "value"
    );
    for s in rows {
        let _ = writeln!(t, "{:<width$}  {:>16}", s.name, number(s.value));
    }
    t
}

fn rate_table(elapsed: f64, secs: f64, rows: &[&Rate]) -> String {
    let width = rows
        .iter()
        .map(|r| r.series.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut t = format!(
        "[{elapsed:>7.1}s] over {secs:.2} s:\n{:<width$}  {:>16}  {:>14}\n",
        "series", "value", "per second"
    );
    for r in rows {
        let rate = r.per_second.map_or_else(
            || "-".to_string(),
            |v| human_rate(v, r.series.name.contains("bytes")),
        );
        let _ = writeln!(
            t,
            "{:<width$}  {:>16}  {:>14}",
            r.series.name,
            number(r.series.value),
            rate
        );
    }
    t
}

/// A rate for people: 3 significant digits with an SI prefix (`129 M`, `4.56 k`), and
/// `B` for byte counters (`129 MB`); plain below 1,000.
fn human_rate(v: f64, bytes: bool) -> String {
    let unit = if bytes { "B" } else { "" };
    let (scaled, prefix) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|&(f, _)| v.abs() >= f)
        .map_or((v, ""), |(f, p)| (v / f, p));
    let digits = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    let sep = if prefix.is_empty() && unit.is_empty() {
        ""
    } else {
        " "
    };
    format!("{scaled:.digits$}{sep}{prefix}{unit}")
}

#[cfg(test)]
mod rate_tests {
    use super::human_rate;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(human_rate(129_418_938.1, true), "129 MB");
        assert_eq!(human_rate(4_560.0, false), "4.56 k");
        assert_eq!(human_rate(12.5, false), "12.5");
        assert_eq!(human_rate(0.0, true), "0.00 B");
        assert_eq!(human_rate(2.5e9, false), "2.50 G");
    }
}

/// A value as JSON: whole numbers without a fraction.
fn json_number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        serde_json::json!(v as i64)
    } else {
        serde_json::json!(v)
    }
}

fn values_json<'a>(
    series: impl Iterator<Item = &'a Series>,
    rates: Option<(f64, &[&Rate])>,
) -> String {
    let values: BTreeMap<&str, serde_json::Value> = series
        .map(|s| (s.name.as_str(), json_number(s.value)))
        .collect();
    let line = match rates {
        None => serde_json::json!({ "values": values }),
        Some((elapsed, rows)) => {
            let per_second: BTreeMap<&str, serde_json::Value> = rows
                .iter()
                .filter_map(|r| Some((r.series.name.as_str(), json_number(r.per_second?))))
                .collect();
            serde_json::json!({ "seconds": elapsed, "values": values, "rates": per_second })
        }
    };
    format!("{line}\n")
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
                Err(MetricsError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
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
        let want: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        assert_eq!(resolve("127.0.0.1:9100").unwrap(), want);
        assert_eq!(resolve("http://127.0.0.1:9100/metrics").unwrap(), want);
        assert!(matches!(resolve("9100"), Err(MetricsError::BadAddress(_))));
        assert!(matches!(
            resolve("http://"),
            Err(MetricsError::BadAddress(_))
        ));
    }
}
