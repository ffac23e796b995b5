//! Conformance: `homa dump` must decode every packet of the real Linux Homa captures exactly
//! as the reference decoding in each `X.txt` says, field by field.
//!
//! A `.txt` line looks like
//! `  3  0.007784 guest->host [kernel] tos=0xc0(prio 6) iplen=176 DATA  sport=4000 ... |
//! message_length=100 ... seg.offset=-1(0xffffffff) payload=100 (msg offset 0..100) ;
//! cksum(tcp-pseudo,proto6)=ok`. Every field on it is compared, and a field this test does
//! not know fails the test, so a richer `.txt` cannot pass unchecked.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use homa_dump::{decode_capture, decode_file, DumpOptions, Record};
use homa_wire::{checksum, PacketType};
use serde_json::Value;

/// One reference line, split into its parts.
#[derive(Debug)]
struct RefLine {
    line_no: usize,
    no: u64,
    time: f64,
    direction: String,
    tos: u64,
    prio: u64,
    iplen: u64,
    type_name: String,
    /// `key=value` fields of the common header and the type-specific header.
    fields: BTreeMap<String, String>,
    /// `payload=N (msg offset A..B)`.
    payload: Option<(u64, u64, u64)>,
    /// `acks=[{client_id=C server_port=P} ...]`.
    acks: Option<Vec<(u64, u64)>>,
    cksum_ok: bool,
}

/// A number as the `.txt` writes it: decimal, `0x` hex, or `-1(0xffffffff)`.
fn num(s: &str) -> u64 {
    if let Some(h) = s.strip_prefix("0x") {
        return u64::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {s:?}"));
    }
    if s == "-1" || s == "-1(0xffffffff)" {
        return 0xffff_ffff;
    }
    s.parse().unwrap_or_else(|_| panic!("bad number {s:?}"))
}

fn parse_line(line_no: usize, line: &str) -> RefLine {
    let (left, cksum) = line
        .split_once(" ; ")
        .unwrap_or_else(|| panic!("line {line_no}: no ' ; cksum' part: {line}"));
    let cksum_ok = match cksum.trim() {
        "cksum(tcp-pseudo,proto6)=ok" => true,
        "cksum(tcp-pseudo,proto6)=bad" => false,
        other => panic!("line {line_no}: unknown checksum verdict {other:?}"),
    };
    let (head, body) = match left.split_once(" | ") {
        Some((h, b)) => (h, b),
        None => (left, ""),
    };

    // Head: no time dir [origin] tos=0x..(prio N) iplen=N TYPE key=value...
    let tos_at = head.find("tos=").expect("tos");
    let prio_end = head[tos_at..].find(')').expect("tos ... )") + tos_at;
    let tos_text = &head[tos_at + 4..=prio_end]; // 0xc0(prio 6)
    let (tos, prio) = tos_text
        .strip_suffix(')')
        .and_then(|t| t.split_once("(prio "))
        .unwrap_or_else(|| panic!("line {line_no}: bad tos {tos_text:?}"));
    let mut before = head[..tos_at].split_whitespace();
    let no = num(before.next().expect("no"));
    let time: f64 = before.next().expect("time").parse().expect("time");
    let direction = before.next().expect("direction").to_owned();
    let origin = before.next().expect("origin");
    assert!(
        origin == "[kernel]" || origin == "[python]",
        "line {line_no}: origin {origin:?}"
    );
    assert!(before.next().is_none(), "line {line_no}: extra head column");

    let mut after = head[prio_end + 1..].split_whitespace();
    let iplen = num(after
        .next()
        .and_then(|t| t.strip_prefix("iplen="))
        .expect("iplen="));
    let type_name = after.next().expect("type").to_owned();
    let mut fields = BTreeMap::new();
    let mut add = |tok: &str| {
        let (k, v) = tok
            .split_once('=')
            .unwrap_or_else(|| panic!("line {line_no}: not key=value: {tok:?}"));
        assert!(
            fields.insert(k.to_owned(), v.to_owned()).is_none(),
            "line {line_no}: {k} twice"
        );
    };
    after.for_each(&mut add);

    // Body: take out the two multi-word forms, the rest is key=value.
    let mut body = body.to_owned();
    let mut payload = None;
    if let Some(at) = body.find("payload=") {
        let end = body[at..].find(')').expect("payload ... )") + at;
        let text = body[at..=end].to_owned();
        let (n, range) = text["payload=".len()..]
            .split_once(" (msg offset ")
            .unwrap_or_else(|| panic!("line {line_no}: bad payload {text:?}"));
        let (a, b) = range
            .strip_suffix(')')
            .and_then(|r| r.split_once(".."))
            .expect("A..B");
        payload = Some((num(n), num(a), num(b)));
        body.replace_range(at..=end, "");
    }
    let mut acks = None;
    if let Some(at) = body.find("acks=[") {
        let end = body[at..].find(']').expect("acks ... ]") + at;
        let inner = body[at + "acks=[".len()..end].to_owned();
        let list = inner
            .split('}')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let entry = entry.strip_prefix('{').expect("{");
                let mut c = None;
                let mut p = None;
                for kv in entry.split_whitespace() {
                    match kv.split_once('=') {
                        Some(("client_id", v)) => c = Some(num(v)),
                        Some(("server_port", v)) => p = Some(num(v)),
                        _ => panic!("line {line_no}: bad ack {kv:?}"),
                    }
                }
                (c.expect("client_id"), p.expect("server_port"))
            })
            .collect();
        acks = Some(list);
        body.replace_range(at..=end, "");
    }
    body.split_whitespace().for_each(&mut add);

    RefLine {
        line_no,
        no,
        time,
        direction,
        tos: num(tos),
        prio: num(prio),
        iplen,
        type_name,
        fields,
        payload,
        acks,
        cksum_ok,
    }
}

/// The `.txt` header names the two hosts: `# Guest 10.201.0.2 = ...; host 10.201.0.1 = ...`.
fn hosts(txt: &str) -> (IpAddr, IpAddr) {
    for line in txt.lines().filter(|l| l.starts_with('#')) {
        let guest = line.split("Guest ").nth(1);
        let host = line.split("host ").nth(1);
        if let (Some(g), Some(h)) = (guest, host) {
            let addr = |s: &str| -> Option<IpAddr> { s.split_whitespace().next()?.parse().ok() };
            if let (Some(g), Some(h)) = (addr(g), addr(h)) {
                return (g, h);
            }
        }
    }
    panic!("no '# Guest A = ...; host B = ...' line");
}

/// `# X.pcap: N Homa packets`.
fn declared_count(txt: &str, pcap_name: &str) -> Option<usize> {
    txt.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.strip_prefix(pcap_name))
        .filter_map(|l| l.strip_prefix(": "))
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
}

fn field(json: &Value, key: &str, ctx: &str) -> u64 {
    json.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{ctx}: JSON has no integer {key:?}: {json}"))
}

fn check_line(r: &RefLine, rec: &Record, guest: IpAddr, host: IpAddr, ctx: &str) {
    let json = rec.to_json();
    assert!(
        json.get("error").is_none(),
        "{ctx}: decode failed: {}",
        json["error"]
    );
    let eq = |key: &str, want: u64| {
        assert_eq!(field(&json, key, ctx), want, "{ctx}: {key}");
    };

    eq("no", r.no);
    let ts_rel = json["ts_rel"].as_f64().expect("ts_rel");
    assert!(
        (ts_rel - r.time).abs() <= 1e-6 + 1e-12,
        "{ctx}: time {ts_rel} vs {}",
        r.time
    );
    let (src, dst) = match r.direction.as_str() {
        "host->guest" => (host, guest),
        "guest->host" => (guest, host),
        d => panic!("{ctx}: direction {d:?}"),
    };
    assert_eq!(json["src"], src.to_string(), "{ctx}: src");
    assert_eq!(json["dst"], dst.to_string(), "{ctx}: dst");
    eq("tos", r.tos);
    assert_eq!(r.tos >> 5, r.prio, "{ctx}: the .txt's prio is tos>>5");
    assert_eq!(field(&json, "tos", ctx) >> 5, r.prio, "{ctx}: prio");
    eq("iplen", r.iplen);
    assert_eq!(json["type"], r.type_name.as_str(), "{ctx}: type");

    // Every key=value field, mapped to its JSON key.
    let packet_type = PacketType::ALL
        .into_iter()
        .find(|t| t.name() == r.type_name)
        .unwrap_or_else(|| panic!("{ctx}: unknown type {}", r.type_name));
    for (k, v) in &r.fields {
        match k.as_str() {
            "type" => assert_eq!(num(v), u64::from(packet_type.code()), "{ctx}: type code"),
            "sport" | "dport" | "sequence" | "doff" | "flags" | "window" | "checksum"
            | "urgent" | "sender_id" | "message_length" | "incoming" | "cutoff_version"
            | "retransmit" | "offset" | "length" | "priority" | "num_acks" => eq(k, num(v)),
            "ack.client_id" => eq("ack_client_id", num(v)),
            "ack.server_port" => eq("ack_server_port", num(v)),
            "seg.offset" => eq("seg_offset", num(v)),
            "cutoffs" => {
                let want: Vec<u64> = v.split(',').map(num).collect();
                let got: Vec<u64> = json["unsched_cutoffs"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{ctx}: no unsched_cutoffs"))
                    .iter()
                    .map(|x| x.as_u64().expect("integer cutoff"))
                    .collect();
                assert_eq!(got, want, "{ctx}: cutoffs");
            }
            other => panic!("{ctx}: the .txt has a field this test does not check: {other}"),
        }
    }

    if let Some((len, start, end)) = r.payload {
        eq("payload_len", len);
        // The resolved offset, whichever field the sender put it in.
        eq("offset", start);
        assert_eq!(start + len, end, "{ctx}: .txt msg offset range");
        // And the resolution rule itself: seg.offset unless -1, then sequence.
        let seg = field(&json, "seg_offset", ctx);
        let resolved = if seg == 0xffff_ffff {
            field(&json, "sequence", ctx)
        } else {
            seg
        };
        assert_eq!(resolved, start, "{ctx}: offset resolution");
    } else {
        assert!(
            json.get("payload_len").is_none(),
            "{ctx}: payload_len on non-DATA"
        );
    }
    if packet_type == PacketType::Data {
        assert!(r.payload.is_some(), "{ctx}: DATA line without payload=");
        // The Homa length is the IP length minus the IPv4 header (no options here).
        assert_eq!(
            rec.bytes.len() as u64,
            r.iplen - 20,
            "{ctx}: Homa length from the IP header"
        );
    }

    match &r.acks {
        Some(want) => {
            let got: Vec<(u64, u64)> = json["acks"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: no acks array"))
                .iter()
                .map(|a| {
                    (
                        a["client_id"].as_u64().unwrap(),
                        a["server_port"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(&got, want, "{ctx}: acks");
            eq("num_acks", want.len() as u64);
        }
        None => assert!(json.get("acks").is_none(), "{ctx}: acks on non-ACK"),
    }

    // The checksum the Linux module (or its NIC) computed, with the TCP pseudo-header.
    let (IpAddr::V4(s4), IpAddr::V4(d4)) = (src, dst) else {
        panic!("{ctx}: captures are IPv4");
    };
    let computed = checksum::ipv4(s4, d4, &rec.bytes);
    let sent = field(&json, "checksum", ctx) as u16;
    if r.cksum_ok {
        assert_eq!(computed, sent, "{ctx}: checksum");
    } else {
        assert_ne!(computed, sent, "{ctx}: the .txt says the checksum is bad");
    }
}

fn check_capture(pcap: &Path) -> usize {
    let name = pcap.file_name().unwrap().to_string_lossy().into_owned();
    let txt_path = pcap.with_extension("txt");
    let txt =
        fs::read_to_string(&txt_path).unwrap_or_else(|e| panic!("{}: {e}", txt_path.display()));
    let (guest, host) = hosts(&txt);

    let refs: Vec<RefLine> = txt
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| parse_line(i + 1, l))
        .collect();
    let (records, stats) =
        decode_file(pcap, &DumpOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));

    assert_eq!(
        records.len(),
        refs.len(),
        "{name}: decoded packets vs .txt lines"
    );
    if let Some(n) = declared_count(&txt, &name) {
        assert_eq!(
            records.len(),
            n,
            "{name}: the count the .txt header declares"
        );
    }
    assert_eq!(stats.errors, 0, "{name}: undecodable packets");
    assert_eq!(stats.homa as usize, records.len());

    for (r, rec) in refs.iter().zip(&records) {
        let ctx = format!("{name} line {} (packet {})", r.line_no, r.no);
        check_line(r, rec, guest, host, &ctx);
    }
    records.len()
}

/// The stored captures (`.pcap`), in name order; panics if there are none.
fn stored_pcaps() -> Vec<std::path::PathBuf> {
    let dir = common::captures_dir();
    let mut pcaps: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    pcaps.sort();
    assert!(!pcaps.is_empty(), "no .pcap files in {}", dir.display());
    pcaps
}

#[test]
fn every_capture_decodes_exactly_as_its_txt() {
    let pcaps = stored_pcaps();
    let mut total = 0;
    for pcap in &pcaps {
        total += check_capture(pcap);
    }
    // The table in tests/data/captures/README.md: 5 + 389 + 27 + 42 + 22 + 846.
    if pcaps.len() == 6 {
        assert_eq!(total, 1331);
    }
}

/// A classic pcap cut the way `tcpdump -s snaplen` writes it: each record keeps its first
/// `snaplen` bytes and its original length.
fn snap(pcap: &[u8], snaplen: usize) -> Vec<u8> {
    let le = match pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a classic pcap"),
    };
    let read = |at: usize| {
        let b: [u8; 4] = pcap[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let write = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut out = pcap[..24].to_vec();
    out[16..20].copy_from_slice(&write(snaplen as u32));
    let mut at = 24;
    while at < pcap.len() {
        let incl = read(at + 8) as usize;
        let keep = incl.min(snaplen);
        out.extend_from_slice(&pcap[at..at + 8]);
        out.extend_from_slice(&write(keep as u32));
        out.extend_from_slice(&pcap[at + 12..at + 16]);
        out.extend_from_slice(&pcap[at + 16..at + 16 + keep]);
        at += 16 + incl;
    }
    out
}

/// The real captures as `tcpdump -s 128 / 96 / 64` would have taken them: a packet whose
/// Homa header was kept decodes to exactly the whole packet's fields (payload_len too),
/// marked with what was captured; one whose header was cut gives an error line.
#[test]
fn snapped_captures_decode_every_header_they_kept() {
    let dir = common::captures_dir();
    let opts = DumpOptions::default();
    let (mut cut_data, mut cut_headers) = (0, 0);
    for name in [
        "grants.pcap",
        "guest_client.pcap",
        "resend.pcap",
        "short.pcap",
    ] {
        let whole = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (full, _) = decode_capture(&whole[..], &opts).unwrap();
        for snaplen in [128, 96, 64] {
            let ctx = format!("{name} -s {snaplen}");
            let (records, stats) = decode_capture(&snap(&whole, snaplen)[..], &opts)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(records.len(), full.len(), "{ctx}");
            let mut errors = 0;
            let mut cut = 0;
            for (w, r) in full.iter().zip(&records) {
                let ctx = format!("{ctx} packet {}", w.no.unwrap());
                let wj = w.to_json();
                let header_len = PacketType::ALL
                    .into_iter()
                    .find(|t| wj["type"] == t.name())
                    .unwrap()
                    .header_len();
                // Ethernet and an IPv4 header without options, as in every capture here.
                let kept = (snaplen - 14 - 20).min(w.bytes.len());
                let mut rj = r.to_json();
                if kept == w.bytes.len() {
                    assert_eq!(rj, wj, "{ctx}: kept whole");
                    assert_eq!(r.to_text(), w.to_text(), "{ctx}");
                } else if kept >= header_len {
                    cut += 1;
                    cut_data += usize::from(wj["type"] == "DATA");
                    let mark = format!(" captured={kept}/{}", w.bytes.len());
                    assert_eq!(r.to_text(), w.to_text() + &mark, "{ctx}");
                    let o = rj.as_object_mut().unwrap();
                    assert_eq!(o.remove("captured"), Some(Value::from(kept)), "{ctx}");
                    assert_eq!(o.remove("homa_len"), Some(Value::from(w.bytes.len())));
                    assert_eq!(rj, wj, "{ctx}: the header as in the whole capture");
                } else {
                    errors += 1;
                    assert_eq!(rj["reason"], "capture_truncated", "{ctx}: {rj}");
                    assert_eq!(rj["iplen"], wj["iplen"], "{ctx}");
                    let want = format!(
                        "capture truncated: {kept} of {} Homa bytes captured, fewer than the \
                         {header_len}-byte {} header",
                        w.bytes.len(),
                        wj["type"].as_str().unwrap()
                    );
                    assert_eq!(rj["error"], want.as_str(), "{ctx}");
                }
            }
            assert_eq!((stats.errors, stats.cut), (errors, cut), "{ctx}");
            cut_headers += errors;
        }
    }
    assert!(
        cut_data > 100,
        "the captures hold DATA worth cutting: {cut_data}"
    );
    assert!(cut_headers > 100, "and headers too: {cut_headers}");
}

#[test]
fn the_line_parser_reads_every_form() {
    let r = parse_line(
        1,
        "   3  0.007784 guest->host [kernel] tos=0xc0(prio 6) iplen=176 DATA        \
         sport=4000 dport=40000 sequence=0 type=0x10 doff=14 flags=0x06 window=0 \
         checksum=0x9f26 urgent=0xb97d sender_id=1001 | message_length=100 incoming=100 \
         ack.client_id=0 ack.server_port=0 cutoff_version=0 retransmit=0 \
         seg.offset=-1(0xffffffff) payload=100 (msg offset 0..100) ; \
         cksum(tcp-pseudo,proto6)=ok",
    );
    assert_eq!((r.no, r.tos, r.prio, r.iplen), (3, 0xc0, 6, 176));
    assert_eq!(r.type_name, "DATA");
    assert_eq!(num(&r.fields["seg.offset"]), 0xffff_ffff);
    assert_eq!(num(&r.fields["urgent"]), 0xb97d);
    assert_eq!(r.payload, Some((100, 0, 100)));
    // 10 common fields + 7 DATA fields; payload= is kept apart.
    assert_eq!(r.fields.len(), 17);

    let r = parse_line(
        5,
        "   5  0.012354 host->guest [python] tos=0xe0(prio 7) iplen=100 ACK         \
         sport=40000 dport=4000 sequence=0 type=0x18 doff=5 flags=0x06 window=0 \
         checksum=0x1d27 urgent=0xb97d sender_id=1000 | num_acks=1 \
         acks=[{client_id=1000 server_port=4000}] ; cksum(tcp-pseudo,proto6)=ok",
    );
    assert_eq!(r.acks, Some(vec![(1000, 4000)]));
    assert_eq!(r.fields["num_acks"], "1");
    assert!(!r.fields.contains_key("acks"));

    let txt = "# Guest 10.201.0.2 = Linux; host 10.201.0.1 = python raw-socket peer.";
    assert_eq!(
        hosts(txt),
        (
            IpAddr::V4(Ipv4Addr::new(10, 201, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(10, 201, 0, 1))
        )
    );
}

/// `homa dump` on damaged captures: real captures with random bytes flipped, runs
/// overwritten and tails cut off turn into records or an error, never a panic, in both
/// output formats. (The `dump` cargo-fuzz target in crates/dump/fuzz does this for as
/// long as it is left running.) Seeded: a failure names the capture and the seed.
#[test]
fn damaged_captures_decode_or_fail_cleanly() {
    use rand::{Rng, SeedableRng};
    let pcaps = stored_pcaps();
    let mut decoded = 0;
    for pcap in &pcaps {
        let original = fs::read(pcap).unwrap();
        for seed in 0..200u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut bytes = original.clone();
            for _ in 0..rng.gen_range(1..16) {
                let at = rng.gen_range(0..bytes.len());
                match rng.gen_range(0..3) {
                    0 => bytes[at] ^= 1 << rng.gen_range(0..8),
                    1 => {
                        let end = (at + rng.gen_range(1..64)).min(bytes.len());
                        rng.fill(&mut bytes[at..end]);
                    }
                    _ => bytes[at] = [0, 0xFF, 0x7F, 0x80][rng.gen_range(0..4)],
                }
            }
            if rng.gen_bool(0.3) {
                bytes.truncate(rng.gen_range(0..bytes.len()));
            }
            let outcome = std::panic::catch_unwind(|| {
                let mut records = 0;
                for udp_port in [None, Some(4_000)] {
                    let opts = DumpOptions {
                        udp_port,
                        ..DumpOptions::default()
                    };
                    if let Ok((rs, _)) = decode_capture(&bytes[..], &opts) {
                        for r in &rs {
                            let _ = r.to_text();
                            let _ = r.to_json();
                        }
                        records += rs.len();
                    }
                }
                records
            });
            match outcome {
                Ok(n) => decoded += n,
                Err(_) => panic!(
                    "{}: damaged with seed {seed}: dump panicked",
                    pcap.display()
                ),
            }
        }
    }
    // Most damage leaves most packets readable: the decoder really ran.
    assert!(decoded > 1_000, "only {decoded} records decoded in all");
}
