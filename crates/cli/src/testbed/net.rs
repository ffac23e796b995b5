//! A small datacenter in network namespaces: N hosts on one switch with rate-limited,
//! 8-priority egress ports and optional random loss.
//!
//! # Topology
//!
//! ```text
//!   host ns <name>h0            switch ns <name>sw              host ns <name>h1
//!  ┌──────────────────┐      ┌─────────────────────────┐      ┌──────────────────┐
//!  │ eth0 10.200.0.1  ├─veth─┤ s0 ─┐             ┌── s1 ├─veth─┤ eth0 10.200.0.2  │
//!  │ lo               │      │     └── br0 ──────┘      │      │ lo               │  ...
//!  └──────────────────┘      │  htb on each sN: egress  │      └──────────────────┘
//!                            │  toward host N, 8 classes│
//!                            │  nft: random IPv4 loss   │
//!                            └─────────────────────────┘
//! ```
//!
//! Each host is a network namespace (`<name>h<i>`) whose `eth0` is one end of a veth pair;
//! the other end (`s<i>`) sits in the switch namespace (`<name>sw`), enslaved to the Linux
//! bridge `br0`. Host `i` has the address `subnet + i + 1` in a /24 (10.200.0.1, 10.200.0.2,
//! ... by default) and its loopback up. TSO, GSO and GRO are turned off on both ends of
//! every veth, so the kernel segments before the bottleneck and every packet crossing it
//! is at most MTU-sized (1500 bytes), as on a real wire.
//!
//! # The bottleneck and priorities
//!
//! The switch port toward each host (root qdisc of `s<i>`) is an htb with one parent class
//! at the link rate (`rate` = `ceil` = `gbps`) and 8 children, one per Homa priority. Homa
//! priority `p` (0..=7, 7 highest) travels as IP TOS `p << 5`, the 3 precedence bits; u32
//! filters on those bits steer a packet to child `1:1p`, whose htb `prio` is `7 - p`, so
//! higher Homa priorities are served first:
//!
//! | Homa priority | TOS byte | htb class | htb prio |
//! |---|---|---|---|
//! | 7 | 0xe0 | 1:17 | 0 (first) |
//! | 6 | 0xc0 | 1:16 | 1 |
//! | ... | ... | ... | ... |
//! | 0 | 0x00 | 1:10 | 7 (last) |
//!
//! Traffic no filter matches (ARP) goes to the lowest class, 1:10, as does TOS 0. The
//! kernel's own ICMP errors and IGMP reports carry TOS 0xc0 and so count as priority 6. Each
//! leaf queue is the kernel's default pfifo (1000 packets, the veth's `txqueuelen`), or
//! `pfifo limit N` with [`TestbedConfig::queue_packets`]. [`Testbed::link_stats`] reads the
//! per-class counters back.
//!
//! # Loss
//!
//! With a loss fraction `f` > 0, one nftables rule in the switch namespace (bridge family,
//! forward hook, table `homa_testbed`) drops each IPv4 packet crossing the switch with
//! probability `f`, in either direction and independently. [`Testbed::set_loss`] changes
//! it at run time.
//!
//! # What is emulated and what is not
//!
//! Emulated: each host's downlink rate (the switch's egress port, where Homa's receivers
//! see congestion), 8 priority queues at that port, finite switch buffers, random loss,
//! and a real kernel IPv4/UDP stack per host. Not emulated:
//! - *propagation delay*: the kernel here has no netem, so round trips are software time;
//! - *host uplink rate*: a host's own sends are not rate-limited (only the switch's egress
//!   toward each host is), so one sender can exceed the link rate toward several receivers;
//! - *strict priority*: htb guarantees each class a small rate (1% of the link) before the
//!   priorities order what is left, so a backlogged low class still gets that 1%;
//! - *separate machines*: every host shares this machine's CPUs, so a busy host slows the
//!   others, and timer slack in htb makes the rate approximate (bursts of up to 100 µs at
//!   the link rate after idle);
//! - *IPv6*: it is turned off in every namespace; the testbed is IPv4 only.
//!
//! # Lifetime
//!
//! Namespaces are global state that outlives a crashed process, so they are torn down
//! three ways: [`Testbed::teardown`] (or dropping the [`Testbed`]); a Ctrl-C/SIGTERM handler,
//! installed once per process, that tears down every live testbed and exits with status
//! 130; and [`clean_stale`], which removes what a dead process left behind. Each testbed
//! writes a marker file under `/run/homa-testbed/` naming its creator (pid and start time)
//! and its namespaces; the default name `htb<pid>` also carries the pid.
//!
//! Creating a testbed needs root; every command run (`ip`, `tc`, `nft`) that fails is
//! reported with its command line and its stderr.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Number of Homa priority levels, and of htb classes per switch port.
pub const PRIORITIES: usize = 8;

/// Name of each host's interface toward the switch, inside the host namespace.
pub const HOST_INTERFACE: &str = "eth0";

/// Most hosts a testbed can have (one /24, addresses .1 to .250).
pub const MAX_HOSTS: usize = 250;

/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/var/run/netns";
/// Where testbeds record who made them, for [`clean_stale`].
const MARKER_DIR: &str = "/run/homa-testbed";
/// Prefix of default testbed names; [`clean_stale`] recognises `htb<pid>...` names.
const DEFAULT_PREFIX: &str = "htb";
/// The nftables table holding the loss rule, in the switch namespace.
const NFT_TABLE: &str = "homa_testbed";
/// The bridge in the switch namespace.
const BRIDGE: &str = "br0";
/// Explicit htb quantum (one full frame): keeps htb from deriving one from the rate and
/// warning that it is too big or too small.
const QUANTUM: u32 = 1514;
/// Loss is applied as `numgen random mod LOSS_SCALE < loss * LOSS_SCALE`.
const LOSS_SCALE: f64 = 1e6;
/// How long teardown waits for processes in the namespaces to exit after SIGTERM, before
/// SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// Longest testbed name; namespace names append up to 4 characters (`h249`).
const MAX_NAME_LEN: usize = 16;

/// How to build a [`Testbed`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestbedConfig {
    /// Number of hosts, 2..=250.
    pub hosts: usize,
    /// Rate of every switch egress port (toward each host), in Gbit/s; > 0.
    pub gbps: f64,
    /// Fraction of IPv4 packets the switch drops at random, in [0, 1).
    pub loss: f64,
    /// Packets each priority queue of a switch port holds; `None` keeps the kernel's
    /// default (1000, the port's `txqueuelen`).
    pub queue_packets: Option<u32>,
    /// The hosts' /24: host `i` gets `subnet + i + 1`. The last octet must be 0.
    pub subnet: Ipv4Addr,
    /// MTU of every link, 576..=65535 (1500, Ethernet's, by default; jumbo frames of 9000
    /// cut the per-packet CPU cost six-fold, which a small machine may need to carry the
    /// load of several hosts).
    pub mtu: u32,
    /// Prefix of the namespace names (`<name>h0`.., `<name>sw`): up to 16 ASCII letters,
    /// digits, `-` or `_`. The default, `htb<pid>` (then `htb<pid>-1`, `htb<pid>-2`, ... for
    /// further testbeds of the same process), is unique per testbed.
    pub name: String,
}

impl Default for TestbedConfig {
    fn default() -> Self {
        TestbedConfig {
            hosts: 4,
            gbps: 1.0,
            loss: 0.0,
            queue_packets: None,
            subnet: Ipv4Addr::new(10, 200, 0, 0),
            mtu: 1500,
            name: default_name(),
        }
    }
}

/// A fresh default name: `htb<pid>` for the first, `htb<pid>-<n>` after.
fn default_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    if n == 0 {
        format!("{DEFAULT_PREFIX}{pid}")
    } else {
        format!("{DEFAULT_PREFIX}{pid}-{n}")
    }
}

impl TestbedConfig {
    /// Check every field; [`Testbed::create`] does this first.
    pub fn validate(&self) -> Result<(), TestbedError> {
        let invalid = |field: &'static str, reason: String| {
            Err(TestbedError::InvalidConfig { field, reason })
        };
        if !(2..=MAX_HOSTS).contains(&self.hosts) {
            return invalid("hosts", format!("{} is not in 2..={MAX_HOSTS}", self.hosts));
        }
        if !(self.gbps.is_finite() && self.gbps > 0.0 && self.gbps <= 1000.0) {
            return invalid("gbps", format!("{} is not in (0, 1000]", self.gbps));
        }
        check_loss(self.loss)?;
        if self.queue_packets == Some(0) {
            return invalid(
                "queue_packets",
                "a queue must hold at least 1 packet".into(),
            );
        }
        if !(576..=65535).contains(&self.mtu) {
            return invalid("mtu", format!("{} is not in 576..=65535", self.mtu));
        }
        if self.subnet.octets()[3] != 0 {
            return invalid(
                "subnet",
                format!("{} is not a /24 network address (x.y.z.0)", self.subnet),
            );
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && !self.name.starts_with('-')
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return invalid(
                "name",
                format!(
                    "{:?} must be 1..={MAX_NAME_LEN} ASCII letters, digits, '-' or '_', \
                     not starting with '-'",
                    self.name
                ),
            );
        }
        Ok(())
    }
}

fn check_loss(loss: f64) -> Result<(), TestbedError> {
    if loss.is_finite() && (0.0..1.0).contains(&loss) {
        Ok(())
    } else {
        Err(TestbedError::InvalidConfig {
            field: "loss",
            reason: format!("{loss} is not in [0, 1)"),
        })
    }
}

/// Why a testbed operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The process is not root.
    #[error("needs root (network namespaces and qdiscs); run it with sudo")]
    NotRoot,
    /// A program the testbed runs is not installed.
    #[error("`{program}` not found in PATH, /usr/sbin or /sbin (Debian package: {package})")]
    MissingTool {
        /// The program.
        program: &'static str,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A [`TestbedConfig`] field is out of range.
    #[error("invalid testbed setting `{field}`: {reason}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A namespace the testbed would create already exists.
    #[error(
        "network namespace {0} already exists: another testbed has this name \
         (`homa testbed clean` removes those whose process is gone)"
    )]
    NameInUse(String),
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line (for batches, the failing line too).
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command's output was not what the testbed expected.
    #[error("cannot parse the output of `{command}`: {reason}")]
    Parse {
        /// The command line.
        command: String,
        /// What was unexpected.
        reason: String,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestbedError {
    let what = what.into();
    move |source| TestbedError::Io { what, source }
}

/// Counters of one priority class of a switch port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PriorityStats {
    /// Packets sent on toward the host.
    pub packets: u64,
    /// Bytes sent on toward the host (Ethernet frames, without FCS).
    pub bytes: u64,
    /// Packets dropped because the class's queue was full.
    pub dropped: u64,
}

/// Counters of the switch port toward one host, per Homa priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// The host the port leads to.
    pub host: usize,
    /// Per Homa priority (index 7 = highest): the htb class `1:1p`.
    pub priorities: [PriorityStats; PRIORITIES],
}

impl LinkStats {
    /// The sum over all priorities.
    pub fn total(&self) -> PriorityStats {
        self.priorities
            .iter()
            .fold(PriorityStats::default(), |a, p| PriorityStats {
                packets: a.packets + p.packets,
                bytes: a.bytes + p.bytes,
                dropped: a.dropped + p.dropped,
            })
    }
}

/// Paths of the programs the testbed runs.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    tc: PathBuf,
    nft: Option<PathBuf>,
    ethtool: Option<PathBuf>,
}

impl Tools {
    fn find() -> Result<Tools, TestbedError> {
        Ok(Tools {
            ip: require_program("ip", "iproute2")?,
            tc: require_program("tc", "iproute2")?,
            nft: find_program("nft"),
            ethtool: find_program("ethtool"),
        })
    }
}

/// Look for an executable in PATH, then in the sbin directories (`sudo` may leave them out
/// of PATH).
fn find_program(name: &str) -> Option<PathBuf> {
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

fn require_program(name: &'static str, package: &'static str) -> Result<PathBuf, TestbedError> {
    find_program(name).ok_or(TestbedError::MissingTool {
        program: name,
        package,
    })
}

/// The command line, for error messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion, optionally feeding it `stdin`; its stdout on success.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, TestbedError> {
    let line = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
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
fn with_failing_line(line: &str, input: &str, stderr: &str) -> String {
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
fn list_netns(ip: &Path) -> Result<HashSet<String>, TestbedError> {
    let out = run(Command::new(ip).args(["netns", "list"]), None)?;
    // Lines look like "name" or "name (id: 3)".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Pids of the processes in a namespace (`ip netns pids`).
fn netns_pids(ip: &Path, ns: &str) -> Result<Vec<i32>, TestbedError> {
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
fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// if it is running (not a zombie).
fn process_start(pid: i32) -> Option<u64> {
    let fields = proc_stat(pid)?;
    if fields.first().map(String::as_str) == Some("Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Stop every process in the namespace except this one: SIGTERM, then SIGKILL for those
/// still running after [`KILL_GRACE`].
fn kill_processes(ip: &Path, ns: &str) -> Result<(), TestbedError> {
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
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        let running: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&p| process_start(p).is_some())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for p in running {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kill what runs in a namespace, then delete it.
fn delete_netns(ip: &Path, ns: &str) -> Result<(), TestbedError> {
    let killed = kill_processes(ip, ns);
    run(Command::new(ip).args(["netns", "delete", ns]), None)?;
    killed
}

/// Run `f` on a new thread that has joined the namespace at `path`. When joining fails the
/// thread ends without running `f` and the error is returned.
fn spawn_in_netns<T: Send + 'static>(
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

/// What exists (or may exist) of one testbed, shared by the [`Testbed`] and the process-wide
/// registry the signal handler tears down from.
#[derive(Debug)]
struct Plan {
    name: String,
    switch: String,
    hosts: Vec<String>,
    marker: PathBuf,
    ip: PathBuf,
    /// Namespaces this process created and has not deleted yet. Holding the lock while
    /// destroying makes the signal handler and `teardown` exclusive: whoever comes second
    /// finds nothing left.
    created: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop a teardown.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Plan {
    /// Kill the processes in, and delete, every namespace created; remove the marker.
    /// Keeps going after a failure and returns the first.
    fn destroy(&self) -> Result<(), TestbedError> {
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
    fn namespaces(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.switch).chain(&self.hosts)
    }
}

/// Live testbeds of this process, for the signal handler.
static LIVE: Mutex<Vec<Arc<Plan>>> = Mutex::new(Vec::new());

fn register(plan: &Arc<Plan>) {
    lock(&LIVE).push(Arc::clone(plan));
}

fn unregister(plan: &Arc<Plan>) {
    lock(&LIVE).retain(|p| !Arc::ptr_eq(p, plan));
}

/// Install the Ctrl-C/SIGTERM handler once per process. Returns a warning when another
/// handler is already installed (then that one decides what happens on Ctrl-C).
fn install_signal_handler() -> Option<String> {
    static ONCE: Once = Once::new();
    let mut warning = None;
    ONCE.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            let plans = std::mem::take(&mut *lock(&LIVE));
            for plan in plans {
                eprintln!("homa testbed: tearing down {}", plan.name);
                if let Err(e) = plan.destroy() {
                    eprintln!("homa testbed: {e}");
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

/// A running testbed: namespaces, links, qdiscs and loss rule, torn down by
/// [`teardown`](Testbed::teardown), on drop, or on Ctrl-C/SIGTERM.
///
/// `Testbed` is `Sync`: threads can share it (e.g. in an `Arc`) to start hosts' work.
#[derive(Debug)]
pub struct Testbed {
    config: TestbedConfig,
    tools: Tools,
    plan: Arc<Plan>,
    /// The current loss fraction, as `f64` bits.
    loss: AtomicU64,
    warnings: Vec<String>,
    torn_down: bool,
}

impl Testbed {
    /// Build a testbed: check the configuration, that this process is root and that the
    /// programs needed exist (`ip` and `tc`; `nft` when `loss` > 0; `ethtool`, if missing,
    /// only costs a warning), then create namespaces, links, qdiscs and the loss rule. On
    /// a failure midway, whatever was built is torn down before the error is returned.
    pub fn create(config: TestbedConfig) -> Result<Testbed, TestbedError> {
        config.validate()?;
        if !nix::unistd::geteuid().is_root() {
            return Err(TestbedError::NotRoot);
        }
        let tools = Tools::find()?;
        if config.loss > 0.0 && tools.nft.is_none() {
            return Err(TestbedError::MissingTool {
                program: "nft",
                package: "nftables",
            });
        }
        let plan = Arc::new(Plan {
            name: config.name.clone(),
            switch: format!("{}sw", config.name),
            hosts: (0..config.hosts)
                .map(|i| format!("{}h{i}", config.name))
                .collect(),
            marker: Path::new(MARKER_DIR).join(&config.name),
            ip: tools.ip.clone(),
            created: Mutex::new(Vec::new()),
        });
        let existing = list_netns(&tools.ip)?;
        if let Some(ns) = plan.namespaces().find(|ns| existing.contains(*ns)) {
            return Err(TestbedError::NameInUse(ns.clone()));
        }
        let mut warnings: Vec<String> = install_signal_handler().into_iter().collect();
        if tools.ethtool.is_none() {
            warnings.push(
                "ethtool not found (Debian package: ethtool): TSO/GSO/GRO stay on, so \
                 packets larger than the MTU may cross the switch"
                    .into(),
            );
        }
        register(&plan);
        // From here on, dropping `testbed` (as `?` does) tears down what was built.
        let mut testbed = Testbed {
            loss: AtomicU64::new(0f64.to_bits()),
            config,
            tools,
            plan,
            warnings,
            torn_down: false,
        };
        testbed.build()?;
        Ok(testbed)
    }

    fn build(&mut self) -> Result<(), TestbedError> {
        self.write_marker()?;
        for ns in self.plan.namespaces() {
            run(
                Command::new(&self.tools.ip).args(["netns", "add", ns]),
                None,
            )?;
            lock(&self.plan.created).push(ns.clone());
            // Before any interface exists, so none ever sends router or multicast
            // listener solicitations into the measurements.
            if let Err(e) = disable_ipv6(ns) {
                self.warnings
                    .push(format!("cannot turn IPv6 off in {ns}: {e}"));
            }
        }
        self.build_switch()?;
        for i in 0..self.config.hosts {
            self.build_host(i)?;
        }
        self.disable_offloads();
        self.build_qdiscs()?;
        if self.config.loss > 0.0 {
            self.set_loss(self.config.loss)?;
        }
        Ok(())
    }

    /// Record our pid, start time and namespaces, so [`clean_stale`] can tell whether the
    /// testbed's owner is gone.
    fn write_marker(&self) -> Result<(), TestbedError> {
        std::fs::create_dir_all(MARKER_DIR)
            .map_err(io_error(format!("cannot create {MARKER_DIR}")))?;
        let pid = std::process::id() as i32;
        let start = process_start(pid).unwrap_or(0);
        let mut text = format!("{pid} {start}\n");
        for ns in self.plan.namespaces() {
            let _ = writeln!(text, "{ns}");
        }
        std::fs::write(&self.plan.marker, text).map_err(io_error(format!(
            "cannot write {}",
            self.plan.marker.display()
        )))
    }

    /// The bridge, and one veth pair per host with its switch end on the bridge.
    fn build_switch(&self) -> Result<(), TestbedError> {
        let mut batch = format!("link add {BRIDGE} type bridge\nlink set {BRIDGE} up\n");
        for (i, host) in self.plan.hosts.iter().enumerate() {
            let port = switch_port(i);
            let _ = writeln!(
                batch,
                "link add {port} type veth peer name {HOST_INTERFACE} netns {host}\n\
                 link set {port} mtu {mtu}\n\
                 link set {port} master {BRIDGE}\n\
                 link set {port} up",
                mtu = self.config.mtu
            );
        }
        run(
            Command::new(&self.tools.ip).args(["-n", &self.plan.switch, "-batch", "-"]),
            Some(&batch),
        )
        .map(drop)
    }

    fn build_host(&self, i: usize) -> Result<(), TestbedError> {
        let batch = format!(
            "link set {HOST_INTERFACE} mtu {}\naddr add {}/24 dev {HOST_INTERFACE}\n\
             link set {HOST_INTERFACE} up\nlink set lo up\n",
            self.config.mtu,
            self.host_ip(i)
        );
        run(
            Command::new(&self.tools.ip).args(["-n", &self.plan.hosts[i], "-batch", "-"]),
            Some(&batch),
        )
        .map(drop)
    }

    /// TSO/GSO/GRO off on both ends of every veth, and UDP segmentation offload too
    /// (`gso off` leaves it on: a UDP GSO send of up to 64 datagrams would cross the
    /// emulated link as one packet larger than the MTU, and arrive as one, giving Homa
    /// over UDP a batching that a real NIC link does not). Failures are warnings (the
    /// testbed still works, with larger packets at the bottleneck).
    fn disable_offloads(&mut self) {
        let Some(ethtool) = self.tools.ethtool.clone() else {
            return;
        };
        let ends = self.plan.hosts.iter().enumerate().flat_map(|(i, host)| {
            [
                (host.clone(), HOST_INTERFACE.to_owned()),
                (self.plan.switch.clone(), switch_port(i)),
            ]
        });
        let mut failures = Vec::new();
        let settings: [&[&str]; 2] = [
            &["tso", "off", "gso", "off", "gro", "off"],
            // Separately: a kernel that cannot change it still gets the others.
            &["tx-udp-segmentation", "off"],
        ];
        for (ns, dev) in ends {
            for features in settings {
                let mut cmd = Command::new(&self.tools.ip);
                cmd.args(["netns", "exec", &ns])
                    .arg(&ethtool)
                    .args(["-K", &dev])
                    .args(features);
                if let Err(e) = run(&mut cmd, None) {
                    failures.push(e.to_string());
                }
            }
        }
        self.warnings.extend(failures);
    }

    /// On every switch port: htb, parent class at the link rate, 8 priority classes,
    /// optional explicit pfifos, u32 filters on the TOS precedence bits. One `tc` batch.
    fn build_qdiscs(&self) -> Result<(), TestbedError> {
        let link_bps = (self.config.gbps * 1e9).round() as u64;
        // Guaranteed to each class before priorities apply; small, so priorities decide.
        let class_bps = (link_bps / 100).max(8_000);
        // Bytes the link may send back to back after idle: 100 µs worth, at least two
        // frames, so late htb timers on a busy machine don't cost throughput.
        let burst = (link_bps / 8 / 10_000).max(2 * u64::from(QUANTUM));
        let mut batch = String::new();
        for i in 0..self.config.hosts {
            let dev = switch_port(i);
            let _ = writeln!(
                batch,
                "qdisc add dev {dev} root handle 1: htb default 10\n\
                 class add dev {dev} parent 1: classid 1:1 htb rate {link_bps}bit \
                 ceil {link_bps}bit burst {burst}b cburst {burst}b quantum {QUANTUM}"
            );
            for p in 0..PRIORITIES {
                let _ = writeln!(
                    batch,
                    "class add dev {dev} parent 1:1 classid 1:1{p} htb rate {class_bps}bit \
                     ceil {link_bps}bit cburst {burst}b prio {} quantum {QUANTUM}",
                    PRIORITIES - 1 - p
                );
                if let Some(limit) = self.config.queue_packets {
                    let _ = writeln!(
                        batch,
                        "qdisc add dev {dev} parent 1:1{p} handle 1{p}: pfifo limit {limit}"
                    );
                }
                let _ = writeln!(
                    batch,
                    "filter add dev {dev} parent 1: protocol ip prio 1 u32 \
                     match ip tos {:#04x} 0xe0 flowid 1:1{p}",
                    p << 5
                );
            }
        }
        run(
            Command::new(&self.tools.tc).args(["-n", &self.plan.switch, "-batch", "-"]),
            Some(&batch),
        )
        .map(drop)
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.config.hosts
    }

    /// The configuration the testbed was built from (`loss` as at creation; see
    /// [`loss`](Testbed::loss)).
    pub fn config(&self) -> &TestbedConfig {
        &self.config
    }

    /// Host `i`'s address.
    ///
    /// # Panics
    /// If `i >= self.hosts()`.
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.config.hosts, "host {i} of {}", self.config.hosts);
        let base = u32::from(self.config.subnet);
        // i + 1 <= 250 and the subnet ends in .0: stays within the /24.
        Ipv4Addr::from(base + i as u32 + 1)
    }

    /// Host `i`'s namespace name (for `ip netns exec`).
    ///
    /// # Panics
    /// If `i >= self.hosts()`.
    pub fn netns(&self, i: usize) -> &str {
        &self.plan.hosts[i]
    }

    /// The switch namespace's name.
    pub fn switch_netns(&self) -> &str {
        &self.plan.switch
    }

    /// The name of the switch's port (in the switch namespace) toward host `i`: `s<i>`.
    pub fn switch_port(&self, i: usize) -> String {
        switch_port(i)
    }

    /// Problems that did not stop the testbed (no ethtool, Ctrl-C handler not installed,
    /// IPv6 left on), for the caller to show.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A command that runs `program` inside host `i` (`ip netns exec <ns> program`); add
    /// arguments and spawn it as usual. Processes still in the namespace at teardown are
    /// killed.
    ///
    /// # Panics
    /// If `i >= self.hosts()`.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(&self.tools.ip);
        cmd.args(["netns", "exec", &self.plan.hosts[i]])
            .arg(program);
        cmd
    }

    fn host_path(&self, i: usize) -> io::Result<PathBuf> {
        let ns = self.plan.hosts.get(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host {i} of {}", self.config.hosts),
            )
        })?;
        Ok(Path::new(NETNS_DIR).join(ns))
    }

    /// Run `f` on a new thread inside host `i`'s network namespace. Sockets it creates
    /// belong to that namespace, and keep doing so when handed to other threads. The
    /// error is returned (and `f` not run) when the namespace cannot be entered.
    pub fn in_host<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<JoinHandle<T>> {
        let path = self.host_path(i)?;
        spawn_in_netns(path, format!("testbed-h{i}"), f)
    }

    /// Move the calling thread into host `i`'s network namespace (for code that wants to
    /// create sockets there and hand them to other threads). Only this thread moves; it
    /// stays there.
    pub fn enter_host(&self, i: usize) -> io::Result<()> {
        let path = self.host_path(i)?;
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
            io::Error::new(
                io::Error::from(errno).kind(),
                format!("setns({}): {errno}", path.display()),
            )
        })
    }

    /// The fraction of IPv4 packets the switch currently drops, as applied (in millionths).
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss.load(Ordering::Relaxed))
    }

    /// Make the switch drop each IPv4 packet with probability `fraction` (in [0, 1)); 0
    /// removes the rule. The fraction is rounded to millionths. The change is atomic (one
    /// `nft -f` transaction).
    pub fn set_loss(&self, fraction: f64) -> Result<(), TestbedError> {
        check_loss(fraction)?;
        let ppm = (fraction * LOSS_SCALE).round() as u64;
        let applied = ppm as f64 / LOSS_SCALE;
        if ppm == 0 && self.loss() == 0.0 {
            return Ok(());
        }
        let nft = self.tools.nft.as_ref().ok_or(TestbedError::MissingTool {
            program: "nft",
            package: "nftables",
        })?;
        // Adding then deleting the table makes the delete succeed whether or not it
        // existed; the whole script is one transaction.
        let mut script = format!("add table bridge {NFT_TABLE}\ndelete table bridge {NFT_TABLE}\n");
        if ppm > 0 {
            let _ = write!(
                script,
                "table bridge {NFT_TABLE} {{\n\
                 \tchain forward {{\n\
                 \t\ttype filter hook forward priority 0; policy accept;\n\
                 \t\tmeta protocol ip numgen random mod {} < {ppm} counter drop\n\
                 \t}}\n\
                 }}\n",
                LOSS_SCALE as u64
            );
        }
        let mut cmd = Command::new(&self.tools.ip);
        cmd.args(["netns", "exec", &self.plan.switch])
            .arg(nft)
            .args(["-f", "-"]);
        run(&mut cmd, Some(&script))?;
        self.loss.store(applied.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Counters of every switch port (toward host 0, 1, ...), per Homa priority, from
    /// `tc -s class show`.
    pub fn link_stats(&self) -> Result<Vec<LinkStats>, TestbedError> {
        (0..self.config.hosts)
            .map(|i| {
                let mut cmd = Command::new(&self.tools.tc);
                cmd.args(["-n", &self.plan.switch, "-s", "class", "show", "dev"])
                    .arg(switch_port(i));
                let out = run(&mut cmd, None)?;
                parse_class_stats(i, &out).map_err(|reason| TestbedError::Parse {
                    command: describe(&cmd),
                    reason,
                })
            })
            .collect()
    }

    /// Kill every process still in the testbed's namespaces (except this one), then delete
    /// the namespaces (which removes the links, qdiscs and loss rule with them). Keeps
    /// going after a failure and returns the first.
    pub fn teardown(mut self) -> Result<(), TestbedError> {
        self.torn_down = true;
        let result = self.plan.destroy();
        unregister(&self.plan);
        result
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if !self.torn_down {
            // Best effort: there is no one to report to.
            let _ = self.plan.destroy();
            unregister(&self.plan);
        }
    }
}

fn switch_port(i: usize) -> String {
    format!("s{i}")
}

/// Turn IPv6 off in a namespace (for `all` and for interfaces created later).
fn disable_ipv6(ns: &str) -> io::Result<()> {
    let path = Path::new(NETNS_DIR).join(ns);
    spawn_in_netns(path, "testbed-sysctl".into(), || -> io::Result<()> {
        // /proc/sys/net shows the namespace of the thread that opens it.
        for conf in ["all", "default"] {
            let knob = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            match std::fs::write(&knob, "1") {
                // A kernel without IPv6 has nothing to turn off.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                r => r?,
            }
        }
        Ok(())
    })?
    .join()
    .map_err(|_| io::Error::other("IPv6 thread panicked"))?
}

/// Parse `tc -s class show dev sN`: blocks starting `class htb 1:1p ...` followed by a
/// ` Sent B bytes P pkt (dropped D, ...` line.
fn parse_class_stats(host: usize, out: &str) -> Result<LinkStats, String> {
    let mut stats = LinkStats {
        host,
        ..LinkStats::default()
    };
    let mut seen = [false; PRIORITIES];
    let mut current: Option<usize> = None;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["class", "htb", id, ..] => {
                current = id
                    .strip_prefix("1:1")
                    .and_then(|p| p.parse::<usize>().ok())
                    .filter(|&p| p < PRIORITIES && id.len() == 4);
            }
            ["Sent", bytes, "bytes", packets, "pkt", "(dropped", dropped, ..] => {
                let Some(p) = current.take() else { continue };
                let num = |w: &str| {
                    w.trim_end_matches(',')
                        .parse::<u64>()
                        .map_err(|_| format!("{w:?} is not a number in {line:?}"))
                };
                stats.priorities[p] = PriorityStats {
                    packets: num(packets)?,
                    bytes: num(bytes)?,
                    dropped: num(dropped)?,
                };
                seen[p] = true;
            }
            _ => {}
        }
    }
    match seen.iter().position(|s| !s) {
        Some(p) => Err(format!("no counters for class 1:1{p} (Homa priority {p})")),
        None => Ok(stats),
    }
}

/// The pid in a default name's namespace (`htb<pid>h3`, `htb<pid>-2sw`), if it is one.
fn default_name_pid(ns: &str) -> Option<i32> {
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

/// Delete the testbed namespaces whose creating process no longer exists (after killing
/// what still runs in them), and their markers. Testbeds of live processes are left alone.
/// Returns the namespaces deleted.
pub fn clean_stale() -> Result<Vec<String>, TestbedError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(TestbedError::NotRoot);
    }
    let ip = require_program("ip", "iproute2")?;
    let existing = list_netns(&ip)?;
    let mut protected = HashSet::new();
    let mut deleted = Vec::new();
    let mut first_error = None;
    let markers = match std::fs::read_dir(MARKER_DIR) {
        Ok(dir) => dir.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(format!("cannot read {MARKER_DIR}"))(e)),
    };
    for marker in markers {
        let Ok(text) = std::fs::read_to_string(&marker) else {
            continue;
        };
        let mut lines = text.lines();
        let owner: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let alive = match owner.as_slice() {
            [pid, start] => match (pid.parse::<i32>(), start.parse::<u64>()) {
                (Ok(pid), Ok(start)) => process_start(pid).is_some_and(|s| s == start),
                _ => false,
            },
            _ => false,
        };
        let namespaces: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
        if alive {
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
    match first_error {
        Some(e) if deleted.is_empty() => Err(e),
        // Report what was removed; a namespace that would not go shows up next time.
        _ => Ok(deleted),
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

    #[test]
    fn validation() {
        assert!(TestbedConfig::default().validate().is_ok());
        let bad = [
            TestbedConfig {
                hosts: 1,
                ..Default::default()
            },
            TestbedConfig {
                hosts: 251,
                ..Default::default()
            },
            TestbedConfig {
                gbps: 0.0,
                ..Default::default()
            },
            TestbedConfig {
                gbps: f64::NAN,
                ..Default::default()
            },
            TestbedConfig {
                loss: 1.0,
                ..Default::default()
            },
            TestbedConfig {
                loss: -0.1,
                ..Default::default()
            },
            TestbedConfig {
                queue_packets: Some(0),
                ..Default::default()
            },
            TestbedConfig {
                subnet: Ipv4Addr::new(10, 200, 0, 1),
                ..Default::default()
            },
            TestbedConfig {
                name: "a/b".into(),
                ..Default::default()
            },
            TestbedConfig {
                name: "x".repeat(17),
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(TestbedError::InvalidConfig { .. })),
                "{c:?}"
            );
        }
    }

    #[test]
    fn class_stats_from_tc_output() {
        let mut out = String::from(
            "class htb 1:1 root rate 1Gbit ceil 1Gbit burst 12500b cburst 12500b \n \
             Sent 9999 bytes 99 pkt (dropped 0, overlimits 0 requeues 0) \n \
             backlog 0b 0p requeues 0\n\n",
        );
        for p in 0..8u64 {
            let _ = write!(
                out,
                "class htb 1:1{p} parent 1:1 prio {} rate 10Mbit ceil 1Gbit burst 1600b \
                 cburst 12500b \n Sent {} bytes {} pkt (dropped {}, overlimits 0 requeues 0) \n \
                 backlog 0b 0p requeues 0\n lended: 1 borrowed: 0 giants: 0\n\n",
                7 - p,
                1000 * p,
                10 * p,
                p
            );
        }
        let stats = parse_class_stats(2, &out).unwrap();
        assert_eq!(stats.host, 2);
        assert_eq!(
            stats.priorities[7],
            PriorityStats {
                packets: 70,
                bytes: 7000,
                dropped: 7
            }
        );
        assert_eq!(stats.total().packets, 280);
        assert!(
            parse_class_stats(0, "class htb 1:1 root\n Sent 1 bytes 1 pkt (dropped 0,").is_err()
        );
    }

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
