//! What a killed run must not leave behind, beyond the namespaces (`net::clean_stale`):
//! the `homa perf` processes a bench starts in its hosts, and its scratch directory.
//!
//! A bench whose process is killed outright (SIGKILL, the OOM killer) runs no teardown,
//! so its servers and clients, re-parented to init, would run on for good; in a rootless
//! run they live in namespaces no other process can reach, so nothing could stop them.
//! Each is therefore started with [`EXIT_WITH_PARENT_ENV`] naming the bench's pid, and
//! stops itself (a SIGTERM to itself, which ends it cleanly) once its parent is another
//! ([`exit_with_parent_if_asked`], which `homa` calls first thing).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Set, to the pid of the process that starts it, in the environment of a process that
/// must stop when that process is gone.
pub const EXIT_WITH_PARENT_ENV: &str = "HOMA_EXIT_WITH_PARENT";

/// How often a watched process looks at its parent.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Prefix of a bench's scratch directory in the temporary directory (then the pid).
const SCRATCH_PREFIX: &str = "homa-testbed-bench-";

/// If [`EXIT_WITH_PARENT_ENV`] names a pid, watch the parent from a thread of its own: as
/// soon as this process's parent is not that process (it died, or had died before we
/// looked), send this process SIGTERM. Call it before anything else, so that the SIGTERM
/// handler the program installs later is the one that runs.
pub fn exit_with_parent_if_asked() {
    let Some(parent) = std::env::var(EXIT_WITH_PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let watch = move || loop {
        if std::os::unix::process::parent_id() != parent {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
            return;
        }
        std::thread::sleep(WATCH_EVERY);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("homa-parent-watch".into())
        .spawn(watch)
    {
        eprintln!("warning: cannot watch for the end of the parent process: {e}");
    }
}

/// Whether no process `pid` exists.
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// The scratch directory of a bench run by process `pid`.
pub(crate) fn scratch_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{pid}"))
}

/// Remove the scratch directories of benches whose process no longer exists (a run
/// killed outright keeps its directory, with its logs); returns those removed. Those of
/// live processes, and those this user may not remove, stay.
pub fn remove_stale_scratch() -> Vec<PathBuf> {
    remove_stale_scratch_in(&std::env::temp_dir())
}

fn remove_stale_scratch_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX));
            pid.and_then(|p| p.parse::<u32>().ok()).is_some_and(gone)
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir() && std::fs::remove_dir_all(p).is_ok())
        .collect();
    removed.sort();
    removed
}

/// Stop the `perf stat` counters that benches killed outright left running (from before
/// they ran under `setpriv --pdeathsig`, or where `setpriv` is missing): a `perf` whose
/// output goes to the scratch directory of a process that no longer exists. Returns
/// their pids.
pub fn stop_stale_meters() -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut stopped: Vec<u32> = procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            stale_meter(&args)
        })
        .filter(|&pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
        .collect();
    stopped.sort();
    stopped
}

/// Whether a process with these arguments is a bench's `perf stat` whose bench is gone.
fn stale_meter(args: &[&[u8]]) -> bool {
    let is_perf = args
        .first()
        .is_some_and(|a| a.ends_with(b"perf") || a.ends_with(b"setpriv"))
        && args.iter().any(|a| *a == b"stat");
    is_perf
        && args.iter().any(|a| {
            let a = String::from_utf8_lossy(a);
            let bench = a
                .split('/')
                .find_map(|part| part.strip_prefix(SCRATCH_PREFIX))
                .and_then(|pid| pid.parse::<u32>().ok());
            bench.is_some_and(gone)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perf_is_stale_when_its_bench_is_gone() {
        let live = format!(
            "/tmp/{SCRATCH_PREFIX}{}/tcp-syscalls.csv",
            std::process::id()
        );
        let dead = format!("/tmp/{SCRATCH_PREFIX}{}/tcp-syscalls.csv", u32::MAX - 1);
        let perf = |out: &str| -> Vec<Vec<u8>> {
            ["/usr/bin/perf", "stat", "-a", "-o", out]
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect()
        };
        fn args(v: &[Vec<u8>]) -> Vec<&[u8]> {
            v.iter().map(Vec::as_slice).collect()
        }
        assert!(stale_meter(&args(&perf(&dead))));
        assert!(!stale_meter(&args(&perf(&live))), "its bench runs");
        let other = vec![
            b"/usr/bin/perf".to_vec(),
            b"record".to_vec(),
            dead.into_bytes(),
        ];
        assert!(!stale_meter(&args(&other)), "not a perf stat");
    }

    #[test]
    fn only_the_scratch_of_dead_processes_is_removed() {
        let dir = std::env::temp_dir().join(format!("homa-leftovers-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dead = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let live = std::process::id();
        for pid in [dead, live] {
            let d = dir.join(format!("{SCRATCH_PREFIX}{pid}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("log"), "x").unwrap();
        }
        std::fs::create_dir_all(dir.join(format!("{SCRATCH_PREFIX}notapid"))).unwrap();
        let removed = remove_stale_scratch_in(&dir);
        assert_eq!(removed, vec![dir.join(format!("{SCRATCH_PREFIX}{dead}"))]);
        assert!(dir.join(format!("{SCRATCH_PREFIX}{live}")).exists());
        assert!(dir.join(format!("{SCRATCH_PREFIX}notapid")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
