//! Helpers shared by the integration tests.

// The captures the decoder's tests read (`captures_dir`): the command's tests read them too.
#[allow(dead_code)] // Not every test binary uses every helper.
#[path = "../../../dump/tests/common/mod.rs"]
mod dump_common;
#[allow(unused_imports)]
pub use dump_common::captures_dir;

/// Why the namespace testbed cannot run in this process, if it cannot (see
/// `Testbed::unavailable`). `None` means it must work: a testbed that then fails to build
/// is a test failure, never a reason to skip.
#[allow(dead_code)] // Not every test binary uses every helper.
pub fn testbed_unavailable() -> Option<String> {
    homa_testbed::net::Testbed::unavailable()
}
