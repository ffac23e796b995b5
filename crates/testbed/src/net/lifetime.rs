//! Tearing testbeds down whatever happens: the live ones a Ctrl-C or SIGTERM tears down, and
//! [`clean_stale`] for what a dead process left behind.

use std::collections::HashSet;
use std::io::{self};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use super::cmd::*;
use super::config::*;

/// What exists (or may exist) of one testbed, shared by the [`Testbed`] and the process-wide
/// registry the signal handler tears down from.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) name: String,
    pub(super) switch: String,
    pub(super) hosts: Vec<String>,
    pub(super) marker: PathBuf,
    pub(super) ip: PathBuf,
    /// Namespaces this process created and has not deleted yet. Holding the lock while
    /// destroying makes the signal handler and `teardown` exclusive: whoever comes second
    /// finds nothing left.
    pub(super) created: Mutex<Vec<String>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop a teardown.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Plan {
    /// Kill the processes in, and delete, every namespace created; remove the marker.
    /// Keeps going after a failure and returns the first.
    pub(super) fn destroy(&self) -> Result<(), TestbedError> {
        let mut created = lock(&self.created);
        let mut first_error = None;
        // Hosts first (they hold the processes), the switch last.
        while let Some(ns) = created.pop() {
            if let Err(e) = delete_netns(&self.ip, &ns) {
                first_error.get_or_insert(e);
            }
        }
        match std::fs::remove_file(&self.marker) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                first_error.get_or_insert(TestbedError::Io {
                    what: format!("cannot remove {}", self.marker.display()),
                    source: e,
                });
            }
            _ => {}
        }
        first_error.map_or(Ok(()), Err)
    }

    /// All namespace names, switch first.
    pub(super) fn namespaces(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.switch).chain(&self.hosts)
    }
}

/// Live testbeds of this process, for the signal handler.
pub(super) static LIVE: Mutex<Vec<Arc<Plan>>> = Mutex::new(Vec::new());

pub(super) fn register(plan: &Arc<Plan>) {
    lock(&LIVE).push(Arc::clone(plan));
}

pub(super) fn unregister(plan: &Arc<Plan>) {
    lock(&LIVE).retain(|p| !Arc::ptr_eq(p, plan));
}

/// Set once a Ctrl-C or SIGTERM has begun tearing this process's testbeds down.
static TEARING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// If a Ctrl-C or SIGTERM is tearing this process's testbeds down, wait for the handler to
/// end the process (status 130) instead of going on: an error the teardown caused (a
/// host's process gone, a namespace deleted) is not the run's outcome, and a process
/// that exited first would cut the teardown short.
pub fn yield_to_teardown() {
    while TEARING_DOWN.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
}

/// Scratch directories of this process that a Ctrl-C or SIGTERM removes.
static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Have the Ctrl-C/SIGTERM handler remove `dir` (a temporary directory of a run), until
/// [`keep_on_signal`] says otherwise. The guard returned removes it as well if the run
/// unwinds (see [`Scratch`]).
pub(crate) fn remove_on_signal(dir: &std::path::Path) -> Scratch {
    lock(&SCRATCH).push(dir.to_path_buf());
    Scratch(dir.to_path_buf())
}

/// A run's temporary directory, removed if the run unwinds: a panic skips the removal at
/// the end of a run, and printing to a closed pipe (`homa testbed bench | head`) is one,
/// which left a directory behind at every such run. A run that returns an error keeps
/// it (its logs say why).
pub(crate) struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
            keep_on_signal(&self.0);
        }
    }
}

/// `dir` is no longer the signal handler's to remove (removed already, or kept).
pub(crate) fn keep_on_signal(dir: &std::path::Path) {
    lock(&SCRATCH).retain(|d| d != dir);
}

/// Install the Ctrl-C/SIGTERM handler once per process. Returns a warning when another
/// handler is already installed (then that one decides what happens on Ctrl-C).
pub(super) fn install_signal_handler() -> Option<String> {
    static ONCE: Once = Once::new();
    let mut warning = None;
    ONCE.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            TEARING_DOWN.store(true, std::sync::atomic::Ordering::SeqCst);
            crate::cost::stop_all();
            let plans = std::mem::take(&mut *lock(&LIVE));
            // Written, not `eprintln!`: with stderr a closed pipe that would panic on
            // this thread, and the process would exit before anything was torn down.
            let say = |what: std::fmt::Arguments<'_>| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "homa testbed: {what}");
            };
            for plan in plans {
                say(format_args!("tearing down {}", plan.name));
                if let Err(e) = plan.destroy() {
                    say(format_args!("{e}"));
                }
            }
            super::hysteresis::restore_before_exit();
            // Last, once the hosts' processes are gone; the run's own thread may still be
            // adding a log file, so an attempt that finds the directory not empty is
            // repeated.
            for dir in std::mem::take(&mut *lock(&SCRATCH)) {
                for _ in 0..5 {
                    if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            std::process::exit(130);
        });
        if let Err(e) = installed {
            warning = Some(format!(
                "cannot install the Ctrl-C handler ({e}): testbeds are not torn down on \
                 Ctrl-C; `homa testbed clean` removes them afterwards"
            ));
        }
    });
    warning
}

/// The pid in a default name's namespace (`htb<pid>h3`, `htb<pid>-2sw`), if it is one.
pub(super) fn default_name_pid(ns: &str) -> Option<i32> {
    let rest = ns.strip_prefix(DEFAULT_PREFIX)?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (pid, mut tail) = rest.split_at(digits);
    if let Some(t) = tail.strip_prefix('-') {
        tail = t.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let suffix_ok = tail == "sw"
        || tail
            .strip_prefix('h')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !suffix_ok {
        return None;
    }
    pid.parse().ok()
}

/// What [`clean_stale`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// The namespaces deleted.
    pub namespaces: Vec<String>,
    /// Whether it turned the kernel's htb hysteresis off again: a testbed had turned it on,
    /// and its process was killed before it could put it back.
    pub htb_hysteresis_off: bool,
}

/// The testbed markers under [`MARKER_DIR`] (none if there is no such directory).
fn markers() -> Result<Vec<PathBuf>, TestbedError> {
    match std::fs::read_dir(MARKER_DIR) {
        Ok(dir) => Ok(dir.filter_map(Result::ok).map(|e| e.path()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error(format!("cannot read {MARKER_DIR}"))(e)),
    }
}

/// The pid of a marker's owner (its first line: pid and start time), if that process
/// still lives (the same pid with the same start time).
fn live_owner(marker_text: &str) -> Option<i32> {
    let owner: Vec<&str> = marker_text.lines().next()?.split_whitespace().collect();
    let [pid, start] = owner.as_slice() else {
        return None;
    };
    let (pid, start) = (pid.parse::<i32>().ok()?, start.parse::<u64>().ok()?);
    process_start(pid)
        .is_some_and(|s| s == start)
        .then_some(pid)
}

/// Whether a live process other than this one has a testbed (its marker).
pub(crate) fn other_processes_have_testbeds() -> bool {
    let me = std::process::id() as i32;
    markers().unwrap_or_default().iter().any(|m| {
        std::fs::read_to_string(m)
            .ok()
            .and_then(|text| live_owner(&text))
            .is_some_and(|pid| pid != me)
    })
}

/// Delete the testbed namespaces whose creating process no longer exists (after killing
/// what still runs in them), and their markers; and turn the kernel's htb hysteresis off
/// again if a testbed turned it on and no live process has a testbed now. Testbeds of live
/// processes are left alone.
pub fn clean_stale() -> Result<Cleaned, TestbedError> {
    if !crate::userns::privileged() {
        return Err(TestbedError::NotRoot);
    }
    let ip = require_program("ip", "iproute2")?;
    let existing = list_netns(&ip)?;
    let mut protected = HashSet::new();
    let mut deleted = Vec::new();
    let mut first_error = None;
    let mut anyone_live = false;
    for marker in markers()? {
        let Ok(text) = std::fs::read_to_string(&marker) else {
            continue;
        };
        let alive = live_owner(&text).is_some();
        let namespaces: Vec<&str> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
        if alive {
            anyone_live = true;
            protected.extend(namespaces.into_iter().map(str::to_owned));
            continue;
        }
        for ns in namespaces {
            if existing.contains(ns) && !deleted.iter().any(|d| d == ns) {
                match delete_netns(&ip, ns) {
                    Ok(()) => deleted.push(ns.to_owned()),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&marker);
    }
    // Default-named namespaces whose marker is gone: the pid is in the name.
    let mut orphans: Vec<&String> = existing
        .iter()
        .filter(|ns| !protected.contains(*ns) && !deleted.contains(*ns))
        .filter(|ns| default_name_pid(ns).is_some_and(|pid| process_start(pid).is_none()))
        .collect();
    orphans.sort();
    for ns in orphans {
        match delete_netns(&ip, ns) {
            Ok(()) => deleted.push(ns.clone()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    // This process's own testbeds count as live (a library user cleaning up beside its
    // own), through their markers.
    let htb_hysteresis_off = super::hysteresis::restore_if_abandoned(anyone_live);
    match first_error {
        Some(e) if deleted.is_empty() => Err(e),
        // Report what was removed; a namespace that would not go shows up next time.
        _ => Ok(Cleaned {
            namespaces: deleted,
            htb_hysteresis_off,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_carry_the_pid() {
        assert_eq!(default_name_pid("htb1234h0"), Some(1234));
        assert_eq!(default_name_pid("htb1234sw"), Some(1234));
        assert_eq!(default_name_pid("htb1234-2h17"), Some(1234));
        assert_eq!(default_name_pid("htb1234-2sw"), Some(1234));
        assert_eq!(default_name_pid("htb1234"), None);
        assert_eq!(default_name_pid("htb1234h"), None);
        assert_eq!(default_name_pid("htbh0"), None);
        assert_eq!(default_name_pid("tbxh0"), None);
        assert_eq!(default_name_pid("htb12x4h0"), None);
    }
}
