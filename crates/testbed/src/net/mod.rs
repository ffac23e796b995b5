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
//! every veth (unless [`TestbedConfig::offloads`]), so the kernel segments before the
//! bottleneck and every packet crossing it is at most MTU-sized (1500 bytes), as on a
//! real wire.
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
//! TOS 0 (TCP, in the bench) goes to the lowest class, 1:10. Network control goes to a
//! ninth class, 1:20, with htb prio 0 like Homa's highest: ARP (the htb default, what no
//! filter matches), and ICMP and IGMP whatever their TOS (the kernel sends its errors and
//! reports at 0xc0, and they would otherwise be counted, at unpredictable times, as Homa
//! priority 6). In the lowest class, behind a full queue of scheduled data, an ARP probe
//! or its answer could wait seconds or be dropped, and a host then could not send to the
//! neighbour it was probing. Each
//! leaf queue is the kernel's default pfifo (1000 packets, the veth's `txqueuelen`), or
//! `pfifo limit N` with [`TestbedConfig::queue_packets`]. [`Testbed::link_stats`] reads the
//! per-class counters back.
//!
//! While a testbed lives, the kernel's htb hysteresis is on ([`TestbedConfig::htb_hysteresis`],
//! machine-wide, put back afterwards; only a real root may set it): a busy port's tokens
//! hover around zero, and without hysteresis htb changes the class's mode and re-arms its
//! timer about once a packet, which took a third of this 2-core machine's CPU in a W4 run
//! at 1 Gbps, charged to whichever transport was running. With it the long-term rate is
//! the same and a port may send one more burst back to back.
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
//! `config` holds the configuration, errors and counters; `cmd` runs the tools;
//! `lifetime` makes sure nothing outlives its creator; `build` makes and unmakes a
//! testbed. Each uses only those before it.

mod build;
mod cmd;
mod config;
mod hysteresis;
mod lifetime;
mod offloads;

pub use build::Testbed;
pub(crate) use cmd::{find_program, gone_within_grace};
pub use config::{
    LinkStats, PriorityStats, TestbedConfig, TestbedError, HOST_INTERFACE, MAX_HOSTS, PRIORITIES,
};
pub use lifetime::{clean_stale, yield_to_teardown, Cleaned};
pub(crate) use lifetime::{keep_on_signal, other_processes_have_testbeds, remove_on_signal};
