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

use crate::net::{find_program, gone_within_grace};

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
/// How many times [`Meter::stop`] sends `perf stat` a SIGINT, a grace apart, before it
/// kills it (and reports no count).
const PERF_STOP_ASKS: usize = 10;

/// The `perf stat` processes of the meters running now, which [`stop_all`] ends.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ask every running meter's `perf stat` to stop (SIGINT: it writes its count and ends).
/// For a process about to exit without stopping its meters (a Ctrl-C handler): `perf
/// stat -a` started by a bench counts the whole machine until told to stop, and outlived
/// a bench ended by a signal to its pid alone.
pub fn stop_all() {
    for &pid in running().iter() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
    }
}

impl Meter {
    /// Start counting; `dir` holds `perf`'s output (`tag` names the file).
    ///
    /// `perf` runs under `setpriv --pdeathsig INT` where util-linux's `setpriv` is
    /// there, so that it stops when this process dies however it dies (killed outright,
    /// or a panic that skips [`stop`](Self::stop)); a running meter is also stopped by
    /// [`stop_all`] and when dropped.
    pub fn start(dir: &Path, tag: &str) -> Meter {
        let out = dir.join(format!("{tag}-syscalls.csv"));
        let perf = find_program("perf").and_then(|perf| {
            let mut cmd = match find_program("setpriv") {
                Some(setpriv) => {
                    let mut c = Command::new(setpriv);
                    c.args(["--pdeathsig", "INT", "--"]).arg(perf);
                    c
                }
                None => Command::new(perf),
            };
            let child = cmd
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
            running().push(child.id());
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
    pub fn stop(mut self) -> Option<Cost> {
        let after = sample();
        let syscalls = self.perf.take().and_then(|(mut child, out)| {
            // A SIGINT that reaches perf while it is still starting up can be lost (seen
            // under a loaded machine: perf then counted on for good, and this wait never
            // ended), so it is asked again after each grace, and killed if it never goes.
            let pid = Pid::from_raw(child.id() as i32);
            let stopped = (0..PERF_STOP_ASKS).any(|_| {
                let _ = kill(pid, Signal::SIGINT);
                gone_within_grace(|| matches!(child.try_wait(), Ok(None)))
            });
            if !stopped {
                let _ = child.kill();
            }
            // perf ends by raising the SIGINT again, so its status says nothing; a
            // refusal (no permission, no tracefs) prints no count.
            let _ = child.wait();
            running().retain(|&p| p != child.id());
            let text = std::fs::read_to_string(&out).ok();
            let _ = std::fs::remove_file(&out);
            parse_perf_count(&text.filter(|_| stopped)?, "raw_syscalls:sys_enter")
        });
        let (b, a) = (self.before?, after?);
        let hz = clock_ticks_per_second();
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

impl Drop for Meter {
    /// A meter never stopped (an error or a panic between start and stop) stops its
    /// `perf stat`, which would otherwise count on after this process.
    fn drop(&mut self) {
        if let Some((mut child, out)) = self.perf.take() {
            let _ = child.kill();
            let _ = child.wait();
            running().retain(|&p| p != child.id());
            let _ = std::fs::remove_file(&out);
        }
    }
}

/// CPU time of processes, as the kernel accounts it to them: in user space and in the
/// kernel on their behalf (system calls, and the forwarding and delivery those calls run
/// through the emulated switch). What the kernel does in softirq context outside any
/// host's process (ksoftirqd, timers) is in the machine's [`Cost`] and not here.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessCpu {
    /// Seconds in user space.
    pub user: f64,
    /// Seconds in the kernel.
    pub system: f64,
}

impl ProcessCpu {
    /// Of the running process `pid` so far, its ended threads included (`None` if it
    /// is gone or `/proc` cannot be read).
    pub fn of(pid: u32) -> Option<ProcessCpu> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat_times(&text, clock_ticks_per_second())
    }

    /// Of every child of this process that has ended and been waited for.
    pub fn of_reaped_children() -> Option<ProcessCpu> {
        use nix::sys::resource::{getrusage, UsageWho};
        let u = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
        Some(ProcessCpu {
            user: secs(u.user_time()),
            system: secs(u.system_time()),
        })
    }

    /// This and `other` together.
    pub fn plus(self, other: ProcessCpu) -> ProcessCpu {
        ProcessCpu {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }

    /// What was spent since `earlier` (never negative).
    pub fn since(self, earlier: ProcessCpu) -> ProcessCpu {
        ProcessCpu {
            user: (self.user - earlier.user).max(0.0),
            system: (self.system - earlier.system).max(0.0),
        }
    }

    /// User and kernel time together, seconds.
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// CPU time of a bench run's host processes by role: the load generators (clients) and
/// the servers, all hosts summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoleCpu {
    /// The clients' processes, over their whole lives (they start with the load and end
    /// after it).
    pub clients: ProcessCpu,
    /// The servers' processes, from the start of the load to its end.
    pub servers: ProcessCpu,
}

fn clock_ticks_per_second() -> f64 {
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)
        .unwrap_or(100) as f64
}

/// User and system time from the text of `/proc/<pid>/stat` (`utime` and `stime`, the
/// 14th and 15th fields, in clock ticks of `hz`). The command name (2nd field) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_times(text: &str, hz: f64) -> Option<ProcessCpu> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // state is field 3: utime is 11 after it
    let user: u64 = f.next()?.parse().ok()?;
    let system: u64 = f.next()?.parse().ok()?;
    Some(ProcessCpu {
        user: user as f64 / hz,
        system: system as f64 / hz,
    })
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
    fn process_times_are_read_past_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let text = "4242 (homa (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9\n";
        assert_eq!(
            parse_stat_times(text, 100.0),
            Some(ProcessCpu {
                user: 2.5,
                system: 0.75
            })
        );
        assert_eq!(parse_stat_times("4242 (cut", 100.0), None);
        assert_eq!(parse_stat_times("", 100.0), None);
    }

    #[test]
    fn this_process_and_its_reaped_children_have_cpu_times() {
        let before = ProcessCpu::of_reaped_children().expect("getrusage");
        // A child that burns some CPU, waited for.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let spent = ProcessCpu::of_reaped_children()
            .expect("getrusage")
            .since(before);
        assert!(spent.total() > 0.0, "{spent:?}");
        let me = ProcessCpu::of(std::process::id()).expect("/proc/self/stat");
        assert!(me.user >= 0.0 && me.system >= 0.0, "{me:?}");
        assert_eq!(ProcessCpu::of(u32::MAX), None);
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
