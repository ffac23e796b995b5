//! Running the tools: `ip`, `tc` and `nft`, found once, each failure reported
//! with its command line and stderr; namespaces listed, entered, emptied and deleted.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::config::*;

/// Paths of the programs the testbed runs.
#[derive(Debug, Clone)]
pub(super) struct Tools {
    pub(super) ip: PathBuf,
    pub(super) tc: PathBuf,
    pub(super) nft: Option<PathBuf>,
}

impl Tools {
    pub(super) fn find() -> Result<Tools, TestbedError> {
        Ok(Tools {
            ip: require_program("ip", "iproute2")?,
            tc: require_program("tc", "iproute2")?,
            nft: find_program("nft"),
        })
    }
}

/// Look for an executable in PATH, then in the sbin directories (`sudo` may leave them out
/// of PATH).
/// The program `name` on the `PATH` (or in the usual system directories), if any.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

pub(super) fn require_program(
    name: &'static str,
    package: &'static str,
) -> Result<PathBuf, TestbedError> {
    find_program(name).ok_or(TestbedError::MissingTool {
        program: name,
        package,
    })
}

/// The command line, for error messages.
pub(super) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion, optionally feeding it `stdin`; its stdout on success.
pub(super) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, TestbedError> {
    let line = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // A process group of its own: a Ctrl-C at the terminal goes to this process, whose
    // handler tears the testbed down with commands run here, not to a command running
    // at that moment (which it killed, and the teardown then reported it as failed).
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(io_error(format!("cannot run `{line}`")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the command's own error below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(io_error(format!("cannot wait for `{line}`")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if !out.status.success() {
        let command = match stdin {
            Some(text) => with_failing_line(&line, text, &stderr),
            None => line,
        };
        return Err(TestbedError::Command {
            command,
            status: out.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For a batch fed on stdin: the command line plus the line that failed (`ip`/`tc` say
/// "Command failed -:N"), or else the size and first line of the input. The result sits
/// between backquotes in [`TestbedError::Command`]'s message.
pub(super) fn with_failing_line(line: &str, input: &str, stderr: &str) -> String {
    let failed = stderr
        .split("-:")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        })
        .and_then(|n| Some((n, input.lines().nth(n.checked_sub(1)?)?)));
    match failed {
        Some((n, l)) => format!("{line}` at line {n}: `{l}"),
        None => format!(
            "{line}` with {} lines on stdin, the first: `{}",
            input.lines().count(),
            input.lines().next().unwrap_or("")
        ),
    }
}

/// Names of the existing network namespaces (`ip netns list`).
pub(super) fn list_netns(ip: &Path) -> Result<HashSet<String>, TestbedError> {
    let out = run(Command::new(ip).args(["netns", "list"]), None)?;
    // Lines look like "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Pids of the processes in a namespace (`ip netns pids`).
pub(super) fn netns_pids(ip: &Path, ns: &str) -> Result<Vec<i32>, TestbedError> {
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "pids", ns]);
    let out = run(&mut cmd, None)?;
    out.split_whitespace()
        .map(|w| {
            w.parse::<i32>().map_err(|_| TestbedError::Parse {
                command: describe(&cmd),
                reason: format!("{w:?} is not a pid"),
            })
        })
        .collect()
}

/// Fields of `/proc/<pid>/stat` after the command name: state, ppid, ...
pub(super) fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// if it is running (not a zombie).
pub(super) fn process_start(pid: i32) -> Option<u64> {
    let fields = proc_stat(pid)?;
    if fields.first().map(String::as_str) == Some("Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Stop every process in the namespace except this one: SIGTERM, then SIGKILL for those
/// still running after [`KILL_GRACE`].
pub(super) fn kill_processes(ip: &Path, ns: &str) -> Result<(), TestbedError> {
    let me = std::process::id() as i32;
    let pids: Vec<i32> = netns_pids(ip, ns)?
        .into_iter()
        .filter(|&p| p != me)
        .collect();
    if pids.is_empty() {
        return Ok(());
    }
    for &p in &pids {
        // Gone already is fine.
        let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let alive = |p: &i32| process_start(*p).is_some();
    if !gone_within_grace(|| pids.iter().any(alive)) {
        for &p in pids.iter().filter(|p| alive(p)) {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    Ok(())
}

/// Poll `running` every 10 ms for [`KILL_GRACE`] after a SIGTERM; true once it says
/// nothing runs any more, false if something still does when the grace is up.
pub(crate) fn gone_within_grace(mut running: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        if !running() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kill what runs in a namespace, then delete it.
pub(super) fn delete_netns(ip: &Path, ns: &str) -> Result<(), TestbedError> {
    let killed = kill_processes(ip, ns);
    run(Command::new(ip).args(["netns", "delete", ns]), None)?;
    killed
}

/// Where `ip netns` keeps the named namespace `ns`.
pub(super) fn netns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Run `f` on a new thread that has joined the namespace at `path`. When joining fails the
/// thread ends without running `f` and the error is returned.
pub(super) fn spawn_in_netns<T: Send + 'static>(
    path: PathBuf,
    thread_name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let file = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let (entered_tx, entered_rx) = mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let entered = nix::sched::setns(&file, CloneFlags::CLONE_NEWNET);
            drop(file);
            let failed = entered.is_err();
            let _ = entered_tx.send(entered);
            if failed {
                // `f` must not run outside the namespace, and there is no `T` to return:
                // unwind without running the panic hook (nothing is printed); the caller
                // gets the error and drops this handle.
                std::panic::resume_unwind(Box::new("setns failed"));
            }
            f()
        })?;
    match entered_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(errno)) => Err(io::Error::new(
            io::Error::from(errno).kind(),
            format!("setns({}): {errno}", path.display()),
        )),
        Err(_) => Err(io::Error::other("namespace thread ended before entering")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_name_the_failing_line() {
        let s = with_failing_line("tc -batch -", "a\nb\nc\n", "Error: x.\nCommand failed -:2");
        assert_eq!(s, "tc -batch -` at line 2: `b");
        assert_eq!(
            with_failing_line("nft -f -", "a\nb\n", "Error: y"),
            "nft -f -` with 2 lines on stdin, the first: `a"
        );
    }
}
