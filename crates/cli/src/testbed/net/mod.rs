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
//!
//! `build` makes and unmakes a testbed, `cmd` runs the tools, `lifetime` makes sure
//! nothing outlives its creator; this file holds the configuration, errors and counters.

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

mod build;
mod cmd;
mod lifetime;

pub use build::Testbed;
use cmd::*;
pub use lifetime::clean_stale;
use lifetime::*;

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

#[cfg(test)]
mod tests {
    use super::build::parse_class_stats;
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
