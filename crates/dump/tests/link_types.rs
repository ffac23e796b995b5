//! `homa dump` on synthetic captures: every supported link type, IPv6 extension headers,
//! UDP encapsulation (coalesced GSO datagrams too), pcap and pcapng flavours, and the
//! packets that must give error lines instead of wrong decodes. Homa bytes are built with
//! `homa_wire::Repr`; the link, IP and UDP headers by hand, so the test does not share
//! parsing code with the decoder.

mod frames;

use std::net::IpAddr;

use frames::*;
use homa_dump::{decode_capture, CaptureError, DumpOptions, Record, Stats};
use homa_wire::{AckEntry, Acks, Body, Cutoffs, Repr, Resend};
use serde_json::Value;

fn decode(bytes: &[u8], opts: DumpOptions) -> (Vec<Record>, Stats) {
    decode_capture(bytes, &opts).unwrap_or_else(|e| panic!("decode failed: {e}"))
}

fn decode_one(bytes: &[u8], opts: DumpOptions) -> Value {
    let (records, _) = decode(bytes, opts);
    assert_eq!(records.len(), 1, "expected one Homa packet");
    records[0].to_json()
}

fn udp_opts(port: u16) -> DumpOptions {
    DumpOptions {
        udp_port: Some(port),
        ..DumpOptions::default()
    }
}

/// The JSON of a decoded 100-byte DATA from `data(0, 100, 100)`.
fn assert_data_100(j: &Value, src: IpAddr, dst: IpAddr, tos: u8) {
    assert!(j.get("error").is_none(), "decode failed: {j}");
    assert_eq!(j["type"], "DATA");
    assert_eq!(j["src"], src.to_string());
    assert_eq!(j["dst"], dst.to_string());
    assert_eq!(j["tos"], tos);
    assert_eq!(j["sport"], 40000);
    assert_eq!(j["dport"], 4000);
    assert_eq!(j["sender_id"], 1000);
    assert_eq!(j["message_length"], 100);
    assert_eq!(j["payload_len"], 100);
    assert_eq!(j["offset"], 0);
    assert_eq!(j["seg_offset"], 0xffff_ffffu32);
    assert_eq!(j["ack_client_id"], 998);
    assert_eq!(j["ack_server_port"], 4000);
    assert_eq!(j["cutoff_version"], 3);
    assert_eq!(j["doff"], 14);
    assert_eq!(j["flags"], 6);
    assert_eq!(j["urgent"], 0xb97d);
}

fn v4() -> (IpAddr, IpAddr) {
    (SRC4.into(), DST4.into())
}
fn v6() -> (IpAddr, IpAddr) {
    (SRC6.into(), DST6.into())
}

// ---- tests ----

#[test]
fn ethernet_padding_is_not_homa_payload() {
    // A trailer (padding, FCS) after the IP packet must not become DATA payload: the Homa
    // length comes from the IP header.
    let mut frame = ethernet(0x0800, &ipv4(HOMA, 0xc0, &data(0, 100, 100)));
    frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0]);
    let (s, d) = v4();
    let j = decode_one(&pcap(1, &[f(1, 0, frame)], false), DumpOptions::default());
    assert_data_100(&j, s, d, 0xc0);
    assert_eq!(j["iplen"], 20 + 56 + 100);
}

#[test]
fn ethernet_with_vlan_tags() {
    let ip = ipv4(HOMA, 0xc0, &data(0, 100, 100));
    let (tpid, tagged) = vlan(0x8100, 42, 0x0800, &ip);
    let single = ethernet(tpid, &tagged);
    let (inner_tpid, inner) = vlan(0x8100, 7, 0x0800, &ip);
    let (outer_tpid, outer) = vlan(0x88a8, 100, inner_tpid, &inner);
    let double = ethernet(outer_tpid, &outer);
    let (records, stats) = decode(
        &pcap(1, &[f(1, 0, single), f(1, 1, double)], false),
        DumpOptions::default(),
    );
    assert_eq!(records.len(), 2, "{stats:?}");
    let (s, d) = v4();
    for r in &records {
        assert_data_100(&r.to_json(), s, d, 0xc0);
    }
}

#[test]
fn raw_ip_link_types() {
    let (s4, d4) = v4();
    let (s6, d6) = v6();
    for link in [101, 12, 14, 228] {
        let file = pcap(
            link,
            &[f(1, 0, ipv4(HOMA, 0xa0, &data(0, 100, 100)))],
            false,
        );
        assert_data_100(&decode_one(&file, DumpOptions::default()), s4, d4, 0xa0);
    }
    for link in [101, 12, 14, 229] {
        let file = pcap(
            link,
            &[f(1, 0, ipv6(HOMA, 0x80, &[], &data(0, 100, 100)))],
            false,
        );
        let j = decode_one(&file, DumpOptions::default());
        assert_data_100(&j, s6, d6, 0x80);
        assert_eq!(j["iplen"], 40 + 156);
    }
}

#[test]
fn linux_cooked_sll_and_sll2() {
    let (s4, d4) = v4();
    let (s6, d6) = v6();
    let v4_data = ipv4(HOMA, 0xc0, &data(0, 100, 100));
    let v6_data = ipv6(HOMA, 0xe0, &[], &data(0, 100, 100));
    let frames = [
        (113, sll(0x0800, &v4_data), s4, d4, 0xc0),
        (113, sll(0x86dd, &v6_data), s6, d6, 0xe0),
        (276, sll2(0x0800, &v4_data), s4, d4, 0xc0),
        (276, sll2(0x86dd, &v6_data), s6, d6, 0xe0),
    ];
    for (link, frame, s, d, tos) in frames {
        let j = decode_one(
            &pcap(link, &[f(1, 0, frame)], false),
            DumpOptions::default(),
        );
        assert_data_100(&j, s, d, tos);
    }
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let (s, d) = v6();
    let packet = ipv6(HOMA, 0xc0, &[0, 43, 60], &data(0, 100, 100));
    let frame = ethernet(0x86dd, &packet);
    let j = decode_one(&pcap(1, &[f(1, 0, frame)], false), DumpOptions::default());
    assert_data_100(&j, s, d, 0xc0);
    assert_eq!(j["iplen"], 40 + 24 + 156);
}

#[test]
fn udp_encapsulation_needs_the_port() {
    let (s4, d4) = v4();
    let (s6, d6) = v6();
    let homa = data(0, 100, 100);
    let frames = vec![
        // Port as destination, then as source; IPv4 and IPv6.
        f(
            1,
            0,
            ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(50000, 4444, &homa))),
        ),
        f(
            1,
            1,
            ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(4444, 50000, &homa))),
        ),
        f(
            1,
            2,
            ethernet(0x86dd, &ipv6(UDP, 0xc0, &[0], &udp(50000, 4444, &homa))),
        ),
        // Another port: not Homa.
        f(
            1,
            3,
            ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(53, 53, &homa))),
        ),
    ];
    let file = pcap(1, &frames, false);

    let (records, stats) = decode(&file, udp_opts(4444));
    assert_eq!(records.len(), 3);
    assert_eq!(stats.other, 1);
    assert_data_100(&records[0].to_json(), s4, d4, 0xc0);
    assert_data_100(&records[1].to_json(), s4, d4, 0xc0);
    assert_data_100(&records[2].to_json(), s6, d6, 0xc0);
    assert_eq!(records[0].to_json()["iplen"], 20 + 8 + 156);

    // Without --udp-port, UDP is never Homa.
    let (records, stats) = decode(&file, DumpOptions::default());
    assert!(records.is_empty());
    assert_eq!(stats.other, 4);
}

#[test]
fn empty_datagrams_on_the_port_are_wake_ups_not_errors() {
    let homa = data(0, 100, 100);
    let frames = vec![
        f(
            1,
            0,
            ethernet(0x0800, &ipv4(UDP, 0, &udp(50001, 4444, &[]))),
        ),
        f(
            1,
            1,
            ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(50000, 4444, &homa))),
        ),
        f(
            1,
            2,
            ethernet(0x86dd, &ipv6(UDP, 0, &[], &udp(50001, 4444, &[]))),
        ),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), udp_opts(4444));
    assert_eq!(records.len(), 1);
    assert_eq!((stats.homa, stats.errors, stats.empty), (1, 0, 2));
    let summary = stats.summary().expect("skipped datagrams are reported");
    assert!(summary.contains("2 empty datagrams skipped"), "{summary}");
}

#[test]
fn other_packets_are_skipped_and_numbering_counts_homa_only() {
    let arp = ethernet(0x0806, &[0u8; 28]);
    let tcp = ethernet(0x0800, &ipv4(TCP, 0, &[0u8; 20]));
    let homa1 = ethernet(0x0800, &ipv4(HOMA, 0xe0, &need_ack()));
    let homa2 = ethernet(0x0800, &ipv4(HOMA, 0xe0, &grant()));
    let file = pcap(
        1,
        &[
            f(100, 0, arp),
            f(100, 250, homa1),
            f(100, 500, tcp),
            f(101, 0, homa2),
        ],
        false,
    );
    let (records, stats) = decode(&file, DumpOptions::default());
    assert_eq!(records.len(), 2);
    assert_eq!(stats.homa, 2);
    assert_eq!(stats.other, 2);
    assert_eq!(stats.frames, 4);
    let a = records[0].to_json();
    let b = records[1].to_json();
    assert_eq!((a["no"].as_u64(), b["no"].as_u64()), (Some(1), Some(2)));
    assert_eq!(a["type"], "NEED_ACK");
    assert_eq!(b["type"], "GRANT");
    // Relative time counts from the first frame of the file, the ARP.
    assert_eq!(a["ts_rel"], 0.00025);
    assert_eq!(b["ts_rel"], 1.0);
    assert_eq!(a["ts"], 100.00025);
    // GRANT's `priority` is the packet's field, not tos >> 5 (which would be 7).
    assert_eq!(b["priority"], 3);
    assert_eq!(b["offset"], 50_000);
    assert!(a.get("priority").is_none());
    assert_eq!(
        records[1].to_text(),
        "    2 1.000000 10.0.0.1.40000 > 10.0.0.2.4000: GRANT id=1000 tos=0xe0(p7) iplen=53 \
         offset=50000 priority=3"
    );
    let summary = stats.summary().expect("skipped frames are reported");
    assert!(summary.contains("2 other packets skipped"), "{summary}");
}

#[test]
fn pcap_nanosecond_big_endian() {
    let frames = [
        f(7, 999_999_999, ipv4(HOMA, 0xe0, &need_ack())),
        f(8, 1, ipv4(HOMA, 0xe0, &need_ack())),
    ];
    let (records, _) = decode(&pcap(101, &frames, true), DumpOptions::default());
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].ts.unwrap().to_string(), "7.999999999");
    assert_eq!(records[1].ts_rel.unwrap().to_string(), "0.000000002");
    assert_eq!(records[1].to_json()["ts_rel"], 2e-9);
}

#[test]
fn pcapng_interfaces_and_resolutions() {
    let file = pcapng(
        &[(1, None), (101, Some(9)), (276, Some(3))],
        &[
            // Interface 0: no if_tsresol, so microseconds (pcap-file alone would read ns).
            (
                0,
                1_000_000_500,
                ethernet(0x0800, &ipv4(HOMA, 0xe0, &need_ack())),
            ),
            // Interface 1: nanoseconds, raw IPv6.
            (1, 1_000_001_000_123, ipv6(HOMA, 0xe0, &[], &grant())),
            // Interface 2: milliseconds, SLL2.
            (
                2,
                1_000_002,
                sll2(0x0800, &ipv4(HOMA, 0xc0, &data(0, 100, 100))),
            ),
        ],
    );
    let (records, _) = decode(&file, DumpOptions::default());
    assert_eq!(records.len(), 3);
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    assert_eq!(j[0]["type"], "NEED_ACK");
    assert_eq!(records[0].ts.unwrap().to_string(), "1000.000500");
    assert_eq!(j[1]["type"], "GRANT");
    assert_eq!(j[1]["src"], SRC6.to_string());
    assert_eq!(records[1].ts.unwrap().to_string(), "1000.001000123");
    assert_eq!(records[1].ts_rel.unwrap().to_string(), "0.000500123");
    assert_eq!(j[1]["ts_rel"], 0.000500123);
    let (s, d) = v4();
    assert_data_100(&j[2], s, d, 0xc0);
    // Millisecond ticks justify three decimals.
    assert_eq!(records[2].ts.unwrap().to_string(), "1000.002");
}

#[test]
fn undecodable_homa_packets_give_error_lines_and_the_dump_goes_on() {
    let mut unknown_type = need_ack();
    unknown_type[11] = 0x42;
    let huge = data(0, 100, 100);
    let mut too_long = huge.clone();
    too_long[28..32].copy_from_slice(&2_000_000u32.to_be_bytes());
    let mut fragment = ipv4(HOMA, 0xc0, &data(0, 100, 100));
    fragment[6] = 0x20; // more fragments
    let frames = vec![
        // 1: 10 bytes of Homa: the header is cut short.
        f(1, 0, ethernet(0x0800, &ipv4(HOMA, 0xe0, &need_ack()[..10]))),
        // 2: a type byte no Homa packet has.
        f(1, 1, ethernet(0x0800, &ipv4(HOMA, 0xe0, &unknown_type))),
        // 3: message longer than the maximum.
        f(1, 2, ethernet(0x0800, &ipv4(HOMA, 0xc0, &too_long))),
        // 4: an IP fragment.
        f(1, 3, ethernet(0x0800, &fragment)),
        // 5: a good packet after all that.
        f(1, 4, ethernet(0x0800, &ipv4(HOMA, 0xe0, &grant()))),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), DumpOptions::default());
    assert_eq!(records.len(), 5);
    assert_eq!(stats.errors, 4);
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();

    assert_eq!(j[0]["reason"], "truncated");
    assert_eq!(
        j[0]["error"],
        "truncated: packet needs 28 header bytes, got 10"
    );
    assert_eq!(j[0]["sport"], 40000);
    assert_eq!(j[0]["dport"], 4000);
    assert_eq!(j[0]["src"], "10.0.0.1");
    assert_eq!(j[0]["no"], 1);
    assert!(j[0]["ts"].is_f64());
    assert!(j[0].get("type").is_none());

    assert_eq!(j[1]["reason"], "unknown_type");
    assert_eq!(j[1]["error"], "unknown packet type 0x42");

    assert_eq!(j[2]["reason"], "message_too_long");
    assert_eq!(
        j[2]["error"],
        "DATA message_length 2000000 exceeds the maximum 1000000"
    );

    assert_eq!(j[3]["reason"], "ip_fragment");

    assert_eq!(j[4]["type"], "GRANT");
    assert_eq!(j[4]["no"], 5);

    assert!(
        records[1]
            .to_text()
            .ends_with("ERROR(unknown_type) tos=0xe0(p7) iplen=48: unknown packet type 0x42"),
        "{}",
        records[1].to_text()
    );

    // --max-message-length raises the limit.
    let file = pcap(
        1,
        &[f(1, 0, ethernet(0x0800, &ipv4(HOMA, 0xc0, &too_long)))],
        false,
    );
    let opts = DumpOptions {
        max_message_length: 2_000_000,
        ..DumpOptions::default()
    };
    assert_eq!(decode_one(&file, opts)["message_length"], 2_000_000);
}

/// The first `keep` bytes of `frame`, as a capture with a snap length of `keep` records
/// it: the original length stays the frame's.
fn snapped(secs: u32, frac: u32, frame: &[u8], keep: usize) -> F {
    F {
        secs,
        frac,
        orig_len: frame.len() as u32,
        data: frame[..keep.min(frame.len())].to_vec(),
    }
}

#[test]
fn snapped_data_shows_its_header_and_the_cut() {
    // `tcpdump -s 96` on a 14 + 20 + 156 byte frame: the 56-byte DATA header and 6 of the
    // 100 payload bytes are kept.
    let full = ethernet(0x0800, &ipv4(HOMA, 0xc0, &data(0, 100, 100)));
    let file = pcap(1, &[f(1, 0, full.clone()), snapped(1, 1, &full, 96)], false);
    let (records, stats) = decode(&file, DumpOptions::default());
    assert_eq!(records.len(), 2);
    assert_eq!((stats.errors, stats.cut), (0, 1));
    let (whole, cut) = (&records[0], &records[1]);
    let j = cut.to_json();
    let (s, d) = v4();
    assert_data_100(&j, s, d, 0xc0);
    assert_eq!(j["iplen"], 176);
    assert_eq!(j["captured"], 62);
    assert_eq!(j["homa_len"], 156);
    // Every other field as the whole packet's (numbering and time aside).
    let mut j = j.as_object().unwrap().clone();
    let mut w = whole.to_json().as_object().unwrap().clone();
    for k in ["no", "ts", "ts_rel"] {
        j.remove(k);
        w.remove(k);
    }
    assert!(w.get("captured").is_none(), "a whole packet has no mark");
    j.remove("captured");
    j.remove("homa_len");
    assert_eq!(j, w);
    assert_eq!(cut.captured(), Some(62));
    assert_eq!(whole.captured(), None);

    // The text line is the whole packet's, with the mark at the end.
    assert_eq!(
        whole.to_text(),
        "    1 0.000000 10.0.0.1.40000 > 10.0.0.2.4000: DATA id=1000 tos=0xc0(p6) iplen=176 \
         bytes=0..100/100 incoming=100 cutoff_version=3 ack=(998,4000)"
    );
    assert_eq!(
        cut.to_text(),
        "    2 0.000001 10.0.0.1.40000 > 10.0.0.2.4000: DATA id=1000 tos=0xc0(p6) iplen=176 \
         bytes=0..100/100 incoming=100 cutoff_version=3 ack=(998,4000) captured=62/156"
    );
    let summary = stats.summary().expect("a cut capture is worth a word");
    assert!(
        summary.ends_with("1 cut short by the capture's snap length (headers decoded)"),
        "{summary}"
    );
}

#[test]
fn snapped_data_over_udp_and_ipv6() {
    // The Homa length comes from the IP length less every header before Homa: IPv6
    // extension headers, UDP.
    let homa = data(0, 100, 100);
    let v6_frame = ethernet(0x86dd, &ipv6(HOMA, 0xc0, &[0, 60], &homa));
    let udp4 = ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(50000, 4444, &homa)));
    let udp6 = sll2(0x86dd, &ipv6(UDP, 0xc0, &[], &udp(4444, 50000, &homa)));
    let file = pcap(
        1,
        &[
            snapped(1, 0, &v6_frame, 14 + 40 + 16 + 56),
            snapped(1, 1, &udp4, 14 + 20 + 8 + 60),
        ],
        false,
    );
    let (records, stats) = decode(&file, udp_opts(4444));
    assert_eq!((records.len(), stats.errors, stats.cut), (2, 0, 2));
    let (s6, d6) = v6();
    let (s4, d4) = v4();
    let j = records[0].to_json();
    assert_data_100(&j, s6, d6, 0xc0);
    assert_eq!(
        (j["captured"].as_u64(), j["homa_len"].as_u64()),
        (Some(56), Some(156))
    );
    let j = records[1].to_json();
    assert_data_100(&j, s4, d4, 0xc0);
    assert_eq!(
        (j["captured"].as_u64(), j["homa_len"].as_u64()),
        (Some(60), Some(156))
    );

    let file = pcap(276, &[snapped(1, 0, &udp6, 20 + 40 + 8 + 70)], false);
    let j = decode_one(&file, udp_opts(4444));
    assert_data_100(&j, s6, d6, 0xc0);
    assert_eq!(
        (j["captured"].as_u64(), j["homa_len"].as_u64()),
        (Some(70), Some(156))
    );
}

#[test]
fn snapped_control_packets_decode_when_their_header_fits() {
    // A GRANT is all header: a snap length that keeps it decodes it with no mark.
    let grant = ethernet(0x0800, &ipv4(HOMA, 0xe0, &grant()));
    let j = decode_one(
        &pcap(1, &[snapped(1, 0, &grant, 96)], false),
        DumpOptions::default(),
    );
    assert_eq!(j["type"], "GRANT");
    assert!(j.get("captured").is_none(), "{j}");
}

#[test]
fn a_capture_cut_inside_a_header_gives_an_error_line_not_a_panic() {
    let full = ethernet(0x0800, &ipv4(HOMA, 0xc0, &data(0, 100, 100)));
    let frames = [
        // 1: into the DATA header, past the common header.
        snapped(1, 0, &full, 14 + 20 + 40),
        // 2: into the common header, before the type byte.
        snapped(1, 1, &full, 14 + 20 + 3),
        // 3: no Homa bytes at all.
        snapped(1, 2, &full, 14 + 20),
        // 4: into the IP header: nothing says it is Homa.
        snapped(1, 3, &full, 14 + 10),
        // 5: a good packet after all that.
        f(1, 4, ethernet(0x0800, &ipv4(HOMA, 0xe0, &need_ack()))),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), DumpOptions::default());
    assert_eq!(records.len(), 4);
    assert_eq!((stats.errors, stats.cut, stats.unreadable), (3, 0, 1));
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    assert_eq!(j[0]["reason"], "capture_truncated");
    assert_eq!(
        j[0]["error"],
        "capture truncated: 40 of 156 Homa bytes captured, fewer than the 56-byte DATA header"
    );
    assert_eq!(j[0]["iplen"], 176);
    assert_eq!(
        (j[0]["sport"].as_u64(), j[0]["dport"].as_u64()),
        (Some(40000), Some(4000))
    );
    assert!(j[0].get("type").is_none() && j[0].get("captured").is_none());
    assert_eq!(j[1]["reason"], "capture_truncated");
    assert_eq!(
        j[1]["error"],
        "capture truncated: 3 of 156 Homa bytes captured, fewer than the 28-byte packet header"
    );
    assert_eq!(j[1]["sport"], 40000);
    assert!(j[1].get("dport").is_none(), "only 3 Homa bytes: {}", j[1]);
    assert_eq!(j[2]["reason"], "capture_truncated");
    assert!(j[2]["error"]
        .as_str()
        .unwrap()
        .starts_with("capture truncated: 0 of 156 "));
    assert_eq!(j[3]["type"], "NEED_ACK");
    assert_eq!(j[3]["no"], 4);
    assert!(
        records[0].to_text().ends_with(
            "10.0.0.1.40000 > 10.0.0.2.4000: ERROR(capture_truncated) tos=0xc0(p6) iplen=176: \
             capture truncated: 40 of 156 Homa bytes captured, fewer than the 56-byte DATA \
             header"
        ),
        "{}",
        records[0].to_text()
    );
    let summary = stats.summary().unwrap();
    assert!(summary.contains("(3 undecodable)"), "{summary}");
    assert!(summary.contains("1 unreadable frames skipped"), "{summary}");
}

#[test]
fn a_capture_cut_inside_the_udp_or_ipv6_extension_headers() {
    let homa = data(0, 100, 100);
    let ours = ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(50000, 4444, &homa)));
    let theirs = ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(53, 53, &homa)));
    let v6_frame = ethernet(0x86dd, &ipv6(HOMA, 0xc0, &[0, 60], &homa));
    let frames = [
        // The UDP ports kept, the length and checksum not: Homa, with nothing of it.
        snapped(1, 0, &ours, 14 + 20 + 6),
        // Another port: not Homa, even cut.
        snapped(1, 1, &theirs, 14 + 20 + 6),
        // Not even the ports: no telling.
        snapped(1, 2, &ours, 14 + 20 + 3),
        // Into the second IPv6 extension header: no telling either.
        snapped(1, 3, &v6_frame, 14 + 40 + 8 + 4),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), udp_opts(4444));
    assert_eq!(records.len(), 1);
    assert_eq!((stats.errors, stats.other, stats.unreadable), (1, 1, 2));
    let j = records[0].to_json();
    assert_eq!(j["reason"], "capture_truncated");
    assert_eq!(
        j["error"],
        "capture truncated: 0 of 156 Homa bytes captured, fewer than the 28-byte packet header"
    );
    assert_eq!(j["iplen"], 20 + 8 + 156);
}

#[test]
fn a_frame_short_on_the_wire_is_not_a_snapped_capture() {
    // The whole frame was captured (original length = bytes kept), but the IP header
    // claims 56 bytes more than it holds: the packet is broken, not the capture.
    let mut packet = ipv4(HOMA, 0xc0, &data(0, 100, 100));
    packet.truncate(packet.len() - 56);
    let frame = ethernet(0x0800, &packet);
    let j = decode_one(
        &pcap(1, &[f(1, 0, frame.clone())], false),
        DumpOptions::default(),
    );
    assert_eq!(j["reason"], "short_frame");
    assert_eq!(
        j["error"],
        "the frame held 100 Homa bytes on the wire, but its IP header says 156"
    );
    // An original length that cannot hold what the IP header says, even though the
    // capture did cut the frame: still the packet's fault.
    let lying = F {
        secs: 1,
        frac: 0,
        orig_len: frame.len() as u32,
        data: frame[..96].to_vec(),
    };
    let j = decode_one(&pcap(1, &[lying], false), DumpOptions::default());
    assert_eq!(j["reason"], "short_frame");
}

#[test]
fn broken_files_are_errors_not_panics() {
    let good = pcap(101, &[f(1, 0, ipv4(HOMA, 0xe0, &need_ack()))], false);
    // Cut in the middle of the only record.
    let err = decode_capture(&good[..good.len() - 5], &DumpOptions::default()).unwrap_err();
    assert!(matches!(err, CaptureError::Truncated), "{err}");
    let err = decode_capture(&b"hello, world"[..], &DumpOptions::default()).unwrap_err();
    assert!(matches!(err, CaptureError::NotACapture(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "not a pcap or pcapng file (it starts with [68, 65, 6c, 6c])"
    );
    let err = decode_capture(&[][..], &DumpOptions::default()).unwrap_err();
    assert!(matches!(err, CaptureError::TooShort(0)), "{err}");
    // Garbage after a valid pcapng section header.
    let mut ng = pcapng(&[(1, None)], &[]);
    ng.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    assert!(decode_capture(&ng[..], &DumpOptions::default()).is_err());
    // Unknown link types are counted, not fatal.
    let file = pcap(147, &[f(1, 0, vec![1, 2, 3])], false);
    let (records, stats) = decode(&file, DumpOptions::default());
    assert!(records.is_empty());
    assert_eq!(stats.unsupported_link.get(&147), Some(&1));
}

#[test]
fn acks_and_cutoffs_and_resend_fields() {
    let ack = Repr {
        common: common(),
        body: Body::Ack(
            Acks::new(&[
                AckEntry {
                    client_id: 2,
                    server_port: 99,
                },
                AckEntry {
                    client_id: 4,
                    server_port: 99,
                },
            ])
            .unwrap(),
        ),
    }
    .to_vec(&[])
    .unwrap();
    let cutoffs = Repr {
        common: common(),
        body: Body::Cutoffs(Cutoffs {
            unsched_cutoffs: [0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200],
            cutoff_version: 1,
        }),
    }
    .to_vec(&[])
    .unwrap();
    let resend = Repr {
        common: common(),
        body: Body::Resend(Resend {
            offset: 0,
            length: u32::MAX,
            priority: 7,
        }),
    }
    .to_vec(&[])
    .unwrap();
    let frames = [ack, cutoffs, resend].map(|h| f(1, 0, ipv4(HOMA, 0xe0, &h)));
    let (records, _) = decode(&pcap(101, &frames, false), DumpOptions::default());
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    assert_eq!(j[0]["num_acks"], 2);
    assert_eq!(
        j[0]["acks"],
        serde_json::json!([{"client_id": 2, "server_port": 99}, {"client_id": 4, "server_port": 99}])
    );
    assert_eq!(
        j[1]["unsched_cutoffs"],
        serde_json::json!([0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200])
    );
    assert_eq!(j[1]["cutoff_version"], 1);
    assert_eq!(j[2]["length"], u32::MAX);
    assert_eq!(j[2]["priority"], 7);
    assert!(records[0].to_text().ends_with("acks=[(2,99),(4,99)]"));
    assert!(records[2]
        .to_text()
        .ends_with("RESEND id=1000 tos=0xe0(p7) iplen=57 offset=0 length=-1 priority=7"));
}

// ---- coalesced UDP datagrams (GSO sends captured before segmentation) ----

fn ack(client_id: u64) -> Vec<u8> {
    let acks = Acks::new(&[AckEntry {
        client_id,
        server_port: 4000,
    }])
    .unwrap();
    Repr {
        common: common(),
        body: Body::Ack(acks),
    }
    .to_vec(&[])
    .unwrap()
}

/// `packets` back to back in one UDP datagram (port 4444) over IPv4 and Ethernet.
fn coalesced(packets: &[Vec<u8>]) -> Vec<u8> {
    ethernet(
        0x0800,
        &ipv4(UDP, 0xe0, &udp(50000, 4444, &packets.concat())),
    )
}

fn gso_mark(j: &Value) -> (Option<u64>, Option<u64>) {
    (j["gso_index"].as_u64(), j["gso_count"].as_u64())
}

#[test]
fn a_coalesced_datagram_of_control_packets_gives_a_line_per_packet() {
    // Two 80-byte ACKs in a 160-byte UDP payload (as the runtime's GSO sends them); then
    // two GRANTs and a shorter NEED_ACK; then a lone GRANT, which stays unmarked.
    let frames = [
        f(1, 0, coalesced(&[ack(10), ack(12)])),
        f(1, 1, coalesced(&[grant(), grant(), need_ack()])),
        f(1, 2, coalesced(&[grant()])),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), udp_opts(4444));
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    let types: Vec<&str> = j.iter().map(|j| j["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["ACK", "ACK", "GRANT", "GRANT", "NEED_ACK", "GRANT"],
        "{j:?}"
    );
    let marks: Vec<_> = j.iter().map(gso_mark).collect();
    let m = |i, n| (Some(i), Some(n));
    assert_eq!(
        marks,
        [m(1, 2), m(2, 2), m(1, 3), m(2, 3), m(3, 3), (None, None)]
    );
    assert_eq!(
        (stats.frames, stats.homa, stats.coalesced, stats.errors),
        (3, 6, 2, 0)
    );
    // Each its own packet: numbered, every field its own; the IP header the datagram's.
    for (i, j) in j.iter().enumerate() {
        assert_eq!(j["no"], i as u64 + 1);
        assert_eq!((&j["sport"], &j["dport"]), (&40000.into(), &4000.into()));
        assert_eq!(j["sender_id"], 1000);
        assert!(j.get("captured").is_none(), "{j}");
    }
    assert_eq!(
        j[0]["acks"],
        serde_json::json!([{"client_id": 10, "server_port": 4000}])
    );
    assert_eq!(
        j[1]["acks"],
        serde_json::json!([{"client_id": 12, "server_port": 4000}])
    );
    assert_eq!((&j[0]["iplen"], &j[1]["iplen"]), (&188.into(), &188.into()));
    assert_eq!(
        (&j[3]["offset"], &j[3]["priority"]),
        (&50_000.into(), &3.into())
    );
    assert_eq!(j[4]["iplen"], 20 + 8 + 33 + 33 + 28);
    // In JSON lines the mark follows iplen, as in text.
    let mut line = Vec::new();
    records[0].write_json(&mut line).unwrap();
    let line = String::from_utf8(line).unwrap();
    assert!(
        line.contains(r#""iplen":188,"gso_index":1,"gso_count":2,"type":"ACK""#),
        "{line}"
    );
    assert_eq!(
        records[1].to_text(),
        "    2 0.000000 10.0.0.1.40000 > 10.0.0.2.4000: ACK id=1000 tos=0xe0(p7) iplen=188 \
         gso=2/2 acks=[(12,4000)]"
    );
    assert_eq!(
        records[4].to_text(),
        "    5 0.000001 10.0.0.1.40000 > 10.0.0.2.4000: NEED_ACK id=1000 tos=0xe0(p7) \
         iplen=122 gso=3/3"
    );
    let summary = stats.summary().expect("coalesced frames are worth a word");
    assert_eq!(
        summary,
        "3 frames: 6 Homa packets (0 undecodable), 2 frames held several (coalesced GSO sends)"
    );
}

#[test]
fn a_coalesced_datagram_of_data_packets_is_cut_at_each_header() {
    let frames = [
        // Three segments of one 2500-byte message, the last shorter.
        f(
            1,
            0,
            coalesced(&[
                data(0, 1000, 2500),
                data(1000, 1000, 2500),
                data(2000, 500, 2500),
            ]),
        ),
        // Three whole 100-byte messages.
        f(
            1,
            1,
            coalesced(&[data(0, 100, 100), data(0, 100, 100), data(0, 100, 100)]),
        ),
        // The last granted segment of one message, then another message's first.
        f(
            1,
            2,
            coalesced(&[data(5000, 1000, 90_000), data(0, 200, 200)]),
        ),
        // One DATA packet whose payload runs to the end of the datagram: not cut.
        f(1, 3, coalesced(&[data(0, 3000, 5000)])),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), udp_opts(4444));
    assert_eq!((stats.homa, stats.coalesced, stats.errors), (9, 3, 0));
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    let seen: Vec<_> = j
        .iter()
        .map(|j| {
            assert_eq!(j["type"], "DATA", "{j}");
            (
                j["offset"].as_u64().unwrap(),
                j["payload_len"].as_u64().unwrap(),
                j["message_length"].as_u64().unwrap(),
                gso_mark(j),
            )
        })
        .collect();
    let m = |i, n| (Some(i), Some(n));
    assert_eq!(
        seen,
        [
            (0, 1000, 2500, m(1, 3)),
            (1000, 1000, 2500, m(2, 3)),
            (2000, 500, 2500, m(3, 3)),
            (0, 100, 100, m(1, 3)),
            (0, 100, 100, m(2, 3)),
            (0, 100, 100, m(3, 3)),
            (5000, 1000, 90_000, m(1, 2)),
            (0, 200, 200, m(2, 2)),
            (0, 3000, 5000, (None, None)),
        ]
    );
    // Every header field is the segment's own.
    let (s, d) = v4();
    for j in &j[3..6] {
        let mut j = j.clone();
        j["tos"] = 0xc0.into();
        assert_data_100(&j, s, d, 0xc0);
    }
    assert_eq!(j[1]["sequence"], 1000);
    assert_eq!(
        records[1].to_text(),
        "    2 0.000000 10.0.0.1.40000 > 10.0.0.2.4000: DATA id=1000 tos=0xe0(p7) iplen=2696 \
         gso=2/3 bytes=1000..2000/2500 incoming=2500 cutoff_version=3 ack=(998,4000)"
    );
}

#[test]
fn what_follows_a_packet_and_is_no_packet_gives_an_error_line() {
    let mut unknown = grant();
    unknown[11] = 0x42;
    let frames = [
        // 5 bytes after a GRANT: too short to be any packet.
        f(1, 0, coalesced(&[grant(), vec![0xee; 5]])),
        // 100 bytes after an ACK that start like no packet: one line for all of them,
        // not one per 80 bytes.
        f(1, 1, coalesced(&[ack(10), vec![0xff; 100]])),
        // A GRANT that is no GRANT in the middle: the rest of the datagram is one line.
        f(1, 2, coalesced(&[grant(), unknown, grant()])),
        // A good packet after all that.
        f(1, 3, coalesced(&[need_ack()])),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), udp_opts(4444));
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    let seen: Vec<_> = j
        .iter()
        .map(|j| {
            let what = j.get("type").or(j.get("reason")).unwrap();
            (what.as_str().unwrap(), gso_mark(j))
        })
        .collect();
    let m = |i, n| (Some(i), Some(n));
    assert_eq!(
        seen,
        [
            ("GRANT", m(1, 2)),
            ("truncated", m(2, 2)),
            ("ACK", m(1, 2)),
            ("unknown_type", m(2, 2)),
            ("GRANT", m(1, 2)),
            ("unknown_type", m(2, 2)),
            ("NEED_ACK", (None, None)),
        ]
    );
    assert_eq!((stats.homa, stats.errors, stats.coalesced), (7, 3, 3));
    assert_eq!(
        j[1]["error"],
        "truncated: packet needs 28 header bytes, got 5"
    );
    assert_eq!(records[3].bytes.len(), 100);
    assert_eq!(
        records[5].bytes.len(),
        66,
        "the bad GRANT and the good one after it"
    );
    assert_eq!(
        records[1].to_text(),
        "    2 0.000000 10.0.0.1.61166 > 10.0.0.2.61166: ERROR(truncated) tos=0xe0(p7) \
         iplen=66 gso=2/2: truncated: packet needs 28 header bytes, got 5"
    );
    // The error line's ports are whatever its own bytes say.
    assert_eq!(
        (&j[5]["sport"], &j[5]["dport"]),
        (&40000.into(), &4000.into())
    );
    assert!(j[3].get("sport").is_some_and(|p| p == 0xffff), "{}", j[3]);

    // After DATA, bytes are payload: a DATA packet longer than its message stays one
    // error line, as a lone packet would.
    let file = pcap(
        1,
        &[f(1, 0, coalesced(&[data(0, 100, 100), vec![0xee; 60]]))],
        false,
    );
    let j = decode_one(&file, udp_opts(4444));
    assert_eq!(j["reason"], "segment_past_end");
    assert!(j.get("gso_index").is_none());
}

#[test]
fn raw_ip_frames_are_never_cut() {
    // Nothing coalesces Homa over raw IP: bytes past a control header are that packet's.
    let file = pcap(
        1,
        &[f(
            1,
            0,
            ethernet(0x0800, &ipv4(HOMA, 0xe0, &[ack(10), ack(12)].concat())),
        )],
        false,
    );
    let (records, stats) = decode(&file, DumpOptions::default());
    assert_eq!((records.len(), stats.coalesced), (1, 0));
    let j = records[0].to_json();
    assert_eq!(
        j["acks"],
        serde_json::json!([{"client_id": 10, "server_port": 4000}])
    );
    assert!(j.get("gso_index").is_none());
}

#[test]
fn a_snapped_coalesced_datagram_shows_the_headers_it_kept() {
    let acks = coalesced(&[ack(10), ack(12), ack(14)]);
    let run = coalesced(&[
        data(0, 1000, 2500),
        data(1000, 1000, 2500),
        data(2000, 500, 2500),
    ]);
    let small = coalesced(&[data(0, 100, 100), data(0, 100, 100), data(0, 100, 100)]);
    let start = coalesced(&[data(0, 1000, 9000), data(1000, 1000, 9000)]);
    let headers = 14 + 20 + 8;
    let frames = [
        // `tcpdump -s 128`: the first ACK and 6 bytes of the second.
        snapped(1, 0, &acks, 128),
        // The second DATA header and 10 of its payload bytes: two lines, the second cut.
        snapped(1, 1, &run, headers + 1056 + 66),
        // Cut before the second header, in datagrams longer than the rest of the first
        // packet's message: several packets, the first of unknown length (156 for the
        // whole messages, 1056 for the burst: nothing kept tells).
        snapped(1, 2, &small, 128),
        snapped(1, 3, &run, 128),
        // Cut before the second header of segments that stop short of their message's
        // end: as long as the datagram, the first may be one packet, and is shown so.
        snapped(1, 4, &start, 128),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), udp_opts(4444));
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    let seen: Vec<_> = j
        .iter()
        .map(|j| {
            (
                j["type"].as_str().unwrap(),
                gso_mark(j),
                j["captured"].as_u64(),
                j["homa_len"].as_u64(),
                j.get("payload_len").and_then(Value::as_u64),
            )
        })
        .collect();
    let m = |i, n| (Some(i), Some(n));
    let unknown = (Some(1), None);
    assert_eq!(
        seen,
        [
            ("ACK", m(1, 3), None, None, None),
            ("DATA", m(1, 3), None, None, Some(1000)),
            ("DATA", m(2, 3), Some(66), Some(1056), Some(1000)),
            ("DATA", unknown, None, None, None),
            ("DATA", unknown, None, None, None),
            ("DATA", (None, None), Some(86), Some(2112), Some(2056)),
        ]
    );
    // The headers not kept are counted, not shown (nor errors).
    assert_eq!(
        (
            stats.homa,
            stats.errors,
            stats.cut,
            stats.uncaptured,
            stats.coalesced
        ),
        (6, 0, 4, 2 + 1, 4)
    );
    assert_eq!(j[2]["offset"], 1000);
    assert!(j[3]["payload_len"].is_null() && j[3]["gso_count"].is_null());
    assert_eq!(j[3]["message_length"], 100);
    assert_eq!(
        records[2].to_text(),
        "    3 0.000001 10.0.0.1.40000 > 10.0.0.2.4000: DATA id=1000 tos=0xe0(p7) iplen=2696 \
         gso=2/3 bytes=1000..2000/2500 incoming=2500 cutoff_version=3 ack=(998,4000) \
         captured=66/1056"
    );
    assert_eq!(
        records[4].to_text(),
        "    5 0.000003 10.0.0.1.40000 > 10.0.0.2.4000: DATA id=1000 tos=0xe0(p7) iplen=2696 \
         gso=1/? bytes=0..?/2500 incoming=2500 cutoff_version=3 ack=(998,4000)"
    );
    let summary = stats.summary().unwrap();
    assert!(
        summary.ends_with(
            "3 more packets of coalesced frames not shown (headers past the snap length)"
        ),
        "{summary}"
    );
}

/// A small deterministic generator (xorshift), so a failure reproduces without a seed file.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flip, truncate and extend bytes at random; the decoder must answer with a record, a
/// skip or an error, never a panic, and every record must format.
#[test]
fn mutated_frames_and_files_never_panic() {
    let homa = data(0, 100, 100);
    let samples: Vec<(u32, Vec<u8>)> = vec![
        (1, ethernet(0x0800, &ipv4(HOMA, 0xc0, &homa))),
        (
            1,
            ethernet(0x86dd, &ipv6(HOMA, 0xc0, &[0, 43, 60], &grant())),
        ),
        (
            1,
            ethernet(0x0800, &ipv4(UDP, 0xc0, &udp(1, 4444, &need_ack()))),
        ),
        (
            1,
            coalesced(&[data(0, 100, 300), data(100, 100, 300), data(200, 50, 300)]),
        ),
        (1, coalesced(&[grant(), grant(), need_ack()])),
        (101, ipv4(HOMA, 0xe0, &need_ack())),
        (113, sll(0x86dd, &ipv6(HOMA, 0xe0, &[], &homa))),
        (276, sll2(0x0800, &ipv4(HOMA, 0xe0, &homa))),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let (link, base) = &samples[round % samples.len()];
        let mut frame = base.clone();
        match rng.below(3) {
            0 => frame.truncate(rng.below(frame.len() + 1)),
            1 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(frame.len());
                    frame[i] = rng.next() as u8;
                }
            }
            _ => frame.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
        let file = pcap(*link, &[f(1, 0, frame)], false);
        let (records, _) = decode(&file, udp_opts(4444));
        for r in &records {
            let _ = r.to_text();
            let _ = r.to_json();
        }
    }
    // Whole files: damage the container itself.
    let frames: Vec<F> = samples
        .iter()
        .filter(|(l, _)| *l == 1)
        .map(|(_, fr)| f(1, 0, fr.clone()))
        .collect();
    let classic = pcap(1, &frames, false);
    let ng = pcapng(
        &[(1, None)],
        &samples
            .iter()
            .filter(|(l, _)| *l == 1)
            .map(|(_, fr)| (0, 5, fr.clone()))
            .collect::<Vec<_>>(),
    );
    for round in 0..3000 {
        let mut file = if round % 2 == 0 {
            classic.clone()
        } else {
            ng.clone()
        };
        for _ in 0..=rng.below(3) {
            let i = rng.below(file.len());
            file[i] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            file.truncate(rng.below(file.len()));
        }
        if let Ok((records, _)) = decode_capture(&file[..], &DumpOptions::default()) {
            for r in &records {
                let _ = r.to_text();
            }
        }
    }
}

/// IPv4 fragments of `packet` (an IP payload of protocol `proto`), `piece` bytes each
/// (a multiple of 8), with identification `id`.
fn fragments(proto: u8, id: u16, packet: &[u8], piece: usize) -> Vec<Vec<u8>> {
    packet
        .chunks(piece)
        .enumerate()
        .map(|(i, chunk)| {
            let mut frag = ipv4(proto, 0xc0, chunk);
            let more = (i + 1) * piece < packet.len();
            let offset = (i * piece / 8) as u16 | if more { 0x2000 } else { 0 };
            frag[4..6].copy_from_slice(&id.to_be_bytes());
            frag[6..8].copy_from_slice(&offset.to_be_bytes());
            frag
        })
        .collect()
}

#[test]
fn ip_fragments_are_put_back_together() {
    const UDP: u8 = 17;
    // A 3,056-byte DATA packet in UDP, fragmented as a router with a 1,500-byte MTU
    // would (1,480 bytes a piece), its fragments out of order; a raw Homa packet of 2,000
    // bytes the same way; between them, a whole packet.
    let big = data(0, 3000, 3000);
    let udp_frags = fragments(UDP, 7, &udp(40000, 4000, &big), 1480);
    let raw = data(0, 1944, 1944);
    let raw_frags = fragments(HOMA, 8, &raw, 1480);
    assert_eq!((udp_frags.len(), raw_frags.len()), (3, 2));
    let frames = vec![
        f(1, 0, ethernet(0x0800, &udp_frags[2])),
        f(1, 1, ethernet(0x0800, &udp_frags[0])),
        f(1, 2, ethernet(0x0800, &ipv4(HOMA, 0xe0, &grant()))),
        f(1, 3, ethernet(0x0800, &raw_frags[0])),
        f(1, 4, ethernet(0x0800, &udp_frags[1])),
        f(1, 5, ethernet(0x0800, &raw_frags[1])),
    ];
    let opts = DumpOptions {
        udp_port: Some(4000),
        ..DumpOptions::default()
    };
    let (records, stats) = decode(&pcap(1, &frames, false), opts);
    let j: Vec<Value> = records.iter().map(Record::to_json).collect();
    assert_eq!(records.len(), 3, "{j:#?}");
    assert_eq!(j[0]["type"], "GRANT");
    for (r, len) in [(&j[1], 3000), (&j[2], 1944)] {
        assert_eq!(r["type"], "DATA", "{r}");
        assert_eq!(r["message_length"], len);
    }
    assert_eq!(records[1].bytes, big);
    assert_eq!(records[2].bytes, raw);
    assert_eq!(records[1].ts.unwrap().to_string(), "1.000004");
    assert_eq!((stats.fragments, stats.reassembled), (5, 2));
    assert_eq!((stats.errors, stats.fragments_pending), (0, 0));
    let summary = stats.summary().unwrap();
    assert!(
        summary.contains("2 put back together from 5 IP fragments"),
        "{summary}"
    );

    // IPv6: a raw Homa packet in two fragments (fragment header, next header 44).
    let v6_frags: Vec<Vec<u8>> = raw
        .chunks(1448)
        .enumerate()
        .map(|(i, chunk)| {
            let more = u16::from((i + 1) * 1448 < raw.len());
            let offset = ((i * 1448 / 8) as u16) << 3 | more;
            let mut ext = vec![HOMA, 0];
            ext.extend_from_slice(&offset.to_be_bytes());
            ext.extend_from_slice(&9u32.to_be_bytes());
            ext.extend_from_slice(chunk);
            let mut packet = ipv6(HOMA, 0xc0, &[], &ext);
            packet[6] = 44;
            packet
        })
        .collect();
    let frames = vec![
        f(1, 0, ethernet(0x86dd, &v6_frags[1])),
        f(1, 1, ethernet(0x86dd, &v6_frags[0])),
    ];
    let (records, stats) = decode(&pcap(1, &frames, false), opts);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].bytes, raw);
    assert_eq!(records[0].to_json()["src"], SRC6.to_string());
    assert_eq!((stats.fragments, stats.reassembled), (2, 1));

    // Fragments of a datagram on another port: put back together, then skipped as any
    // other packet (each fragment a frame skipped).
    let other = fragments(UDP, 10, &udp(5353, 5353, &big), 1480);
    let frames: Vec<F> = other.iter().map(|p| f(1, 0, ethernet(0x0800, p))).collect();
    let (records, stats) = decode(&pcap(1, &frames, false), opts);
    assert!(records.is_empty());
    assert_eq!((stats.other, stats.fragments, stats.reassembled), (3, 0, 0));

    // The rest of a packet never came: its fragments are counted, not shown.
    let frames = vec![f(1, 0, ethernet(0x0800, &udp_frags[0]))];
    let (records, stats) = decode(&pcap(1, &frames, false), opts);
    assert!(records.is_empty());
    assert_eq!(stats.fragments_pending, 1);
    assert!(stats
        .summary()
        .unwrap()
        .contains("1 IP fragments of packets never completed"));

    // A fragment the snap length cut cannot be joined: an error line, as before.
    let mut cut = f(1, 0, ethernet(0x0800, &raw_frags[0]));
    cut.orig_len = cut.data.len() as u32;
    cut.data.truncate(100);
    let (records, stats) = decode(&pcap(1, &[cut], false), opts);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].to_json()["reason"], "ip_fragment");
    assert_eq!(stats.fragments, 0);
}
