//! `homa metrics`: read a process's Homa metrics endpoint and print its series, or their
//! rates over an interval (the way the Linux module's `metrics.py` shows the change in
//! `/proc/net/homa_metrics`).
//!
//! Userspace Homa keeps its counters in the process that runs it, so there is no
//! system-wide file to read: a process serves them with `homa::metrics::serve` (`homa
//! perf server` does, on 127.0.0.1:9100 by default), and this command fetches the
//! Prometheus text from `http://ADDR/metrics` (`homa_perf::scrape`). Any Prometheus
//! endpoint works.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use homa_perf::scrape::{fetch, parse, rates, resolve, Rate, ScrapeError, Series, Target};

/// Arguments of `homa metrics`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// The endpoint: HOST:PORT, as `homa perf server` prints it (its path is /metrics), or
    /// an http://HOST:PORT/PATH URL.
    #[arg(default_value = "127.0.0.1:9100")]
    pub addr: String,
    /// Sample every this many seconds and print the rates: counters per second, gauges
    /// as they stand.
    #[arg(allow_negative_numbers = true, long)]
    pub interval: Option<f64>,
    /// With --interval, stop after this many intervals (default: until interrupted).
    #[arg(long, requires = "interval", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Also show series that are zero (with --interval: counters that did not move), in
    /// the table and in JSON alike (`--format prometheus` prints everything).
    #[arg(long)]
    pub all: bool,
    /// Only series whose name and labels contain this text (e.g. `drops`, `grant`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print JSON lines: the same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
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

/// Why `homa metrics` failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsFailure {
    /// The endpoint could not be read.
    #[error(transparent)]
    Scrape(#[from] ScrapeError),
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
            match e {
                // Bad arguments: status 2, as for every command.
                MetricsFailure::Usage(_) | MetricsFailure::Scrape(ScrapeError::BadAddress(_)) => {
                    ExitCode::from(2)
                }
                MetricsFailure::Scrape(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// `homa metrics`, printing to `out`.
pub fn metrics(args: &MetricsArgs, out: &mut dyn Write) -> Result<(), MetricsFailure> {
    let format = if args.json { Format::Json } else { args.format };
    let addr = resolve(&args.addr)?;
    let interval = match args.interval {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return Err(MetricsFailure::Usage(format!(
                "--interval {s}: give a number of seconds above 0"
            )))
        }
    };
    if interval.is_some() && format == Format::Prometheus {
        return Err(MetricsFailure::Usage(
            "--format prometheus prints one sample; use table or json with --interval".into(),
        ));
    }
    let keep = |s: &Series| {
        args.filter
            .as_ref()
            .is_none_or(|f| s.name.contains(f.as_str()))
    };
    let text = fetch(&addr)?;
    // A closed stdout (piped into `head`) ends the command quietly.
    let mut emit = |s: String| out.write_all(s.as_bytes()).is_ok();
    let Some(interval) = interval else {
        let rendered = match format {
            Format::Prometheus => text,
            Format::Json => values_json(
                sorted(&text)?
                    .iter()
                    .filter(|s| keep(s) && (args.all || s.value != 0.0)),
                None,
            ),
            Format::Table => snapshot_table(&addr, &sorted(&text)?, args.all, &keep),
        };
        emit(rendered);
        return Ok(());
    };
    let mut before = sorted(&text)?;
    let mut at = Instant::now();
    let start = at;
    for _ in 0..args.count.unwrap_or(u64::MAX) {
        std::thread::sleep(interval.saturating_sub(at.elapsed()));
        let now = sorted(&fetch(&addr)?)?;
        let taken = Instant::now();
        let secs = taken.duration_since(at).as_secs_f64();
        let rows = rates(&before, &now, secs);
        let rows: Vec<&Rate> = rows
            .iter()
            .filter(|r| keep(r.series) && (args.all || r.shown()))
            .collect();
        let elapsed = taken.duration_since(start).as_secs_f64();
        let rendered = match format {
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

/// The endpoint's series, by name and labels: exporters print them in any order, and
/// a table read by eye (or two samples diffed) wants a fixed one.
fn sorted(text: &str) -> Result<Vec<Series>, ScrapeError> {
    let mut v = parse(text)?;
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn snapshot_table(
    target: &Target,
    series: &[Series],
    all: bool,
    keep: &dyn Fn(&Series) -> bool,
) -> String {
    let rows: Vec<&Series> = series
        .iter()
        .filter(|s| keep(s) && (all || s.value != 0.0))
        .collect();
    let width = rows.iter().map(|s| s.name.len()).max().unwrap_or(6).max(6);
    let keep_all = series.iter().all(keep);
    let mut t = format!(
        "{target}: {} series, {} shown{}\n{:<width$}  {:>16}\n",
        series.len(),
        rows.len(),
        match (all, keep_all) {
            (true, _) => "",
            (false, true) => " (not zero; --all for every one)",
            (false, false) => " (matching --filter and not zero; --all for the zeros too)",
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
