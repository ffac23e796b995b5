//! `homa dump` on arbitrary capture files: the capture reader (pcap and pcapng, every
//! link type), IP and UDP unwrapping, the Homa decoder and both output formats must
//! turn any bytes into records or an error, never a panic or a hang.
//!
//! ```text
//! cargo install cargo-fuzz            # once; needs a nightly toolchain
//! cd crates/dump/fuzz
//! mkdir -p corpus/dump
//! cargo +nightly fuzz run dump corpus/dump ../tests/data/captures
//! ```
//! The captures in `crates/dump/tests/data/captures` make a good starting corpus. They
//! come second: libFuzzer writes what it finds into the first directory (`corpus/dump`,
//! ignored by git), and would otherwise fill the repository's test data.
#![no_main]

use homa_dump::{decode_capture, DumpOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Raw-IP Homa only, and UDP-mode Homa on a port too.
    for udp_port in [None, Some(4_000)] {
        let opts = DumpOptions {
            udp_port,
            ..DumpOptions::default()
        };
        if let Ok((records, _stats)) = decode_capture(data, &opts) {
            for r in &records {
                let _ = r.to_text();
                let _ = r.to_json();
            }
        }
    }
});
