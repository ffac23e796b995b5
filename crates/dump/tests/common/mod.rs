//! Helpers shared by the decoder's integration tests.

use std::path::PathBuf;

/// The directory of real Linux Homa captures: `$HOMA_CAPTURES_DIR`, or the copies kept in
/// this repository (`crates/dump/tests/data/captures`, see its README). Panics with a clear message
/// when it is missing, since the conformance tests are meaningless without it.
pub fn captures_dir() -> PathBuf {
    let dir = match std::env::var_os("HOMA_CAPTURES_DIR") {
        Some(d) => PathBuf::from(d),
        // This crate's own copies (also in its published package), else those of
        // crates/dump beside this crate: the command's tests include this file too.
        None => {
            let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let own = here.join("tests/data/captures");
            if own.is_dir() {
                own
            } else {
                here.join("../dump/tests/data/captures")
            }
        }
    };
    assert!(
        dir.is_dir(),
        "captures directory {} not found: set HOMA_CAPTURES_DIR to the directory holding \
         the X.pcap / X.txt conformance captures",
        dir.display()
    );
    dir
}
