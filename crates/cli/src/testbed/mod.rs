//! `homa testbed`: a few hosts in network namespaces behind one emulated switch with
//! rate-limited, 8-priority ports and optional loss, for running Homa (and TCP) across a
//! real bottleneck on one machine.
//!
//! - `up`: build a testbed, print how to use it, and tear it down on Ctrl-C.
//! - `clean`: remove testbeds left behind by processes that no longer exist.
//! - `bench`: Homa (UDP and raw IP) and TCP at the same offered load across the testbed,
//!   slowdown by message length, and the shortest messages' tail compared ([`bench`](mod@bench)).
//!
//! The testbed itself is the [`net`] library, which programs (and tests) use directly.
//! Without root, `up` and `bench` run in a user namespace of their own ([`userns`]).

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod bench;
pub mod net;
pub mod userns;

use net::{Testbed, TestbedConfig, TestbedError};

/// Arguments of `homa testbed`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Network namespaces, qdiscs and nftables rules: as root, or else in a user \
                  namespace of its own where the kernel allows unprivileged ones (the \
                  testbed then vanishes with the process)."
)]
pub struct TestbedArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TestbedCommand,
}

/// The `homa testbed` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TestbedCommand {
    /// Build a testbed, print its hosts and example commands, wait for Ctrl-C, tear down.
    Up(UpArgs),
    /// Remove testbed namespaces left by processes that no longer exist.
    Clean,
    /// Homa vs TCP at the same load across the testbed: slowdown by message length.
    Bench(bench::BenchArgs),
}

/// Arguments of `homa testbed up`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 130 after Ctrl-C/SIGTERM (everything torn down), 1 when the \
                  testbed cannot be built (neither root nor a user namespace, a tool \
                  missing, a command failed), 2 \
                  for bad arguments."
)]
pub struct UpArgs {
    /// Number of hosts (2..=250).
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Rate of each switch port toward a host, in Gbit/s.
    #[arg(long, default_value_t = 1.0)]
    pub gbps: f64,
    /// Fraction of IPv4 packets the switch drops at random, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Packets each priority queue of a switch port holds (default: the kernel's 1000).
    #[arg(long)]
    pub queue_packets: Option<u32>,
    /// The hosts' /24 network: host i gets .(i+1).
    #[arg(long, default_value = "10.200.0.0")]
    pub subnet: Ipv4Addr,
    /// MTU of every link.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u32,
    /// Prefix of the namespace names (default: `htb<pid>`).
    #[arg(long)]
    pub name: Option<String>,
}

impl UpArgs {
    /// The testbed these arguments ask for.
    pub fn config(&self) -> TestbedConfig {
        let mut config = TestbedConfig {
            hosts: self.hosts,
            gbps: self.gbps,
            loss: self.loss,
            queue_packets: self.queue_packets,
            subnet: self.subnet,
            mtu: self.mtu,
            ..TestbedConfig::default()
        };
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        config
    }
}

/// Run `homa testbed`.
pub fn run(args: &TestbedArgs) -> ExitCode {
    if !matches!(args.command, TestbedCommand::Clean) {
        match userns::place() {
            Ok(userns::Placement::Here) => {}
            Ok(userns::Placement::Child(status)) => return userns::exit_code(status),
            Err(why) => {
                eprintln!("homa testbed: needs root, or unprivileged user namespaces: {why}");
                return ExitCode::from(1);
            }
        }
    }
    match &args.command {
        TestbedCommand::Up(up) => run_up(up),
        TestbedCommand::Clean => run_clean(),
        TestbedCommand::Bench(b) => match bench::run(b) {
            Ok(()) => ExitCode::SUCCESS,
            Err(bench::BenchError::Testbed(e) | bench::BenchError::NoTestbed(e)) => fail(&e),
            Err(e @ bench::BenchError::Usage(_)) => {
                eprintln!("homa testbed bench: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("homa testbed bench: {e}");
                ExitCode::from(1)
            }
        },
    }
}

/// Exit status for a testbed error: 2 for bad arguments, 1 for everything else.
fn fail(e: &TestbedError) -> ExitCode {
    eprintln!("homa testbed: {e}");
    match e {
        TestbedError::InvalidConfig { .. } => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn run_up(args: &UpArgs) -> ExitCode {
    let testbed = match Testbed::create(args.config()) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    for w in testbed.warnings() {
        eprintln!("homa testbed: warning: {w}");
    }
    print!("{}", describe(&testbed));
    // The signal handler tears the testbed down and exits with 130; until then, wait.
    loop {
        std::thread::park();
    }
}

/// What `up` prints: the hosts, the switch, and commands to try.
fn describe(t: &Testbed) -> String {
    let c = t.config();
    let queue = match c.queue_packets {
        Some(n) => format!("{n} packets"),
        None => "1000 packets (kernel default)".into(),
    };
    let mut s = format!(
        "testbed {}: {} hosts on one switch, {} Gbit/s toward each host, 8 priority queues \
         of {queue}, loss {}%\n",
        c.name,
        t.hosts(),
        c.gbps,
        c.loss * 100.0
    );
    for i in 0..t.hosts() {
        s += &format!("  host {i:<3} netns {:<14} {}\n", t.netns(i), t.host_ip(i));
    }
    s += &format!(
        "  switch   netns {:<14} ports s0..s{}\n",
        t.switch_netns(),
        t.hosts() - 1
    );
    let (h0, h1) = (t.netns(0), t.netns(1));
    let ip0 = t.host_ip(0);
    // Rootless, the namespaces are visible only inside this process's user and mount
    // namespaces: other terminals get there with nsenter, as the same user.
    let (who, enter) = if userns::entered() {
        (
            "as this user",
            format!("nsenter -t {} -U -m ", std::process::id()),
        )
    } else {
        ("as root", String::new())
    };
    s += &format!(
        "\nTry (in other terminals, {who}):\n  \
         {enter}ip netns exec {h0} homa perf server --addr {ip0}:4000\n  \
         {enter}ip netns exec {h1} homa perf client --server {ip0}:4000 --workload w4 --gbps {}\n  \
         {enter}ip netns exec {} tc -s class show dev s0    # per-priority counters toward host 0\n\
         \nCtrl-C tears everything down (processes still in the hosts are killed).\n",
        c.gbps * 0.8,
        t.switch_netns()
    );
    s
}

fn run_clean() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "not root: testbeds built without root live in their process's user namespace \
             and vanish with it; those built by root need `sudo homa testbed clean`"
        );
        return ExitCode::SUCCESS;
    }
    match net::clean_stale() {
        Ok(deleted) if deleted.is_empty() => {
            println!("no stale testbed namespaces");
            ExitCode::SUCCESS
        }
        Ok(deleted) => {
            for ns in &deleted {
                println!("removed {ns}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
