//! Rootless testbeds: without root, `homa demo` and `homa testbed up`/`bench` run again
//! in a child process that is root only inside a user namespace of its own.
//!
//! The child ([`CHILD_ENV`] set) calls `unshare(CLONE_NEWUSER | CLONE_NEWNET |
//! CLONE_NEWNS)` first thing, while it is still single-threaded, maps root to the caller's
//! uid and gid (`setgroups` denied first, as the kernel requires of an unprivileged
//! mapping), makes every mount private and mounts a tmpfs on `/run`, where `ip netns`
//! keeps its handles and the testbed its markers. Inside, network namespaces, veth pairs,
//! htb and nftables all work as for root, and everything built there vanishes with the
//! child: the namespaces' handles live in its private mount namespace.
//!
//! Why a re-executed child that unshares itself, rather than a `pre_exec` hook or the
//! util-linux `unshare -r -n -m` command: `pre_exec` needs `unsafe`, which this crate
//! forbids; the child sees the kernel's exact error (and can say in one line which setting
//! refused it) instead of an exit status of another program; nothing beyond `ip`/`tc` has
//! to be installed; and the parent never leaves its own namespaces, so where the kernel
//! refuses, the demo still runs on loopback there.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Set (to `1`) in the child's environment: enter a user namespace, don't re-execute.
pub const CHILD_ENV: &str = "HOMA_USERNS_CHILD";

/// Set in the child's environment to the pid of the parent that waits for it.
const PARENT_ENV: &str = "HOMA_USERNS_PARENT";

/// Exit status of a child that could not build its namespaces or testbed; it has printed
/// why on stderr, in one line.
pub const REFUSED_EXIT: u8 = 3;

/// Where a command that needs a testbed should go on.
#[derive(Debug)]
pub enum Placement {
    /// Here: this process is root, or root in its own user namespace now.
    Here,
    /// In a child process, which has finished with this status.
    Child(ExitStatus),
}

/// Set once this process has entered its user namespace.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Whether this process is the re-executed child (before or after entering).
pub fn is_child() -> bool {
    ENTERED.load(Ordering::SeqCst) || std::env::var_os(CHILD_ENV).is_some_and(|v| v == "1")
}

/// Whether this process runs as root of its own user namespace (see the module docs).
pub fn entered() -> bool {
    ENTERED.load(Ordering::SeqCst)
}

/// Makes sure the testbed can be built: root goes on here; the re-executed child enters
/// its user namespace (and goes on here); anyone else re-executes this command as that
/// child and waits for it. `Err` is why the namespaces are unavailable, in one line.
pub fn place() -> Result<Placement, String> {
    if entered() {
        return Ok(Placement::Here);
    }
    if is_child() {
        enter()?;
        ENTERED.store(true, Ordering::SeqCst);
        end_with_parent();
        // Processes started in the testbed are not children to re-run.
        std::env::remove_var(CHILD_ENV);
        std::env::remove_var(PARENT_ENV);
        return Ok(Placement::Here);
    }
    if privileged() {
        return Ok(Placement::Here);
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    run_child(&args).map(Placement::Child)
}

/// Whether this process may build a testbed where it is: it holds `CAP_SYS_ADMIN` (new
/// network namespaces) and `CAP_NET_ADMIN` (links, qdiscs, firewall rules). Root usually
/// does; a container's root often does not (Docker drops both), and then, like an
/// ordinary user, it builds its testbed in a user namespace of its own.
pub fn privileged() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return nix::unistd::geteuid().is_root();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0 && caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The pid of the child, while one runs (0: none), for the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Runs this executable with `args` as the child and waits for it. Ctrl-C reaches the
/// child from the terminal; the parent waits for it to tear down (SIGTERM sent to the
/// parent alone is passed on).
fn run_child(args: &[OsString]) -> Result<ExitStatus, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the homa executable to re-run: {e}"))?;
    // Installed at most once; a process that already has a handler keeps it.
    let _ = ctrlc::set_handler(|| match CHILD.load(Ordering::SeqCst) {
        0 => std::process::exit(130),
        pid => {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    });
    let mut child = Command::new(&exe)
        .args(args)
        .env(CHILD_ENV, "1")
        .env(PARENT_ENV, std::process::id().to_string())
        .spawn()
        .map_err(|e| format!("cannot re-run {}: {e}", exe.display()))?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    status.map_err(|e| format!("cannot wait for the namespaced child: {e}"))
}

/// Has the kernel send this child SIGTERM when the parent that waits for it is gone (its
/// handler then tears the testbed down, as for Ctrl-C). Killed outright, the parent
/// passes nothing on: the child ran its whole measurement unseen, and, killed in turn,
/// left its hosts' processes in namespaces no one else can reach. Set after entering
/// the namespace, whose change of credentials would clear it.
fn end_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    // Gone before that: the parent is another process already.
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    if parent.is_some_and(|p| std::os::unix::process::parent_id() != p) {
        let _ = nix::sys::signal::raise(Signal::SIGTERM);
    }
}

/// Becomes root of a new user namespace with its own network and mount namespaces, and a
/// private, writable `/run`. Must run before this process starts any thread.
fn enter() -> Result<(), String> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS,
    )
    .map_err(|e| {
        format!(
            "the kernel refuses a user namespace: unshare: {e}{}",
            hint(e)
        )
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(file, &text).map_err(|e| {
            format!("cannot map root in the user namespace: writing {text:?} to {file}: {e}")
        })
    };
    // Kernels before 3.19 have no setgroups file and need no denial.
    if Path::new("/proc/self/setgroups").exists() {
        write("/proc/self/setgroups", "deny".into())?;
    }
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    let mount_err = |what: &str, e: nix::Error| {
        format!(
            "the kernel refuses mounts in the user namespace ({what}: {e}){}",
            hint(e)
        )
    };
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| mount_err("making / private", e))?;
    // `ip netns` keeps its handles in /var/run/netns, usually /run/netns.
    let mut dirs = vec![Path::new("/run").to_path_buf()];
    if let Ok(var_run) = std::fs::canonicalize("/var/run") {
        if !dirs.contains(&var_run) {
            dirs.push(var_run);
        }
    }
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| mount_err(&format!("tmpfs on {}", dir.display()), e))?;
    }
    Ok(())
}

/// Which kernel setting most likely refused, from the sysctls that exist here.
fn hint(e: nix::Error) -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "; kernel.unprivileged_userns_clone is 0".into();
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "; user.max_user_namespaces is 0".into();
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "; kernel.apparmor_restrict_unprivileged_userns is 1".into();
    }
    match e {
        nix::Error::EPERM => "; a seccomp filter (as in containers) may forbid it".into(),
        nix::Error::EINVAL => "; the process already runs threads".into(),
        nix::Error::ENOSPC => "; a user.max_user_namespaces limit is reached".into(),
        _ => String::new(),
    }
}

/// The exit code a parent passes on for its child's `status`: the child's own, or 128 +
/// the signal that ended it, as a shell reports.
pub fn exit_code(status: ExitStatus) -> std::process::ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
