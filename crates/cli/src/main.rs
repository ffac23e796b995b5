//! The `homa` command: argument parsing, calls into the library crates, printing.
//!
//! Each subcommand has a module with its clap `Args` and a `run` that returns the exit
//! status; the work is done by the libraries: `homa-dump` (the capture decoder),
//! `homa-perf` (load generators, statistics, the metrics scraper), `homa-testbed` (the
//! namespace testbed and its bench), `homa-sim`, `homa-harness` (chaos).
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

mod chaos;
mod demo;
mod dump;
mod metrics;
mod perf;
mod sim;
mod testbed;

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
    Dump(dump::DumpArgs),
    /// Many RPCs between in-memory endpoints over a faulty network, every byte checked.
    Chaos(chaos::ChaosArgs),
    /// A process's Homa counters from its metrics endpoint (`homa perf server` has one),
    /// or their rates over an interval.
    Metrics(metrics::MetricsArgs),
    /// Benchmarks: Homa vs TCP (and a UDP floor) over real sockets.
    Perf(perf::PerfArgs),
    /// Homa and TCP side by side across an emulated congested switch (or on loopback):
    /// a mixed workload, the short messages' tail latency over each.
    Demo(demo::DemoArgs),
    /// Simulate a datacenter running the Homa engine (the SIGCOMM paper's network).
    Sim(sim::SimArgs),
    /// Hosts in network namespaces behind an emulated switch (rate, priorities, loss); as
    /// root, or in a user namespace of its own.
    Testbed(testbed::TestbedArgs),
}

/// Whether a file can be written at `path`: checked before a run, which may take minutes,
/// rather than found out after it. An existing file is opened for appending and left as
/// it was; a file created by the check is removed.
pub(crate) fn check_writable(path: &Path) -> std::io::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The environment variable that sets what is logged: a `tracing` filter such as
/// `homa=debug` (RPC failures, ICMP errors, GSO fallback) or `homa=trace` (every packet).
/// Unset, the Homa crates' warnings are printed ([`DEFAULT_LOG`]); `HOMA_LOG=off` silences
/// them.
const LOG_ENV: &str = "HOMA_LOG";

/// What is logged when `HOMA_LOG` is unset: the warnings of the Homa crates (a socket
/// buffer the kernel would not grant in full, a socket that drops the requests sent to
/// it), which a user acts on.
const DEFAULT_LOG: &str = "homa=warn";

/// Exit status when the output pipe closed: what a shell reports for death by SIGPIPE.
const BROKEN_PIPE_EXIT: u8 = 128 + 13;

/// Whether a panic's message is the standard library's about printing to a closed pipe.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    msg.starts_with("failed printing to std") && msg.contains("Broken pipe")
}

/// Output piped into a program that stopped reading (`homa dump x.pcap | head`) ends the
/// command quietly, as it does other Unix tools, instead of with a panic message. (Not by
/// restoring SIGPIPE's default action: that would also kill perf servers whose TCP peers
/// go away.) The process exits at once, except on the main thread of the commands that
/// build a testbed (`demo`, `testbed`): there the panic unwinds, unprinted, to `main`, so
/// that the namespaces, the servers and the kernel setting the testbed changed are put
/// back on the way (an immediate exit left them all behind).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default(info);
        } else if !UNWIND_ON_BROKEN_PIPE.load(std::sync::atomic::Ordering::Relaxed)
            || std::thread::current().name() != Some("main")
        {
            std::process::exit(BROKEN_PIPE_EXIT.into());
        }
    }));
}

/// Set for the commands whose main thread must unwind on a closed pipe (see
/// [`quiet_on_broken_pipe`]).
static UNWIND_ON_BROKEN_PIPE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn main() -> ExitCode {
    // A perf process a testbed bench started stops when the bench is gone.
    homa_testbed::leftovers::exit_with_parent_if_asked();
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    {
        let filter = std::env::var(LOG_ENV).unwrap_or_else(|_| DEFAULT_LOG.to_string());
        match tracing_subscriber::EnvFilter::try_new(&filter) {
            Ok(filter) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                // Colours only for a terminal: a log piped to a file stays plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init(),
            Err(e) => {
                eprintln!("error: {LOG_ENV}={filter:?} is not a valid log filter: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if matches!(cli.command, Command::Demo(_) | Command::Testbed(_)) {
        UNWIND_ON_BROKEN_PIPE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let run = std::panic::AssertUnwindSafe(|| match cli.command {
        Command::Dump(args) => dump::run(&args),
        Command::Chaos(args) => chaos::run(&args),
        Command::Metrics(args) => metrics::run(&args),
        Command::Perf(args) => perf::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Testbed(args) => testbed::run(&args),
    });
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(p) if is_broken_pipe(p.as_ref()) => ExitCode::from(BROKEN_PIPE_EXIT),
        Err(p) => std::panic::resume_unwind(p),
    }
}
