//! The testbed's configuration and its checks, its errors, the switch's counters, and the
//! names and constants the other rooms share.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Number of Homa priority levels, and of htb classes per switch port.
pub const PRIORITIES: usize = 8;

/// Name of each host's interface toward the switch, inside the host namespace.
pub const HOST_INTERFACE: &str = "eth0";

/// Most hosts a testbed can have (one /24, addresses .1 to .250).
pub const MAX_HOSTS: usize = 250;

/// Where `ip netns` keeps its namespace handles.
pub(super) const NETNS_DIR: &str = "/var/run/netns";
/// Where testbeds record who made them, for [`clean_stale`].
pub(super) const MARKER_DIR: &str = "/run/homa-testbed";
/// Prefix of default testbed names; [`clean_stale`] recognises `htb<pid>...` names.
pub(super) const DEFAULT_PREFIX: &str = "htb";
/// The nftables table holding the loss rule, in the switch namespace.
pub(super) const NFT_TABLE: &str = "homa_testbed";
/// The bridge in the switch namespace.
pub(super) const BRIDGE: &str = "br0";
/// Explicit htb quantum (one full frame): keeps htb from deriving one from the rate and
/// warning that it is too big or too small.
pub(super) const QUANTUM: u32 = 1514;
/// Minor number of each switch port's network control class (`1:20`): ARP, ICMP and
/// IGMP, served with the highest Homa priority. ARP in the lowest class (where htb sends
/// what no filter matches by default) waited behind a full queue of scheduled data, or
/// was dropped with it: a host whose neighbour entry for another expired (every 15-45 s
/// without a TCP ACK to confirm it; UDP confirms nothing) could not send to it for 0.1-0.6
/// s, and with a large `max_incoming` Homa's clients timed out whole batches of RPCs.
pub(super) const CONTROL_MINOR: u32 = 20;
/// Loss is applied as `numgen random mod LOSS_SCALE < loss * LOSS_SCALE`.
pub(super) const LOSS_SCALE: f64 = 1e6;
/// How long a process asked to stop (SIGTERM) has to exit before SIGKILL: at teardown, the
/// processes left in the namespaces; in the bench, its servers.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(1);
/// Longest testbed name; namespace names append up to 4 characters (`h249`).
pub(super) const MAX_NAME_LEN: usize = 16;

/// How to build a [`Testbed`](super::Testbed).
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
    /// Turn on the kernel's htb hysteresis while the testbed lives (machine-wide, put
    /// back afterwards; needs real root): the switch's rate limiting then costs about a
    /// third less CPU, with the same long-term rate. On by default; see
    /// [`Testbed::htb_hysteresis`](super::Testbed::htb_hysteresis).
    pub htb_hysteresis: bool,
    /// Leave TSO, GSO and GRO on at every veth (off by default): a sender's segments of up
    /// to 64 KB then cross the switch whole, as with a NIC that segments and coalesces
    /// (TSO and GRO), where by default every packet crosses MTU-sized, as on a wire.
    pub offloads: bool,
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
            htb_hysteresis: true,
            offloads: false,
        }
    }
}

/// A fresh default name: `htb<pid>` for the first, `htb<pid>-<n>` after.
pub(super) fn default_name() -> String {
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
    /// Check every field; [`Testbed::create`](super::Testbed::create) does this first.
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
        let first = self.subnet.octets()[0];
        if first == 0 || self.subnet.is_loopback() || self.subnet.is_multicast() || first >= 240 {
            return invalid(
                "subnet",
                format!(
                    "{} is not a unicast network for hosts (0.x, loopback, multicast or \
                     reserved): use a private one such as 10.200.0.0",
                    self.subnet
                ),
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

pub(super) fn check_loss(loss: f64) -> Result<(), TestbedError> {
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
    /// The process may not make network namespaces and qdiscs here (not root, or a
    /// root without `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`, as in most containers).
    #[error(
        "needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN (network namespaces and qdiscs); \
         run it with sudo"
    )]
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

pub(super) fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> TestbedError {
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
    use super::*;

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
                subnet: Ipv4Addr::new(255, 255, 255, 0),
                ..Default::default()
            },
            TestbedConfig {
                subnet: Ipv4Addr::new(127, 1, 2, 0),
                ..Default::default()
            },
            TestbedConfig {
                subnet: Ipv4Addr::new(224, 0, 1, 0),
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
}
