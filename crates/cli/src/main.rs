//! The `homa` command. Argument parsing and dispatch only: each subcommand's logic lives in
//! the `homa_cli` library, one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tools for the Homa transport.
#[derive(Debug, Parser)]
#[command(name = "homa", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand, each holding that module's `Args`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Decode the Homa packets in a pcap/pcapng capture, or one packet given in hex.
    Dump(homa_cli::dump::DumpArgs),
    /// Many RPCs between in-memory endpoints over a faulty network, every byte checked.
    Chaos(homa_cli::chaos::ChaosArgs),
    /// Benchmarks: Homa vs TCP (and a UDP floor) over real sockets.
    Perf(homa_cli::perf::PerfArgs),
    /// Homa and TCP side by side on loopback: a short mixed workload, one table.
    Demo(homa_cli::demo::DemoArgs),
    /// Simulate a datacenter running the Homa engine (the SIGCOMM paper's network).
    Sim(homa_cli::sim::SimArgs),
    /// Hosts in network namespaces behind an emulated switch (rate, priorities, loss); root.
    Testbed(homa_cli::testbed::TestbedArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Dump(args) => homa_cli::dump::run(&args),
        Command::Chaos(args) => homa_cli::chaos::run(&args),
        Command::Perf(args) => homa_cli::perf::run(&args),
        Command::Demo(args) => homa_cli::demo::run(&args),
        Command::Sim(args) => homa_cli::sim::run(&args),
        Command::Testbed(args) => homa_cli::testbed::run(&args),
    }
}
