//! The [`Testbed`] itself: building the namespaces, veths, bridge, htb classes and loss
//! rule, reading the counters back, and tearing it all down.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sched::CloneFlags;

use super::cmd::*;
use super::config::*;
use super::hysteresis;
use super::lifetime::*;
use super::offloads;

/// A running testbed: namespaces, links, qdiscs and loss rule, torn down by
/// [`teardown`](Testbed::teardown), on drop, or on Ctrl-C/SIGTERM.
///
/// `Testbed` is `Sync`: threads can share it (e.g. in an `Arc`) to start hosts' work.
#[derive(Debug)]
pub struct Testbed {
    pub(super) config: TestbedConfig,
    pub(super) tools: Tools,
    pub(super) plan: Arc<Plan>,
    /// The current loss fraction, as `f64` bits.
    pub(super) loss: AtomicU64,
    pub(super) warnings: Vec<String>,
    pub(super) torn_down: bool,
    /// htb hysteresis held on for this testbed (`Err`: why it is off).
    pub(super) hysteresis: Result<hysteresis::Held, String>,
}

impl Testbed {
    /// Build a testbed: check the configuration, that this process is root and that the
    /// programs needed exist (`ip` and `tc`; `nft` when `loss` > 0), then create
    /// namespaces, links, qdiscs and the loss rule. On a failure midway, whatever was
    /// built is torn down before the error is returned.
    pub fn create(config: TestbedConfig) -> Result<Testbed, TestbedError> {
        config.validate()?;
        if !crate::userns::privileged() {
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
        let hysteresis = if config.htb_hysteresis {
            hysteresis::hold()
        } else {
            Err("not asked for".into())
        };
        if let Err(why) = &hysteresis {
            // Refused in a rootless run's user namespace: expected, and said by
            // `htb_hysteresis()`. Anything else is worth a line.
            if config.htb_hysteresis && !crate::userns::is_child() {
                warnings.push(format!(
                    "htb hysteresis stays off ({why}): the switch's rate limiting costs \
                     about a third more CPU, counted in every transport's CPU figures"
                ));
            }
        }
        register(&plan);
        // From here on, dropping `testbed` (as `?` does) tears down what was built.
        let mut testbed = Testbed {
            hysteresis,
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

    pub(super) fn build(&mut self) -> Result<(), TestbedError> {
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
        if let Err(e) = bridge_through_netfilter(&self.plan.switch) {
            self.warnings.push(format!(
                "the switch's bridge does not pass IPv4 through netfilter ({e}): a packet \
                 queued at a switch port stays charged to its sender's socket, so a full port \
                 holds senders back instead of dropping their packets (modprobe br_netfilter)"
            ));
        }
        self.build_switch()?;
        for i in 0..self.config.hosts {
            self.build_host(i)?;
        }
        if !self.config.offloads {
            self.disable_offloads();
        }
        self.build_qdiscs()?;
        if self.config.loss > 0.0 {
            self.set_loss(self.config.loss)?;
        }
        Ok(())
    }

    /// Record our pid, start time and namespaces, so [`clean_stale`] can tell whether the
    /// testbed's owner is gone.
    pub(super) fn write_marker(&self) -> Result<(), TestbedError> {
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
    pub(super) fn build_switch(&self) -> Result<(), TestbedError> {
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

    pub(super) fn build_host(&self, i: usize) -> Result<(), TestbedError> {
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

    /// TSO, GSO, GRO and UDP segmentation offload off on both ends of every veth
    /// ([`turned_off`](offloads::turned_off)), through the kernel's ethtool interface,
    /// so that every packet crosses the bottleneck MTU-sized, as on a wire. What stays on
    /// is a warning (the testbed still works, with larger packets at the bottleneck, and
    /// the bench lists it among its problems).
    pub(super) fn disable_offloads(&mut self) {
        let outcomes = self.on_every_link(|link| link.turn_off(offloads::turned_off));
        self.warnings
            .extend(left_on(outcomes).unwrap_or_else(|e| vec![e.to_string()]));
    }

    /// The offloads the testbed turns off (TSO, GSO, GRO, UDP segmentation) that are on
    /// at either end of a link, each as `namespace/device: feature`: empty when the
    /// links are as the testbed built them.
    pub fn offloads_left_on(&self) -> io::Result<Vec<String>> {
        left_on(self.on_every_link(|link| link.active(offloads::turned_off)))
    }

    /// `f` on every veth end (host `eth0`s and switch ports), one thread per namespace;
    /// each outcome with its `namespace/device`.
    fn on_every_link<T: Send + 'static>(
        &self,
        f: fn(&offloads::Link) -> io::Result<T>,
    ) -> Vec<(String, io::Result<T>)> {
        let switch_ports: Vec<String> = (0..self.config.hosts).map(switch_port).collect();
        let namespaces = self
            .plan
            .hosts
            .iter()
            .map(|host| (host.clone(), vec![HOST_INTERFACE.to_owned()]))
            .chain([(self.plan.switch.clone(), switch_ports)]);
        let threads: Vec<_> = namespaces
            .map(|(ns, devs)| {
                let names: Vec<String> = devs.iter().map(|d| format!("{ns}/{d}")).collect();
                let thread = spawn_in_netns(netns_path(&ns), "testbed-link".into(), move || {
                    devs.iter()
                        .map(|dev| offloads::Link::open(dev).and_then(|link| f(&link)))
                        .collect::<Vec<_>>()
                });
                (names, thread)
            })
            .collect();
        let mut outcomes = Vec::new();
        for (names, thread) in threads {
            let results = thread.and_then(|t| {
                t.join()
                    .map_err(|_| io::Error::other("the namespace's thread panicked"))
            });
            match results {
                Ok(results) => outcomes.extend(names.into_iter().zip(results)),
                Err(e) => outcomes.extend(
                    names
                        .into_iter()
                        .map(|n| (n, Err(io::Error::new(e.kind(), e.to_string())))),
                ),
            }
        }
        outcomes
    }

    /// On every switch port: htb, parent class at the link rate, 8 priority classes,
    /// optional explicit pfifos, u32 filters on the TOS precedence bits, and a network
    /// control class served with the highest for ARP (the htb default: what no filter
    /// matches), ICMP and IGMP. One `tc` batch.
    pub(super) fn build_qdiscs(&self) -> Result<(), TestbedError> {
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
                "qdisc add dev {dev} root handle 1: htb default {CONTROL_MINOR}\n\
                 class add dev {dev} parent 1: classid 1:1 htb rate {link_bps}bit \
                 ceil {link_bps}bit burst {burst}b cburst {burst}b quantum {QUANTUM}\n\
                 class add dev {dev} parent 1:1 classid 1:{CONTROL_MINOR} htb \
                 rate {class_bps}bit ceil {link_bps}bit cburst {burst}b prio 0 quantum {QUANTUM}"
            );
            // The kernel's own ICMP errors and IGMP reports carry TOS 0xc0: steered by
            // it they would count, now and then, as Homa priority 6 traffic (1 is ICMP, 2 IGMP).
            for protocol in [1, 2] {
                let _ = writeln!(
                    batch,
                    "filter add dev {dev} parent 1: protocol ip prio 1 u32 \
                     match ip protocol {protocol} 0xff flowid 1:{CONTROL_MINOR}"
                );
            }
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
                    "filter add dev {dev} parent 1: protocol ip prio 2 u32 \
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

    /// Why a testbed cannot be built in this process, if it cannot: not root, or root but
    /// refused new network namespaces (a container without the privilege, a kernel without
    /// them). `None` means it should work: a testbed that then fails to build (a missing
    /// tool, a failing command) has another reason, which [`create`](Testbed::create)
    /// says. For tests that skip where namespaces are not permitted.
    pub fn unavailable() -> Option<String> {
        if !crate::userns::privileged() {
            return Some(
                "not privileged (the testbed needs CAP_SYS_ADMIN and CAP_NET_ADMIN for \
                 network namespaces and qdiscs)"
                    .into(),
            );
        }
        // A throwaway thread enters a new namespace of its own, which goes when it ends.
        let probe = std::thread::spawn(|| nix::sched::unshare(CloneFlags::CLONE_NEWNET))
            .join()
            .expect("namespace probe thread");
        probe.err().map(|e| {
            format!("root, but the kernel refuses this process a new network namespace: {e}")
        })
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

    /// Problems that did not stop the testbed (offloads left on, Ctrl-C handler not installed,
    /// IPv6 left on), for the caller to show.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the kernel's htb hysteresis is on while this testbed lives (see
    /// [`TestbedConfig::htb_hysteresis`]): off when not asked for, or when this process
    /// may not set it (a rootless run's user namespace). Without it, every transport's CPU
    /// figures include about a third more of the switch's work.
    pub fn htb_hysteresis(&self) -> bool {
        self.hysteresis.is_ok()
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

    pub(super) fn host_path(&self, i: usize) -> io::Result<PathBuf> {
        let ns = self.plan.hosts.get(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host {i} of {}", self.config.hosts),
            )
        })?;
        Ok(netns_path(ns))
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

pub(super) fn switch_port(i: usize) -> String {
    format!("s{i}")
}

/// Turn IPv6 off in a namespace (for `all` and for interfaces created later).
pub(super) fn disable_ipv6(ns: &str) -> io::Result<()> {
    let knobs =
        ["all", "default"].map(|conf| format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"));
    match write_sysctls(ns, "testbed-ipv6", knobs, "1") {
        // A kernel without IPv6 has nothing to turn off.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Make the switch's bridge hand IPv4 packets to netfilter (`br_netfilter`,
/// `net.bridge.bridge-nf-call-iptables`; a new namespace starts with it on wherever the
/// module is loaded). The switch needs it for what it does on the way, not for any rule:
/// the IPv4 receive path it takes detaches each packet from its sender's socket.
/// Without it the kernel keeps a forwarded packet charged to the socket that sent it
/// (veths no longer detach packets that cross namespaces) until the receiving host takes
/// it, so a packet waiting at a switch port holds its sender's send buffer: a UDP sender
/// at 3x a port's rate was slowed to the port's rate with nothing dropped, and TCP's small
/// queues would count the switch's queue as its own. A real switch does neither. It costs
/// CPU (a route lookup per forwarded packet, 4-5% of the machine at W4, 1 Gbps), alike
/// for every transport. `NotFound`: the module is not loaded.
pub(super) fn bridge_through_netfilter(ns: &str) -> io::Result<()> {
    let knobs = ["/proc/sys/net/bridge/bridge-nf-call-iptables".to_string()];
    write_sysctls(ns, "testbed-brnf", knobs, "1")
}

/// Write `value` to each of `knobs` (paths under /proc/sys/net) inside namespace `ns`.
fn write_sysctls<const N: usize>(
    ns: &str,
    thread: &str,
    knobs: [String; N],
    value: &'static str,
) -> io::Result<()> {
    let path = netns_path(ns);
    spawn_in_netns(path, thread.into(), move || -> io::Result<()> {
        // /proc/sys/net shows the namespace of the thread that opens it.
        knobs
            .iter()
            .try_for_each(|knob| std::fs::write(knob, value))
    })?
    .join()
    .map_err(|_| io::Error::other(format!("{thread} thread panicked")))?
}

/// Parse `tc -s class show dev sN`: blocks starting `class htb 1:1p ...` followed by a
/// ` Sent B bytes P pkt (dropped D, ...` line.
pub(super) fn parse_class_stats(host: usize, out: &str) -> Result<LinkStats, String> {
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

/// Every feature still on, as `namespace/device: feature`, or the first error.
fn left_on(outcomes: Vec<(String, io::Result<Vec<String>>)>) -> io::Result<Vec<String>> {
    let mut on = Vec::new();
    for (link, outcome) in outcomes {
        let features = outcome.map_err(|e| {
            io::Error::new(e.kind(), format!("{link}: offloads not read or set: {e}"))
        })?;
        on.extend(
            features
                .into_iter()
                .map(|f| format!("{link}: {f} stays on")),
        );
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

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
}
