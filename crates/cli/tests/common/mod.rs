//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The directory of real Linux Homa captures: `$HOMA_CAPTURES_DIR`, or the copies kept in
/// this repository (`crates/dump/tests/data/captures`, see its README). Panics with a clear message
/// when it is missing, since the conformance tests are meaningless without it.
#[allow(dead_code)] // Not every test binary uses every helper.
pub fn captures_dir() -> PathBuf {
    let dir = match std::env::var_os("HOMA_CAPTURES_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dump/tests/data/captures"),
    };
    assert!(
        dir.is_dir(),
        "captures directory {} not found: set HOMA_CAPTURES_DIR to the directory holding \
         the X.pcap / X.txt conformance captures",
        dir.display()
    );
    dir
}

/// Why the namespace testbed cannot run in this process, if it cannot (see
/// `Testbed::unavailable`). `None` means it must work: a testbed that then fails to build
/// is a test failure, never a reason to skip.
#[allow(dead_code)] // Not every test binary uses every helper.
pub fn testbed_unavailable() -> Option<String> {
    homa_testbed::net::Testbed::unavailable()
}
