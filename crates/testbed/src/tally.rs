//! What the Homa clients' sockets said they did, summed over the clients of one
//! transport's run: packets by type and their own system calls and wake-ups, per RPC.

use std::collections::BTreeMap;

/// Packets the clients' Homa sockets sent and received, by type, summed over the clients,
/// and the RPCs they completed. Every packet of an RPC has its client at one end, so the
/// sum counts each packet that crossed the switch once (a lost one, by its sender only).
#[derive(Debug, Clone)]
pub(crate) struct PacketTally {
    rpcs: u64,
    by_type: BTreeMap<String, u64>,
    /// The part of `by_type` the clients sent (the rest came from the servers).
    sent_by_clients: BTreeMap<String, u64>,
    /// The clients' sockets' system calls and wake-ups (`io` in `homa_packets`, see
    /// `homa::IoCounts`), summed; `None` once a client did not report them.
    io: Option<BTreeMap<String, u64>>,
}

impl Default for PacketTally {
    fn default() -> Self {
        PacketTally {
            rpcs: 0,
            by_type: BTreeMap::new(),
            sent_by_clients: BTreeMap::new(),
            io: Some(BTreeMap::new()),
        }
    }
}

impl PacketTally {
    /// Adds one client's `homa_packets` (see `homa_perf::stats::Summary`); `None` if it
    /// is not in that shape.
    pub(crate) fn add(&mut self, client: &serde_json::Value) -> Option<()> {
        self.rpcs += client["rpcs"].as_u64()?;
        for direction in ["sent", "received"] {
            add_counts(&mut self.by_type, client[direction].as_object()?)?;
        }
        add_counts(&mut self.sent_by_clients, client["sent"].as_object()?)?;
        // All clients' counts, or none: a partial sum would mislead.
        self.io = self
            .io
            .take()
            .zip(client["io"].as_object())
            .and_then(|(mut sum, io)| add_counts(&mut sum, io).map(|()| sum));
        Some(())
    }

    /// Packets per RPC by type.
    pub(crate) fn per_rpc(&self) -> Vec<(String, f64)> {
        per_rpc(&self.by_type, self.rpcs)
    }

    /// The packets the clients sent, per RPC by type: of [`per_rpc`](Self::per_rpc)'s
    /// counts, what the servers sent is the rest (which side asks with RESENDs, which
    /// answers BUSY).
    pub(crate) fn sent_by_clients_per_rpc(&self) -> Vec<(String, f64)> {
        per_rpc(&self.sent_by_clients, self.rpcs)
    }

    /// The clients' system calls and wake-ups per RPC, by kind (`None`: a client did
    /// not report them).
    pub(crate) fn io_per_rpc(&self) -> Option<Vec<(String, f64)>> {
        Some(per_rpc(self.io.as_ref()?, self.rpcs))
    }
}

/// Adds named counts to `sum`; `None` if one is not a count.
fn add_counts(
    sum: &mut BTreeMap<String, u64>,
    counts: &serde_json::Map<String, serde_json::Value>,
) -> Option<()> {
    for (name, n) in counts {
        *sum.entry(name.clone()).or_default() += n.as_u64()?;
    }
    Some(())
}

fn per_rpc(counts: &BTreeMap<String, u64>, rpcs: u64) -> Vec<(String, f64)> {
    let rpcs = rpcs.max(1) as f64;
    counts
        .iter()
        .map(|(name, &n)| (name.clone(), n as f64 / rpcs))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packets_per_rpc_sum_every_client_both_ways() {
        let client = |rpcs: u64, data_out: u64, grant_in: u64| {
            json!({
                "rpcs": rpcs,
                "sent": {"DATA": data_out, "GRANT": 0},
                "received": {"DATA": rpcs, "GRANT": grant_in},
            })
        };
        let mut t = PacketTally::default();
        t.add(&client(10, 30, 5)).unwrap();
        t.add(&client(30, 50, 15)).unwrap();
        // 40 RPCs: 80 request packets out and 40 responses in; 20 GRANTs.
        let per: std::collections::HashMap<_, _> = t.per_rpc().into_iter().collect();
        assert_eq!(per["DATA"], 3.0);
        assert_eq!(per["GRANT"], 0.5);
        let out: std::collections::HashMap<_, _> =
            t.sent_by_clients_per_rpc().into_iter().collect();
        assert_eq!(
            out["DATA"], 2.0,
            "80 request packets of 40 RPCs were the clients'"
        );
        assert_eq!(out["GRANT"], 0.0);
        // A summary without the counts, or with them in another shape, is refused.
        assert!(t.add(&json!({"rpcs": 1})).is_none());
        assert!(PacketTally::default().add(&json!({})).is_none());
    }

    #[test]
    fn client_io_is_summed_only_when_every_client_reports_it() {
        let client = |rpcs: u64, io: Option<u64>| {
            let mut c = json!({
                "rpcs": rpcs,
                "sent": {"DATA": rpcs},
                "received": {"DATA": rpcs},
            });
            if let Some(n) = io {
                c["io"] = json!({"send_calls": n, "wakeups": n / 2});
            }
            c
        };
        let mut t = PacketTally::default();
        t.add(&client(10, Some(30))).unwrap();
        t.add(&client(30, Some(50))).unwrap();
        let per: std::collections::HashMap<_, _> = t.io_per_rpc().unwrap().into_iter().collect();
        assert_eq!(per["send_calls"], 2.0);
        assert_eq!(per["wakeups"], 1.0);
        t.add(&client(10, None)).unwrap();
        assert!(t.io_per_rpc().is_none(), "a partial sum would mislead");
        let mut t = PacketTally::default();
        t.add(&client(10, None)).unwrap();
        t.add(&client(10, Some(4))).unwrap();
        assert!(t.io_per_rpc().is_none());
    }
}
