//! The two output forms of a [`Record`]: a tcpdump-like text line and a JSON object.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;

use homa_wire::{tos_to_priority, RESEND_ALL};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

use crate::decode::{cutoffs_mark, ext_flag_words, DecodedBody};
use crate::record::Record;

/// JSON object fields in the order they are printed. (serde_json's `Map` sorts its keys,
/// which would put `ts` after `dport`; the lines are easier to read in header order.)
struct Fields(Vec<(&'static str, Value)>);

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Record {
    fn fields(&self) -> Fields {
        let mut f: Vec<(&'static str, Value)> = Vec::with_capacity(32);
        if let Some(no) = self.no {
            f.push(("no", json!(no)));
        }
        if let Some(ts) = self.ts {
            f.push(("ts", json!(ts.as_secs_f64())));
        }
        if let Some(rel) = self.ts_rel {
            f.push(("ts_rel", json!(rel.as_secs_f64())));
        }
        if let Some(ip) = &self.ip {
            f.push(("src", json!(ip.src.to_string())));
            f.push(("dst", json!(ip.dst.to_string())));
            f.push(("tos", json!(ip.tos)));
            f.push(("iplen", json!(ip.iplen)));
        }
        if let Some(gso) = self.gso {
            // null for an unknown count, as for the payload length below.
            f.push(("gso_index", json!(gso.index)));
            f.push(("gso_count", json!(gso.count)));
        }
        let d = match &self.outcome {
            Ok(d) => d,
            Err(e) => {
                let (sport, dport) = self.ports();
                if let Some(p) = sport {
                    f.push(("sport", json!(p)));
                }
                if let Some(p) = dport {
                    f.push(("dport", json!(p)));
                }
                f.push(("error", json!(e.to_string())));
                f.push(("reason", json!(e.reason())));
                return Fields(f);
            }
        };
        f.extend([
            ("type", json!(d.packet_type.name())),
            ("sport", json!(d.sport)),
            ("dport", json!(d.dport)),
            ("sender_id", json!(d.sender_id)),
            ("sequence", json!(d.sequence)),
            ("doff", json!(d.doff)),
            ("flags", json!(d.flags)),
            ("window", json!(d.window)),
            ("checksum", json!(d.checksum)),
            ("urgent", json!(d.urgent)),
        ]);
        match &d.body {
            DecodedBody::Data {
                message_length,
                incoming,
                ack_client_id,
                ack_server_port,
                cutoff_version,
                retransmit,
                offset,
                seg_offset,
                payload_len,
                ext_flags,
            } => f.extend([
                ("message_length", json!(message_length)),
                ("incoming", json!(incoming)),
                ("ack_client_id", json!(ack_client_id)),
                ("ack_server_port", json!(ack_server_port)),
                ("cutoff_version", json!(cutoff_version)),
                ("retransmit", json!(retransmit)),
                ("offset", json!(offset)),
                ("seg_offset", json!(seg_offset)),
                (
                    "payload_len",
                    json!(self.length_known().then_some(payload_len)),
                ),
                ("ext_flags", json!(ext_flags)),
            ]),
            // `priority` is the packet's field here; the IP-derived priority is never a
            // key (it is tos >> 5), so the name means one thing everywhere.
            DecodedBody::Grant { offset, priority } => {
                f.extend([("offset", json!(offset)), ("priority", json!(priority))])
            }
            DecodedBody::Resend {
                offset,
                length,
                priority,
            } => f.extend([
                ("offset", json!(offset)),
                ("length", json!(length)),
                ("priority", json!(priority)),
            ]),
            DecodedBody::Cutoffs {
                unsched_cutoffs,
                cutoff_version,
            } => {
                f.extend([
                    ("unsched_cutoffs", json!(unsched_cutoffs)),
                    ("cutoff_version", json!(cutoff_version)),
                ]);
                if let Some((mark, length)) = cutoffs_mark(unsched_cutoffs[0]) {
                    f.push(("mark", json!(mark)));
                    if let Some(length) = length {
                        f.push(("mark_length", json!(length)));
                    }
                }
            }
            DecodedBody::Ack { num_acks, acks } => {
                let acks: Vec<Value> = acks
                    .iter()
                    .map(|(client_id, server_port)| {
                        json!({"client_id": client_id, "server_port": server_port})
                    })
                    .collect();
                f.extend([("num_acks", json!(num_acks)), ("acks", Value::Array(acks))]);
            }
            DecodedBody::None => {}
        }
        if let Some(captured) = self.captured() {
            f.extend([("captured", json!(captured)), ("homa_len", json!(self.len))]);
        }
        Fields(f)
    }

    /// The record as a JSON object (keys as documented for `homa dump --json`).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields()
                .0
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    /// Write the record as one line of JSON, keys in header order.
    pub fn write_json(&self, out: &mut dyn io::Write) -> io::Result<()> {
        // serde_json hands back the writer's own io::Error, so a broken pipe stays one.
        serde_json::to_writer(&mut *out, &self.fields())?;
        out.write_all(b"\n")
    }

    /// The record as one text line (no newline):
    /// `no time src.sport > dst.dport: TYPE id=sender_id tos=0x..(pN) iplen=N fields...`,
    /// with `gso=i/n` after `iplen` for the i-th of the n packets of a coalesced datagram
    /// (`gso=1/?` and `bytes=A..?/M` when a cut capture hides where the first one ends),
    /// ending in `captured=N/M` when the capture kept only N of the packet's M Homa bytes.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(no) = self.no {
            let _ = write!(s, "{no:>5} ");
        }
        if let Some(rel) = self.ts_rel {
            let _ = write!(s, "{rel} ");
        }
        let (sport, dport) = self.ports();
        let (src, dst) = match &self.ip {
            Some(ip) => (Some(ip.src), Some(ip.dst)),
            None => (None, None),
        };
        let _ = write!(s, "{} > {}: ", endpoint(src, sport), endpoint(dst, dport));
        let ip_part = self.ip.map(|ip| {
            format!(
                " tos=0x{:02x}(p{}) iplen={}",
                ip.tos,
                tos_to_priority(ip.tos),
                ip.iplen
            )
        });
        let mut ip_part = ip_part.unwrap_or_default();
        // About the datagram, like iplen: which of the packets it held this is.
        if let Some(gso) = self.gso {
            let _ = match gso.count {
                Some(n) => write!(ip_part, " gso={}/{n}", gso.index),
                None => write!(ip_part, " gso={}/?", gso.index),
            };
        }
        let d = match &self.outcome {
            Ok(d) => d,
            Err(e) => {
                let _ = write!(s, "ERROR({}){ip_part}: {e}", e.reason());
                return s;
            }
        };
        let _ = write!(s, "{} id={}{ip_part}", d.packet_type, d.sender_id);
        match &d.body {
            DecodedBody::Data {
                message_length,
                incoming,
                ack_client_id,
                ack_server_port,
                cutoff_version,
                retransmit,
                offset,
                seg_offset,
                payload_len,
                ext_flags,
            } => {
                let end = u64::from(*offset) + *payload_len as u64;
                let end = match self.length_known() {
                    true => end.to_string(),
                    false => "?".to_owned(),
                };
                let _ = write!(
                    s,
                    " bytes={offset}..{end}/{message_length} incoming={incoming} \
                     cutoff_version={cutoff_version}"
                );
                // The fields below are usually at their default; show them when not.
                if *seg_offset != homa_wire::SEG_OFFSET_IN_SEQUENCE {
                    let _ = write!(s, " seg.offset={seg_offset}");
                }
                if *retransmit != 0 {
                    let _ = write!(s, " retransmit={retransmit}");
                }
                if *ack_client_id != 0 || *ack_server_port != 0 {
                    let _ = write!(s, " ack=({ack_client_id},{ack_server_port})");
                }
                if *ext_flags != 0 {
                    let _ = write!(s, " ext_flags={}", ext_flag_words(*ext_flags).join(","));
                }
            }
            DecodedBody::Grant { offset, priority } => {
                let _ = write!(s, " offset={offset} priority={priority}");
            }
            DecodedBody::Resend {
                offset,
                length,
                priority,
            } => {
                let _ = if *length == RESEND_ALL {
                    write!(s, " offset={offset} length=-1 priority={priority}")
                } else {
                    write!(s, " offset={offset} length={length} priority={priority}")
                };
            }
            DecodedBody::Cutoffs {
                unsched_cutoffs,
                cutoff_version,
            } => {
                let list: Vec<String> = unsched_cutoffs.iter().map(u32::to_string).collect();
                let _ = write!(
                    s,
                    " cutoffs={} cutoff_version={cutoff_version}",
                    list.join(",")
                );
                match cutoffs_mark(unsched_cutoffs[0]) {
                    Some((mark, Some(length))) => write!(s, " mark={mark}({length})"),
                    Some((mark, None)) => write!(s, " mark={mark}"),
                    None => Ok(()),
                }
                .ok();
            }
            DecodedBody::Ack { acks, .. } => {
                let list: Vec<String> = acks.iter().map(|(c, p)| format!("({c},{p})")).collect();
                let _ = write!(s, " acks=[{}]", list.join(","));
            }
            DecodedBody::None => {}
        }
        // Last, so that a cut packet's line reads like the whole packet's up to here.
        if let Some(captured) = self.captured() {
            let _ = write!(s, " captured={captured}/{}", self.len);
        }
        s
    }
}

/// `addr.port` as tcpdump writes it, or whichever half is known.
fn endpoint(addr: Option<IpAddr>, port: Option<u16>) -> String {
    match (addr, port) {
        (Some(a), Some(p)) => format!("{a}.{p}"),
        (Some(a), None) => a.to_string(),
        (None, Some(p)) => p.to_string(),
        (None, None) => "?".to_owned(),
    }
}
