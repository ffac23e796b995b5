//! What the hosts' `homa perf` processes leave behind for the bench: the calibration's
//! unloaded RTTs, each client's samples file, and the JSON summary line that ends each
//! client's log.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use homa_perf::stats::Baseline;

use super::{io_err, BenchError, BenchProto};

pub(super) fn read_baseline(path: &Path, proto: BenchProto) -> Result<Baseline, BenchError> {
    let text =
        std::fs::read_to_string(path).map_err(io_err(format!("cannot read {}", path.display())))?;
    let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        BenchError::Usage(format!("{}: not the calibration JSON: {e}", path.display()))
    })?;
    let key = proto.perf_name();
    let points: Vec<(usize, f64)> = j[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        return Err(BenchError::Usage(format!(
            "{}: the calibration measured nothing",
            path.display()
        )));
    }
    Ok(Baseline::new(points))
}

/// Appends the `(length, RTT ns)` lines of a `--samples-out` file.
pub(super) fn read_samples(path: &Path, out: &mut Vec<(u32, u64)>) -> Result<(), BenchError> {
    let f = File::open(path).map_err(io_err(format!("cannot read {}", path.display())))?;
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io_err(format!("cannot read {}", path.display())))?;
        let mut w = line.split_whitespace().skip(1);
        if let (Some(Ok(len)), Some(Ok(ns))) = (
            w.next().map(str::parse::<u32>),
            w.next().map(str::parse::<u64>),
        ) {
            out.push((len, ns));
        }
    }
    Ok(())
}

/// What a client's JSON summary line says: its failed RPCs, the request bytes it
/// offered, and those of its RPCs that completed before its arrivals ended.
pub(super) struct ClientSummary {
    pub errors: u64,
    /// RPCs neither completed nor failed when the client gave up waiting (0 from a
    /// client that does not say).
    pub unfinished: u64,
    pub offered_bytes: u64,
    pub carried_bytes: u64,
    /// Homa clients: their socket's packets (`homa_packets`).
    pub homa_packets: Option<serde_json::Value>,
    /// What its warning line said about the first RPC that failed, up to the first `; `
    /// (a Homa client appends its endpoint's counters).
    pub first_error: Option<String>,
}

/// The last JSON summary line of a client's log.
pub(super) fn client_summary(log: &Path) -> Result<ClientSummary, BenchError> {
    let text =
        std::fs::read_to_string(log).map_err(io_err(format!("cannot read {}", log.display())))?;
    let first_error = text.lines().find_map(|l| {
        let (_, first) = l.split_once("RPCs failed; first: ")?;
        Some(first.split("; ").next().unwrap_or(first).to_string())
    });
    text.lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|j| {
            Some(ClientSummary {
                errors: j["errors"].as_u64()?,
                unfinished: j["unfinished"].as_u64().unwrap_or(0),
                offered_bytes: j["offered_bytes"].as_u64()?,
                carried_bytes: j["carried_bytes"].as_u64()?,
                homa_packets: j.get("homa_packets").cloned(),
                first_error: first_error.clone(),
            })
        })
        .ok_or_else(|| {
            BenchError::Usage(format!(
                "{}: no JSON summary line with \"errors\", \"offered_bytes\" and \"carried_bytes\" at the end",
                log.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_offered_bytes_are_read_from_the_client_json_line() {
        let dir = std::env::temp_dir().join(format!("homa-bench-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("c.log");
        std::fs::write(
            &log,
            "x\nwarning: homa: 12 RPCs failed; first: timeout\n\
             {\"proto\":\"homa\",\"rpcs\":5,\"gbps\":0.1,\"p50_us\":1.0,\"p99_us\":2.0,\
             \"p999_us\":3.0,\"offered_bytes\":7000,\"carried_bytes\":6000,\"errors\":12,\
             \"unfinished\":4}\n",
        )
        .unwrap();
        let c = client_summary(&log).unwrap();
        assert_eq!(
            (c.errors, c.unfinished, c.offered_bytes, c.carried_bytes),
            (12, 4, 7000, 6000)
        );
        assert_eq!(c.first_error.as_deref(), Some("timeout"));
        assert!(c.homa_packets.is_none());
        // Without the summary line (an older client, a truncated log) it is an error, not 0.
        std::fs::write(&log, "x\nwarning: homa: 12 RPCs failed; first: timeout\n").unwrap();
        assert!(client_summary(&log).is_err());
        let samples = dir.join("s.txt");
        std::fs::write(&samples, "homa 100 5000\nhoma 2000 9000\ngarbage\n").unwrap();
        let mut out = Vec::new();
        read_samples(&samples, &mut out).unwrap();
        assert_eq!(out, vec![(100, 5000), (2000, 9000)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
