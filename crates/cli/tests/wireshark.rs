//! The Wireshark dissector (`wireshark/homa.lua`) against `homa dump`: `tshark` with the
//! dissector reads every stored capture, and each Homa packet it shows must be the packet
//! `homa dump --json` shows at the same place, every field equal.
//!
//! The captures: the Linux module's (raw IP protocol 146, `crates/dump/tests/data/captures`), this
//! project's runtime over UDP on loopback, with coalesced GSO datagrams
//! (`tests/data/runtime_captures`), each also cut to two snap lengths, and a capture
//! built here of packets a receiver must refuse, one per reason, beside packets that
//! carry this project's one-way and refusal marks. Over UDP the dissector is
//! checked twice: found by its port preference with the heuristic off, and by the
//! heuristic alone.
//!
//! Not compared: what Wireshark's IP layer handles itself (fragments, which it
//! reassembles where `homa dump` reports `ip_fragment`; frames shorter than their IP
//! length).
//!
//! The test installs nothing: without `tshark` on the PATH (or in `$HOMA_TSHARK`) it
//! passes after saying it was skipped. `.ci/run` installs tshark as root.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "wireshark/packets.rs"]
mod packets;
use packets::{ack, cutoffs, data, flagged, grant, homa, ipv4, udp};

/// The UDP port of the stored runtime captures' servers (also the dissector's default).
const UDP_PORT: u16 = 4000;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dissector() -> PathBuf {
    repo_root().join("wireshark/homa.lua")
}

/// The Linux module's captures: `$HOMA_CAPTURES_DIR`, or the copies in this repository.
fn module_captures_dir() -> PathBuf {
    match std::env::var_os("HOMA_CAPTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../dump/tests/data/captures"),
    }
}

fn runtime_captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runtime_captures")
}

fn pcaps_in(dir: &Path) -> Vec<PathBuf> {
    let mut pcaps: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    pcaps.sort();
    assert!(!pcaps.is_empty(), "no captures in {}", dir.display());
    pcaps
}

/// The tshark to run, or `None` (after saying so) when there is none.
fn tshark() -> Option<PathBuf> {
    let path =
        std::env::var_os("HOMA_TSHARK").map_or_else(|| PathBuf::from("tshark"), PathBuf::from);
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => Some(path),
        _ => {
            eprintln!(
                "skipped: no tshark ({} not found or not runnable), so wireshark/homa.lua is \
                 not checked. Install it (Debian/Ubuntu: apt-get install tshark) or set \
                 HOMA_TSHARK to one.",
                path.display()
            );
            None
        }
    }
}

// ---- What `homa dump` says ----

fn dump(file: &Path, udp_port: Option<u16>) -> Vec<Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_homa"));
    cmd.arg("dump").arg("--json");
    if let Some(port) = udp_port {
        cmd.args(["--udp-port", &port.to_string()]);
    }
    let out = cmd.arg(file).output().expect("run homa dump");
    assert!(
        out.status.success(),
        "homa dump {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("dump line {l:?}: {e}")))
        .collect()
}

// ---- What tshark says ----

/// One Homa packet as tshark shows it.
#[derive(Debug)]
struct Shown {
    /// The frame it came in.
    frame: u64,
    /// `frame.*`, `ip.*`, `ipv6.*` fields of that frame.
    outer: Vec<(String, String)>,
    /// Every `homa.*` field under this packet's tree, in tree order.
    homa: Vec<(String, String)>,
    /// This packet's part of the frame's Info column.
    info: String,
}

impl Shown {
    fn all(&self, key: &str) -> Vec<&str> {
        self.homa
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, key: &str) -> Option<&str> {
        let all = self.all(key);
        assert!(
            all.len() <= 1,
            "frame {}: {key} {} times: {self:?}",
            self.frame,
            all.len()
        );
        all.first().copied()
    }

    fn outer(&self, key: &str) -> Option<&str> {
        self.outer
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every string-valued field under `v` whose name starts with `prefix`, depth first.
fn collect(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k.starts_with(prefix) => out.push((k.clone(), s.clone())),
                    Value::Array(items) if k.starts_with(prefix) => {
                        for item in items {
                            match item {
                                Value::String(s) => out.push((k.clone(), s.clone())),
                                other => collect(other, prefix, out),
                            }
                        }
                    }
                    other => collect(other, prefix, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, prefix, out)),
        _ => {}
    }
}

/// tshark with the dissector over `file`, with `extra` arguments (preferences) and
/// `format` (what to print): its output, after checking it ran without a Lua error.
fn run_tshark(tshark: &Path, file: &Path, extra: &[&str], format: &[&str]) -> String {
    // A home of its own: no personal plugins (a copy of homa.lua installed there would be
    // loaded twice) and no personal preferences.
    let home = Scratch::new();
    let out = Command::new(tshark)
        .env("HOME", &home.0)
        .env("XDG_CONFIG_HOME", home.path(".config"))
        .arg("-X")
        .arg(format!("lua_script:{}", dissector().display()))
        .arg("-r")
        .arg(file)
        .args(extra)
        .args(format)
        .output()
        .expect("run tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark on {}: {stderr}",
        file.display()
    );
    // A Lua error does not make tshark fail: it prints it and goes on.
    for line in stderr.lines() {
        assert!(
            !line.to_lowercase().contains("lua") && !line.contains("rror"),
            "tshark on {}: {line}",
            file.display()
        );
    }
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Run tshark with the dissector over `file`, with extra arguments (preferences); the
/// Homa packets it shows, in order.
fn tshark_packets(tshark: &Path, file: &Path, extra: &[&str]) -> Vec<Shown> {
    let run = |format: &[&str]| run_tshark(tshark, file, extra, format);
    let text = run(&["-T", "json", "--no-duplicate-keys"]);
    // A Lua error in the dissector, or a read past the bytes it was given, shows in the
    // tree only.
    // (A `_ws.malformed` is also how an expert info of the Malformed group shows: those
    // are counted below.)
    for bad in ["_ws.lua.error", "_ws.short"] {
        assert!(
            !text.contains(bad),
            "tshark on {}: {bad} in its output",
            file.display()
        );
    }
    let json: Value = serde_json::from_str(&text).expect("tshark JSON");
    let infos = run(&[
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-e",
        "frame.number",
        "-e",
        "_ws.col.Info",
    ]);
    let info_of: std::collections::BTreeMap<u64, String> = infos
        .lines()
        .map(|l| {
            let (no, info) = l.split_once('\t').unwrap_or((l, ""));
            (no.parse().expect("frame number"), info.to_owned())
        })
        .collect();

    let mut shown = Vec::new();
    for frame in json.as_array().expect("array of frames") {
        let layers = &frame["_source"]["layers"];
        // Malformed: only the packets the dissector judged so (`homa.bad`), never an
        // exception.
        let mut found = Vec::new();
        collect(layers, "_ws.malformed", &mut found);
        let malformed = found.iter().filter(|(k, _)| k == "_ws.malformed").count();
        found.clear();
        collect(layers, "homa.bad", &mut found);
        assert_eq!(
            malformed,
            found.len(),
            "{}: Malformed Packet where the dissector found nothing wrong: {frame}",
            file.display()
        );
        let homa = match &layers["homa"] {
            Value::Null => continue,
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        let mut outer = Vec::new();
        for layer in ["frame", "ip", "ipv6"] {
            collect(&layers[layer], &format!("{layer}."), &mut outer);
        }
        let number: u64 = outer
            .iter()
            .find(|(k, _)| k == "frame.number")
            .expect("frame.number")
            .1
            .parse()
            .expect("frame number");
        let info = &info_of[&number];
        let parts: Vec<&str> = info.split(" ; ").collect();
        assert_eq!(
            parts.len(),
            homa.len(),
            "frame {number}: Info {info:?} vs {} packets",
            homa.len()
        );
        for (tree, part) in homa.iter().zip(parts) {
            let mut fields = Vec::new();
            collect(tree, "homa.", &mut fields);
            shown.push(Shown {
                frame: number,
                outer: outer.clone(),
                homa: fields,
                info: part.to_owned(),
            });
        }
    }
    shown
}

/// A directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "homa-wireshark-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---- The comparison ----

/// A number as tshark prints it: decimal, or `0x` hex.
fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

const TYPES: [(u64, &str, &str); 9] = [
    (0x10, "DATA", "data"),
    (0x11, "GRANT", "grant"),
    (0x12, "RESEND", "resend"),
    (0x13, "RPC_UNKNOWN", ""),
    (0x14, "BUSY", ""),
    (0x15, "CUTOFFS", "cutoffs"),
    (0x16, "FREEZE", ""),
    (0x17, "NEED_ACK", ""),
    (0x18, "ACK", "ack"),
];

/// Keys of the common header (and of the packet's place in its datagram): `homa.K`.
const COMMON: [&str; 15] = [
    "sport",
    "dport",
    "sender_id",
    "sequence",
    "doff",
    "flags",
    "window",
    "checksum",
    "urgent",
    "gso_index",
    "gso_count",
    "captured",
    "homa_len",
    "error",
    "reason",
];

/// Check one Homa packet, field by field, both ways: every key `homa dump` gives has its
/// field, and every field the dissector shows is checked.
fn compare(ctx: &str, no: u64, d: &Value, s: &Shown) {
    let obj = d.as_object().expect("dump object");
    let mut checked: Vec<String> = Vec::new();
    let check_num = |key: &str, field: &str, want: &Value| {
        let got = s
            .one(field)
            .unwrap_or_else(|| panic!("{ctx}: no {field} for {key}: {s:?}"));
        assert_eq!(Some(num(got)), want.as_u64(), "{ctx}: {key} ({field})");
    };
    let type_info = obj.get("type").map(|t| {
        let name = t.as_str().expect("type name");
        *TYPES
            .iter()
            .find(|(_, n, _)| *n == name)
            .unwrap_or_else(|| panic!("{ctx}: unknown type {name}"))
    });
    for (key, want) in obj {
        match key.as_str() {
            "no" => assert_eq!(want.as_u64(), Some(no), "{ctx}: numbering"),
            // Null when the capture hid where the packet ends (gso=1/?): not shown then.
            "payload_len" if want.is_null() => {
                assert_eq!(s.one("homa.data.payload_len"), None, "{ctx}: payload_len");
            }
            "gso_count" if want.is_null() => {
                assert_eq!(s.one("homa.gso_count"), None, "{ctx}: gso_count");
                assert!(s.info.starts_with("[1/?] "), "{ctx}: Info {:?}", s.info);
            }
            "ts" | "ts_rel" => {
                let field = if key == "ts" {
                    "frame.time_epoch"
                } else {
                    "frame.time_relative"
                };
                let got: f64 = s.outer(field).expect(field).parse().expect("time");
                let want = want.as_f64().expect("time");
                assert!((got - want).abs() < 2e-6, "{ctx}: {key} {got} vs {want}");
            }
            "src" | "dst" => {
                let got = s
                    .outer(&format!("ip.{key}"))
                    .or_else(|| s.outer(&format!("ipv6.{key}")))
                    .unwrap_or_else(|| panic!("{ctx}: no IP {key}"));
                let got: std::net::IpAddr = got.parse().expect("address");
                let want: std::net::IpAddr =
                    want.as_str().expect("address").parse().expect("address");
                assert_eq!(got, want, "{ctx}: {key}");
            }
            "tos" => {
                let got = s
                    .outer("ip.dsfield")
                    .or_else(|| s.outer("ipv6.tclass"))
                    .expect("tos");
                assert_eq!(Some(num(got)), want.as_u64(), "{ctx}: tos");
            }
            "iplen" => {
                let got = match s.outer("ip.len") {
                    Some(v4) => num(v4),
                    None => num(s.outer("ipv6.plen").expect("ipv6.plen")) + 40,
                };
                assert_eq!(Some(got), want.as_u64(), "{ctx}: iplen");
            }
            "type" => {
                let (code, name, _) = type_info.expect("type");
                assert_eq!(
                    num(s.one("homa.type").expect("homa.type")),
                    code,
                    "{ctx}: type"
                );
                // The dissector's name for it, in its Info line.
                assert!(
                    s.info.contains(&format!(" {name} id=")),
                    "{ctx}: Info {:?} does not name {name}",
                    s.info
                );
                checked.push("homa.type".into());
            }
            "mark" => {
                assert_eq!(s.one("homa.cutoffs.mark"), want.as_str(), "{ctx}: mark");
                let words = format!(" mark={}", want.as_str().expect("mark"));
                assert!(s.info.contains(&words), "{ctx}: Info {:?}", s.info);
                checked.push("homa.cutoffs.mark".into());
            }
            "ext_flags" if want != 0 => {
                check_num(key, "homa.data.ext_flags", want);
                let bits = want.as_u64().expect("flags");
                let mut words = Vec::new();
                for (bit, word) in [(1, "one_way"), (2, "ack_one_way")] {
                    if bits & bit != 0 {
                        words.push(word.to_string());
                    }
                }
                if bits & !3 != 0 {
                    words.push(format!("{:#04x}", bits & !3));
                }
                let words = format!(" ext_flags={}", words.join(","));
                assert!(s.info.contains(&words), "{ctx}: Info {:?}", s.info);
                checked.push("homa.data.ext_flags".into());
            }
            "error" | "reason" => {
                let field = if key == "error" {
                    "homa.error"
                } else {
                    "homa.reason"
                };
                assert_eq!(s.one(field), want.as_str(), "{ctx}: {key}");
                checked.push(field.into());
                if key == "reason" {
                    let reason = want.as_str().expect("reason");
                    assert!(
                        s.info.contains(&format!("ERROR({reason})")),
                        "{ctx}: Info {:?}",
                        s.info
                    );
                }
            }
            k if COMMON.contains(&k) => {
                let field = format!("homa.{k}");
                check_num(k, &field, want);
                checked.push(field);
            }
            "unsched_cutoffs" => {
                let got: Vec<u64> = s
                    .all("homa.cutoffs.unsched_cutoffs")
                    .into_iter()
                    .map(num)
                    .collect();
                let want: Vec<u64> = want
                    .as_array()
                    .expect("list")
                    .iter()
                    .map(|v| v.as_u64().expect("n"))
                    .collect();
                assert_eq!(got, want, "{ctx}: unsched_cutoffs");
                checked.push("homa.cutoffs.unsched_cutoffs".into());
            }
            "acks" => {
                let ids: Vec<u64> = s.all("homa.ack.client_id").into_iter().map(num).collect();
                let ports: Vec<u64> = s.all("homa.ack.server_port").into_iter().map(num).collect();
                let want_ids: Vec<u64> = want
                    .as_array()
                    .expect("acks")
                    .iter()
                    .map(|a| a["client_id"].as_u64().expect("id"))
                    .collect();
                let want_ports: Vec<u64> = want
                    .as_array()
                    .expect("acks")
                    .iter()
                    .map(|a| a["server_port"].as_u64().expect("port"))
                    .collect();
                assert_eq!((ids, ports), (want_ids, want_ports), "{ctx}: acks");
                checked.extend(["homa.ack.client_id".into(), "homa.ack.server_port".into()]);
            }
            k => {
                let (_, name, prefix) =
                    type_info.unwrap_or_else(|| panic!("{ctx}: {k} without a type"));
                assert!(!prefix.is_empty(), "{ctx}: {name} has no field {k}");
                let field = format!("homa.{prefix}.{k}");
                check_num(k, &field, want);
                checked.push(field);
            }
        }
    }
    // What the dissector shows beyond `homa dump`: the client's RPC id, and the payload
    // bytes the capture kept. Anything else is a field this test does not know.
    for (field, value) in &s.homa {
        match field.as_str() {
            f if checked.iter().any(|c| c == f) => {}
            "homa.rpc_id" => {
                let id = obj["sender_id"].as_u64().expect("sender_id");
                assert_eq!(num(value), id & !1, "{ctx}: rpc_id");
            }
            // The expert infos: an undecodable packet, a packet the capture cut.
            "homa.bad" => assert!(
                obj.contains_key("error") && obj["reason"] != "capture_truncated",
                "{ctx}: expert info {field}"
            ),
            "homa.header_cut" => {
                assert_eq!(
                    obj.get("reason"),
                    Some(&Value::from("capture_truncated")),
                    "{ctx}"
                )
            }
            "homa.cut" => assert!(obj.contains_key("captured"), "{ctx}: expert info {field}"),
            "homa.data.payload" => {
                let bytes = value.split(':').count() as u64;
                let homa_len = obj.get("homa_len").and_then(Value::as_u64);
                let captured = obj.get("captured").and_then(Value::as_u64);
                let payload_len = obj["payload_len"].as_u64();
                let expected = match (captured, homa_len, payload_len) {
                    (Some(c), Some(_), _) => c.saturating_sub(56),
                    (None, _, Some(p)) => p,
                    // Length unknown (gso=1/?): whatever was captured past the header.
                    (None, _, None) => bytes,
                    other => panic!("{ctx}: {other:?}"),
                };
                assert_eq!(bytes, expected, "{ctx}: payload bytes shown");
            }
            other => panic!("{ctx}: tshark shows {other}={value}, which this test does not check"),
        }
    }
}

/// tshark over `file` (with `extra` preferences) against `homa dump` (with `udp_port`).
fn check(tshark: &Path, file: &Path, udp_port: Option<u16>, extra: &[&str]) -> usize {
    let dumped = dump(file, udp_port);
    let shown = tshark_packets(tshark, file, extra);
    let name = format!("{} {extra:?}", file.display());
    for (i, (d, s)) in dumped.iter().zip(&shown).enumerate() {
        let ctx = format!("{name}: packet {} (frame {})", i + 1, s.frame);
        compare(&ctx, i as u64 + 1, d, s);
    }
    assert_eq!(
        shown.len(),
        dumped.len(),
        "{name}: packets shown by tshark vs homa dump"
    );
    dumped.len()
}

// ---- Captures made here ----

/// A copy of a classic pcap file, in `dir`, with every frame cut to `snap` bytes.
fn snapped(dir: &Scratch, file: &Path, snap: u32) -> PathBuf {
    let bytes = fs::read(file).expect("read pcap");
    let le = match &bytes[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => panic!("{}: not a classic pcap ({other:02x?})", file.display()),
    };
    let get = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let put = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut out = bytes[..24].to_vec();
    out[16..20].copy_from_slice(&put(snap));
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let incl = get(&bytes[at + 8..]) as usize;
        let keep = incl.min(snap as usize);
        out.extend_from_slice(&bytes[at..at + 8]);
        out.extend_from_slice(&put(keep as u32));
        out.extend_from_slice(&bytes[at + 12..at + 16]);
        out.extend_from_slice(&bytes[at + 16..at + 16 + keep]);
        at += 16 + incl;
    }
    let path = dir.path(&format!(
        "{}-s{snap}.pcap",
        file.file_stem().expect("name").to_string_lossy()
    ));
    fs::write(&path, out).expect("write pcap");
    path
}

/// A classic pcap, in `dir`, of raw IP frames (LINKTYPE_RAW), one millisecond apart.
fn write_pcap(dir: &Scratch, name: &str, frames: &[Vec<u8>]) -> PathBuf {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    let path = dir.path(name);
    fs::write(&path, out).expect("write pcap");
    path
}

/// Packets a receiver must refuse, one per reason, over raw IP and over UDP, between
/// good ones; and coalesced UDP datagrams, one cut short by a bad packet.
fn refused_packets(dir: &Scratch) -> PathBuf {
    const HOMA: u8 = 146;
    const UDP: u8 = 17;
    let (c, s) = (40_000, UDP_PORT);
    let mut unknown = grant(c, s, 1);
    unknown[11] = 0x42;
    let mut zero = data(c, s, 0, 100, 100);
    zero[28..32].copy_from_slice(&0u32.to_be_bytes());
    let too_long = data(c, s, 0, 100, 2_000_000);
    let past_end = data(c, s, 4_950, 100, 5_000);
    let truncated = data(c, s, 0, 100, 100)[..40].to_vec();
    let too_many = ack(c, s, 7, &[]);
    let short_grant = grant(c, s, 1)[..30].to_vec();
    let packets = [
        homa(0x16, c, s, 0, 1000, &[]), // FREEZE, which no stored capture holds
        unknown,
        zero,
        too_long,
        past_end,
        truncated,
        too_many,
        short_grant,
        ack(s, c, 2, &[(10, s), (12, s)]),
        // Valid, with this project's extensions: one-way DATA flags (bit 7 unknown),
        // CUTOFFS marks (a one-way query, refusals too long and never fitting).
        flagged(data(c, s, 0, 100, 100), 0x83),
        cutoffs(s, c, 0x4F57_4D51),
        cutoffs(s, c, 0x8000_0000 | 2_000_000),
        cutoffs(s, c, 0xC000_1388),
    ];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for p in &packets {
        frames.push(ipv4(HOMA, p));
        frames.push(ipv4(UDP, &udp(c, s, p)));
    }
    // Coalesced: three GRANTs; three whole short messages; a run of one message's
    // segments; a GRANT then a bad packet; DATA whose second piece is refused.
    let coalesced = [
        [grant(s, c, 1), grant(s, c, 2), grant(s, c, 3)].concat(),
        [
            data(c, s, 0, 100, 100),
            data(c, s, 0, 100, 100),
            data(c, s, 0, 100, 100),
        ]
        .concat(),
        [
            data(c, s, 0, 1000, 2500),
            data(c, s, 1000, 1000, 2500),
            data(c, s, 2000, 500, 2500),
        ]
        .concat(),
        [grant(s, c, 1), vec![0xff; 5]].concat(),
        [data(c, s, 0, 1000, 9000), data(c, s, 8_500, 1000, 9000)].concat(),
        // A GRANT-long piece of an ACK: truncated, whatever the bytes after it.
        [grant(s, c, 1), ack(s, c, 1, &[(10, s)])].concat(),
        // A run of segments, then a piece too short for a header. Cut at 288 bytes (below),
        // the capture ends inside the second segment.
        [
            data(c, s, 0, 144, 1000),
            data(c, s, 144, 144, 1000),
            vec![0xee; 10],
        ]
        .concat(),
        // Three segments, the third past the message's end, then more bytes: the error is
        // the third segment's own.
        [
            data(c, s, 0, 144, 300),
            data(c, s, 144, 144, 300),
            data(c, s, 288, 144, 300),
            vec![0; 100],
        ]
        .concat(),
    ];
    for p in &coalesced {
        frames.push(ipv4(UDP, &udp(c, s, p)));
    }
    write_pcap(dir, "refused.pcap", &frames)
}

// ---- The tests ----

#[test]
fn tshark_reads_the_module_captures_as_homa_dump_does() {
    let Some(tshark) = tshark() else { return };
    let dir = Scratch::new();
    let mut packets = 0;
    for pcap in pcaps_in(&module_captures_dir()) {
        packets += check(&tshark, &pcap, None, &[]);
        // Cut: every header kept (IPv4 over Ethernet), and DATA headers cut.
        for snap in [128, 80] {
            check(&tshark, &snapped(&dir, &pcap, snap), None, &[]);
        }
    }
    assert!(packets > 0);
}

#[test]
fn tshark_reads_the_runtime_udp_captures_as_homa_dump_does() {
    let Some(tshark) = tshark() else { return };
    let port = format!("homa.udp_port:{UDP_PORT}");
    let by_port = ["-o", &port, "-o", "homa.heuristic:FALSE"];
    let by_heuristic = ["-o", "homa.udp_port:0"];
    let dir = Scratch::new();
    let mut coalesced = 0;
    for pcap in pcaps_in(&runtime_captures_dir()) {
        for file in [
            pcap.clone(),
            snapped(&dir, &pcap, 128),
            snapped(&dir, &pcap, 90),
        ] {
            check(&tshark, &file, Some(UDP_PORT), &by_port);
            check(&tshark, &file, Some(UDP_PORT), &by_heuristic);
        }
        coalesced += dump(&pcap, Some(UDP_PORT))
            .iter()
            .filter(|d| d.get("gso_count").is_some())
            .count();
    }
    assert!(
        coalesced > 0,
        "the runtime captures hold no coalesced GSO datagram"
    );
}

#[test]
fn tshark_refuses_what_homa_dump_refuses() {
    let Some(tshark) = tshark() else { return };
    let dir = Scratch::new();
    let file = refused_packets(&dir);
    let dumped = dump(&file, Some(UDP_PORT));
    let mut reasons: Vec<&str> = dumped.iter().filter_map(|d| d["reason"].as_str()).collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(
        reasons,
        [
            "message_too_long",
            "segment_past_end",
            "too_many_acks",
            "truncated",
            "unknown_type",
            "zero_message_length"
        ]
    );
    let port = format!("homa.udp_port:{UDP_PORT}");
    check(
        &tshark,
        &file,
        Some(UDP_PORT),
        &["-o", &port, "-o", "homa.heuristic:FALSE"],
    );
    for snap in [20 + 8 + 60, 20 + 8 + 40, 288] {
        let cut = snapped(&dir, &file, snap);
        check(
            &tshark,
            &cut,
            Some(UDP_PORT),
            &["-o", &port, "-o", "homa.heuristic:FALSE"],
        );
    }
}

#[test]
fn the_heuristic_leaves_other_udp_alone() {
    let Some(tshark) = tshark() else { return };
    // A Homa packet whose ports are not the datagram's, a DNS query, and a datagram of
    // zeros: none is Homa. A Homa packet on a port with no preference: found.
    let mut dns = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    let frames = [
        ipv4(17, &udp(50_000, 6000, &grant(50_001, 6000, 1))),
        ipv4(17, &udp(50_000, 53, &dns)),
        ipv4(17, &udp(50_000, 6000, &[0; 100])),
        ipv4(17, &udp(50_000, 6000, &grant(50_000, 6000, 1))),
    ];
    let dir = Scratch::new();
    let file = write_pcap(&dir, "other.pcap", &frames);
    let shown = tshark_packets(&tshark, &file, &["-o", "homa.udp_port:0"]);
    let found: Vec<u64> = shown.iter().map(|s| s.frame).collect();
    assert_eq!(found, [4], "{shown:?}");
    // And reads that one as homa dump does, told the port.
    let file = write_pcap(&dir, "found.pcap", &frames[3..]);
    assert_eq!(
        check(&tshark, &file, Some(6000), &["-o", "homa.udp_port:0"]),
        1
    );
}

#[test]
fn moving_the_udp_port_gives_the_old_one_back() {
    let Some(tshark) = tshark() else { return };
    // An ICQ v5 datagram on 4000, the port Homa takes by default from ICQ's dissector.
    let mut icq = vec![5, 0];
    icq.resize(32, 0);
    let dir = Scratch::new();
    let file = write_pcap(&dir, "icq.pcap", &[ipv4(17, &udp(40_000, UDP_PORT, &icq))]);
    let protocols = |extra: &[&str]| {
        run_tshark(
            &tshark,
            &file,
            extra,
            &["-T", "fields", "-e", "frame.protocols"],
        )
        .trim()
        .to_string()
    };
    assert_eq!(protocols(&[]), "raw:ip:udp:homa_udp");
    for moved in ["homa.udp_port:0", "homa.udp_port:50051"] {
        assert_eq!(protocols(&["-o", moved]), "raw:ip:udp:icq", "{moved}");
    }
}

/// Makes `tests/data/runtime_captures/udp_loopback.pcap`: this project's runtime over
/// UDP on loopback, IPv4 and IPv6, a server on port 4000, captured with `dumpcap` (which
/// comes with tshark) as root:
/// `cargo test -p homa-cli --test wireshark -- --ignored --exact make_udp_capture`.
/// Short RPCs, a batch of them (coalesced GSO datagrams both ways), and 60,000-byte
/// messages with a 1500-byte MTU (unscheduled bytes, grants, GSO runs of DATA).
#[test]
#[ignore = "writes test data; needs dumpcap and root"]
fn make_udp_capture() {
    use homa::{Options, Socket};
    use std::io::BufRead;
    use std::time::Duration;

    let out = runtime_captures_dir().join("udp_loopback.pcap");
    let mut dumpcap = Command::new("dumpcap")
        .args([
            "-i",
            "lo",
            "-P",
            "-q",
            "-f",
            &format!("udp port {UDP_PORT}"),
            "-w",
        ])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dumpcap");
    let mut stderr = std::io::BufReader::new(dumpcap.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("Capturing on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("dumpcap stderr") > 0,
            "dumpcap ended"
        );
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut opts = Options {
        auto_mtu: false,
        ..Default::default()
    };
    opts.config.mtu = 1500;
    for ip in ["127.0.0.1", "[::1]"] {
        let addr: SocketAddr = format!("{ip}:{UDP_PORT}").parse().expect("address");
        let server = Socket::bind_with(addr, opts.clone()).expect("bind server");
        let serving = server.clone();
        let thread = std::thread::spawn(move || {
            let mut requests = Vec::new();
            while serving.recv_request_batch(&mut requests, 64).is_ok() {
                let mut replies = serving.batch();
                for request in requests.drain(..) {
                    let answer = request.to_vec();
                    replies.reply(&request, answer).expect("reply");
                }
            }
        });
        let client_addr: SocketAddr = format!("{ip}:0").parse().expect("address");
        let client = Socket::bind_with(client_addr, opts.clone()).expect("bind client");
        assert_eq!(
            client.call(addr, vec![1u8; 100]).expect("call"),
            vec![1u8; 100]
        );
        let mut batch = client.batch();
        let ids: Vec<_> = (0..16u8)
            .map(|i| batch.send_request(addr, vec![i; 100], 0).expect("send"))
            .collect();
        batch.send();
        for (i, id) in ids.into_iter().enumerate() {
            assert_eq!(client.recv_id(id).expect("response"), vec![i as u8; 100]);
        }
        let long: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(client.call(addr, long.clone()).expect("long call"), long);
        // Time for the last acks.
        std::thread::sleep(Duration::from_millis(50));
        server.shutdown();
        thread.join().expect("server thread");
    }
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dumpcap.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("stop dumpcap");
    assert!(dumpcap.wait().expect("dumpcap").success());
}
