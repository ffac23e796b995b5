//! What a precise timer and a cross-thread wake-up cost on this machine.
//!
//! The runtime arms a `timerfd` for its pacer (tens of microseconds ahead) and for its
//! timer ticks (a millisecond or more ahead), and hands work between threads with an
//! `eventfd` or a futex. How much each costs depends on the machine far more than on
//! our code: arming a timer that becomes the CPU's next timer event reprograms the
//! local APIC timer, which in a virtual machine exits to the hypervisor, and a wake-up
//! of a thread on another CPU sends it an inter-processor interrupt. This program
//! measures those costs, so that the system-call counts in BENCHMARKS.md can be read as
//! time:
//!
//! * `settime_near`: `timerfd_settime` to a deadline `--near-us` (default 50) ahead,
//!   moved at every call (the pacer's case: the new deadline is the CPU's next event);
//! * `settime_far`: the same, 20 ms ahead, behind the scheduler's own tick (nothing
//!   to reprogram);
//! * `sleep_near`: arm `--near-us` ahead and block in `read` until it fires: the time
//!   past the deadline at which the thread runs again (its lateness);
//! * `wake_other_cpu`: two threads pinned to CPUs 0 and 1 take turns writing each other's
//!   `eventfd` and blocking in `read` on their own: half a round trip, from one thread's
//!   write to the other running.
//!
//! Run it with `cargo bench -p homa-transport --bench timers` (`-- --count N` for more
//! samples). It prints microseconds per operation (median and 10th-90th percentiles
//! over batches), then one JSON line `{"settime_near_us":..,"settime_far_us":..,
//! "sleep_near_late_us":..,"wake_other_cpu_us":..}` (`null` where it could not run, as
//! for the wake-up on one CPU).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

fn main() {
    let mut count = 20_000usize;
    let mut near_us = 50u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| usage(&format!("{name} needs a whole number")))
        };
        match a.as_str() {
            "--count" => count = value("--count").max(100) as usize,
            "--near-us" => near_us = value("--near-us").max(1),
            "--bench" => {} // what `cargo bench` passes
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let near = near_us * 1_000;
    let rows = [
        ("settime_near", Some(per_batch(count, |n| settime(n, near)))),
        (
            "settime_far",
            Some(per_batch(count, |n| settime(n, 20_000_000))),
        ),
        (
            "sleep_near",
            Some(per_batch(count / 20, |n| sleep(n, near))),
        ),
        ("wake_other_cpu", wake_other_cpu(count)),
    ];
    println!("microseconds per operation (median, 10th-90th percentile over batches)");
    let mut json = Vec::new();
    for (name, r) in &rows {
        match r {
            Some(s) => println!(
                "  {name:<16} {:>8.2}   ({:.2}-{:.2})",
                s.median, s.p10, s.p90
            ),
            None => println!("  {name:<16} unavailable (needs two CPUs)"),
        }
        let key = match *name {
            "sleep_near" => "sleep_near_late_us".to_string(),
            n => format!("{n}_us"),
        };
        json.push(format!(
            "\"{key}\":{}",
            r.as_ref()
                .map_or("null".to_string(), |s| format!("{:.3}", s.median))
        ));
    }
    println!("{{{}}}", json.join(","));
}

fn usage(err: &str) -> ! {
    if !err.is_empty() {
        eprintln!("error: {err}");
    }
    eprintln!("usage: timers [--count N] [--near-us US]");
    std::process::exit(if err.is_empty() { 0 } else { 2 });
}

struct Spread {
    median: f64,
    p10: f64,
    p90: f64,
}

/// Run `f(batch)` (which returns microseconds per operation over `batch` operations)
/// over `total` operations in 20 batches.
fn per_batch(total: usize, mut f: impl FnMut(usize) -> f64) -> Spread {
    let batch = (total / 20).max(5);
    let mut v: Vec<f64> = (0..20).map(|_| f(batch)).collect();
    v.sort_by(f64::total_cmp);
    Spread {
        median: v[10],
        p10: v[2],
        p90: v[17],
    }
}

fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn timerfd() -> OwnedFd {
    // SAFETY: timerfd_create takes no pointers.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    assert!(
        fd >= 0,
        "timerfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is new and owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn arm(fd: &OwnedFd, at: u64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (at / 1_000_000_000) as libc::time_t,
            tv_nsec: (at % 1_000_000_000) as _,
        },
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
    let r = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "timerfd_settime: {}", std::io::Error::last_os_error());
}

fn read8(fd: &OwnedFd) {
    let mut v = 0u64;
    // SAFETY: reads at most 8 bytes into a live u64.
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// `n` moves of one timer to `ahead` nanoseconds from now (never firing).
fn settime(n: usize, ahead: u64) -> f64 {
    let fd = timerfd();
    let t0 = Instant::now();
    for i in 0..n {
        // Alternate by a microsecond so that every call moves the timer.
        arm(&fd, now_nanos() + ahead + (i as u64 & 1) * 1_000);
    }
    t0.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// `n` sleeps of `ahead` nanoseconds on a timerfd: microseconds late on average.
fn sleep(n: usize, ahead: u64) -> f64 {
    let fd = timerfd();
    let mut late = 0u64;
    for _ in 0..n {
        let at = now_nanos() + ahead;
        arm(&fd, at);
        read8(&fd);
        late += now_nanos().saturating_sub(at);
    }
    late as f64 / 1e3 / n as f64
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is new and owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn write1(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a live u64.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn pin(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Half the round trip of an eventfd ping-pong between threads on CPUs 0 and 1.
fn wake_other_cpu(count: usize) -> Option<Spread> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return None;
    }
    let (ping, pong) = (
        std::sync::Arc::new(eventfd()),
        std::sync::Arc::new(eventfd()),
    );
    let (p2, q2) = (ping.clone(), pong.clone());
    // Exactly what `per_batch` runs (20 batches), so that neither thread waits for ever.
    let rounds = (count / 4 / 20).max(5) * 20;
    let other = std::thread::spawn(move || {
        let pinned = pin(1);
        for _ in 0..rounds {
            read8(&p2);
            write1(&q2);
        }
        pinned
    });
    let pinned = pin(0);
    let spread = per_batch(rounds, |n| {
        let t0 = Instant::now();
        for _ in 0..n {
            write1(&ping);
            read8(&pong);
        }
        t0.elapsed().as_secs_f64() * 1e6 / n as f64 / 2.0
    });
    let other_pinned = other.join().unwrap_or(false);
    (pinned && other_pinned).then_some(spread)
}
