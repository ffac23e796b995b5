//! What a run costs the machine: busy CPU time and context switches of the whole machine
//! (from `/proc/stat`), and system calls (counted by `perf stat -a` where `perf` is
//! installed and the kernel lets it count tracepoints system-wide; `None` elsewhere).
//!
//! Machine-wide on purpose: every host of a testbed is a process of this machine, and the
//! kernel's forwarding through the emulated switch (veth, bridge, htb) runs in whichever
//! process sends, or in softirq context. A measurement on a machine doing other work counts
//! that work too; take the numbers on a quiet one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{sysconf, Pid, SysconfVar};

use crate::net::find_program;

/// The machine's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Busy CPU time, all cores, in clock ticks (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// All CPU time, idle included, in clock ticks.
    total: u64,
    /// Context switches since boot.
    ctxt: u64,
}

fn sample() -> Option<Sample> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let ctxt = text
        .lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .and_then(|n| n.trim().parse().ok())?;
    Some(Sample {
        busy: total - idle,
        total,
        ctxt,
    })
}

/// What the machine spent between [`Meter::start`] and [`Meter::stop`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Share of all cores' time that was busy: 1.0 means saturated.
    pub cpu_busy: f64,
    /// Busy CPU time, all cores, seconds.
    pub cpu_seconds: f64,
    /// Context switches, all cores.
    pub switches: u64,
    /// System calls, all processes (`None` where `perf` could not count them).
    pub syscalls: Option<u64>,
}

/// Counts what the whole machine spends from [`start`](Meter::start) to
/// [`stop`](Meter::stop).
#[derive(Debug)]
pub struct Meter {
    before: Option<Sample>,
    perf: Option<(Child, PathBuf)>,
}

/// How long `perf stat` gets to start counting before the measured work begins.
const PERF_START: Duration = Duration::from_millis(300);

impl Meter {
    /// Start counting; `dir` holds `perf`'s output (`tag` names the file).
    pub fn start(dir: &Path, tag: &str) -> Meter {
        let out = dir.join(format!("{tag}-syscalls.csv"));
        let perf = find_program("perf").and_then(|perf| {
            let child = Command::new(perf)
                .args([
                    "stat",
                    "-a",
                    "-x",
                    ",",
                    "-e",
                    "raw_syscalls:sys_enter",
                    "-o",
                ])
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            std::thread::sleep(PERF_START);
            Some((child, out))
        });
        Meter {
            before: sample(),
            perf,
        }
    }

    /// Stop counting: what the machine spent since [`start`](Self::start) (`None` if
    /// `/proc/stat` could not be read).
    pub fn stop(self) -> Option<Cost> {
        let after = sample();
        let syscalls = self.perf.and_then(|(mut child, out)| {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            // perf ends by raising the SIGINT again, so its status says nothing; a
            // refusal (no permission, no tracefs) prints no count.
            let _ = child.wait();
            let text = std::fs::read_to_string(&out).ok()?;
            let _ = std::fs::remove_file(&out);
            parse_perf_count(&text, "raw_syscalls:sys_enter")
        });
        let (b, a) = (self.before?, after?);
        let hz = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&h| h > 0)
            .unwrap_or(100) as f64;
        let (busy, total) = (
            a.busy.saturating_sub(b.busy),
            a.total.saturating_sub(b.total),
        );
        Some(Cost {
            cpu_busy: if total > 0 {
                busy as f64 / total as f64
            } else {
                0.0
            },
            cpu_seconds: busy as f64 / hz,
            switches: a.ctxt.saturating_sub(b.ctxt),
            syscalls,
        })
    }
}

/// The count of `event` in `perf stat -x ,` output (`None` if it was not counted).
fn parse_perf_count(text: &str, event: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split(',');
        let count = f.next()?;
        let _unit = f.next()?;
        (f.next()? == event).then(|| count.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_counts_are_read_and_refusals_are_none() {
        let text = "# started on Mon\n\n123456,,raw_syscalls:sys_enter,4001,100.00,,\n";
        assert_eq!(
            parse_perf_count(text, "raw_syscalls:sys_enter"),
            Some(123_456)
        );
        let refused = "<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n";
        assert_eq!(parse_perf_count(refused, "raw_syscalls:sys_enter"), None);
        assert_eq!(parse_perf_count("", "raw_syscalls:sys_enter"), None);
    }

    #[test]
    fn the_machine_can_be_metered() {
        let dir = std::env::temp_dir();
        let m = Meter::start(&dir, &format!("cost-test-{}", std::process::id()));
        // Some work, so that something is counted.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::sleep(Duration::from_millis(20));
        let c = m.stop().expect("/proc/stat is readable on Linux");
        assert!((0.0..=1.0).contains(&c.cpu_busy), "{c:?}");
        assert!(c.switches > 0, "{c:?}");
        if let Some(n) = c.syscalls {
            assert!(n > 0, "{c:?}");
        }
        // Where perf is installed and root may count tracepoints, it must have counted.
        let root = nix::unistd::geteuid().is_root();
        if root && find_program("perf").is_some() && tracefs_syscalls() {
            assert!(
                c.syscalls.is_some(),
                "perf is here but counted nothing: {c:?}"
            );
        } else {
            eprintln!("system calls not counted here (no perf, not root or no tracefs)");
        }
    }

    fn tracefs_syscalls() -> bool {
        [
            "/sys/kernel/tracing/events/raw_syscalls",
            "/sys/kernel/debug/tracing/events/raw_syscalls",
        ]
        .iter()
        .any(|p| Path::new(p).exists())
    }
}
