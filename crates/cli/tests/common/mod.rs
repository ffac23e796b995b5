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

/// Why the namespace testbed cannot run in this process, if it cannot: not root, or root
/// but refused new network namespaces (a container without the privilege, a kernel
/// without them). `None` means it must work: a testbed that then fails to build (a
/// missing tool, a `tc` or `ip` error, a bug) is a test failure, never a reason to skip.
#[allow(dead_code)] // Not every test binary uses every helper.
pub fn testbed_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (the testbed needs network namespaces and qdiscs)".into());
    }
    // A throwaway thread enters a new namespace of its own, which goes when it ends.
    let probe = std::thread::spawn(|| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET))
        .join()
        .expect("namespace probe thread");
    probe
        .err()
        .map(|e| format!("root, but the kernel refuses this process a new network namespace: {e}"))
}
