//! Slices: fresh sockets and threads per slice, CPU and system-call accounting.

use super::*;

pub(crate) fn process_cpu_time() -> Result<Duration, String> {
    let mut ru = MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the whole rusage on success; it is read only then.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } != 0 {
        return Err(format!("getrusage: {}", io::Error::last_os_error()));
    }
    // SAFETY: initialised by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// The kernel's softirq threads: under load the kernel moves network-stack work
/// (loopback delivery included) to them, and `getrusage` does not see it.
pub(crate) fn ksoftirqd_stat_paths() -> Vec<std::path::PathBuf> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .map(|p| p.join("schedstat"))
        .collect()
}

/// CPU time the `ksoftirqd` threads have run (the first field of `schedstat`, in ns),
/// or `None` where that is unreadable.
pub(crate) fn ksoftirqd_time(paths: &[std::path::PathBuf]) -> Option<Duration> {
    if paths.is_empty() {
        return None;
    }
    let mut ns = 0u64;
    for p in paths {
        let s = std::fs::read_to_string(p).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// Counters summed over slices.
#[derive(Default, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) elapsed: Duration,
    pub(crate) cpu: Duration,
    /// `ksoftirqd` CPU time; `None` once any slice could not read it.
    pub(crate) softirqd: Option<Duration>,
    pub(crate) rpcs: u64,
    pub(crate) lost: u64,
    pub(crate) client_iterations: u64,
    pub(crate) syscalls: u64,
    pub(crate) dropped_sends: u64,
    pub(crate) truncated: u64,
    pub(crate) enobufs: u64,
    pub(crate) rearms: u64,
}

impl Sample {
    pub(crate) fn snapshot(
        shared: &Shared,
        softirqd: &[std::path::PathBuf],
    ) -> Result<(Instant, Sample), String> {
        let r = Ordering::Relaxed;
        let (c, s) = (&shared.client, &shared.server);
        let softirqd = ksoftirqd_time(softirqd);
        let cpu = process_cpu_time()?;
        let now = Instant::now();
        Ok((
            now,
            Sample {
                elapsed: Duration::ZERO,
                cpu,
                softirqd,
                rpcs: c.rpcs.load(r),
                lost: c.lost.load(r),
                client_iterations: c.iterations.load(r),
                syscalls: c.syscalls.load(r) + s.syscalls.load(r),
                dropped_sends: c.dropped_sends.load(r) + s.dropped_sends.load(r),
                truncated: c.truncated.load(r) + s.truncated.load(r),
                enobufs: c.enobufs.load(r) + s.enobufs.load(r),
                rearms: c.rearms.load(r) + s.rearms.load(r),
            },
        ))
    }

    /// `self` minus the earlier snapshot `a`.
    pub(crate) fn since(&self, a: &Sample) -> Sample {
        Sample {
            elapsed: self.elapsed.saturating_sub(a.elapsed),
            cpu: self.cpu.saturating_sub(a.cpu),
            softirqd: self
                .softirqd
                .zip(a.softirqd)
                .map(|(b, a)| b.saturating_sub(a)),
            rpcs: self.rpcs - a.rpcs,
            lost: self.lost - a.lost,
            client_iterations: self.client_iterations - a.client_iterations,
            syscalls: self.syscalls - a.syscalls,
            dropped_sends: self.dropped_sends - a.dropped_sends,
            truncated: self.truncated - a.truncated,
            enobufs: self.enobufs - a.enobufs,
            rearms: self.rearms - a.rearms,
        }
    }

    pub(crate) fn add(&mut self, b: &Sample) {
        self.elapsed += b.elapsed;
        self.cpu += b.cpu;
        self.softirqd = self.softirqd.zip(b.softirqd).map(|(a, b)| a + b);
        self.rpcs += b.rpcs;
        self.lost += b.lost;
        self.client_iterations += b.client_iterations;
        self.syscalls += b.syscalls;
        self.dropped_sends += b.dropped_sends;
        self.truncated += b.truncated;
        self.enobufs += b.enobufs;
        self.rearms += b.rearms;
    }

    pub(crate) fn rps(&self) -> f64 {
        self.rpcs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn per_rpc(&self, x: f64) -> Option<f64> {
        (self.rpcs > 0).then(|| x / self.rpcs as f64)
    }

    pub(crate) fn cpu_us_per_rpc(&self) -> Option<f64> {
        self.per_rpc(self.cpu.as_secs_f64() * 1e6)
    }

    pub(crate) fn softirqd_us_per_rpc(&self) -> Option<f64> {
        self.per_rpc(self.softirqd?.as_secs_f64() * 1e6)
    }
}

/// What every slice shares.
pub(crate) struct Plan {
    pub(crate) window: usize,
    pub(crate) slice: Duration,
    /// CPUs for the server and the client thread.
    pub(crate) cpus: (Option<usize>, Option<usize>),
    pub(crate) softirqd: Vec<std::path::PathBuf>,
}

/// One measured slice of `variant` on fresh sockets and threads; returns the ring setup
/// (io_uring variants) and the counts.
pub(crate) fn run_slice(variant: Variant, plan: &Plan) -> Result<(String, Sample), String> {
    let (client_sock, server_sock) = socket_pair(variant)?;
    let server_addr = local_v4(&server_sock)?;
    let shared = Arc::new(Shared::default());
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (role, cpu, socket) in [
        (Role::Server, plan.cpus.0, server_sock),
        (Role::Client(server_addr), plan.cpus.1, client_sock),
    ] {
        let spec = WorkerSpec {
            variant,
            role,
            window: plan.window,
            cpu,
        };
        let theirs = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("{}-{}", variant.name(), handles.len()))
            .spawn(move || worker(spec, socket, &theirs, ready));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                return Err(format!("spawning a thread: {e}"));
            }
        }
    }
    drop(ready_tx);
    let mut setup = Ok(String::new());
    for _ in 0..2 {
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(desc)) if !desc.is_empty() => setup = setup.map(|_| desc),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => setup = Err(e),
            Err(_) => setup = Err("a worker did not start".into()),
        }
    }
    let measured = setup.and_then(|desc| {
        thread::sleep(WARMUP);
        let (t0, a) = Sample::snapshot(&shared, &plan.softirqd)?;
        thread::sleep(plan.slice);
        let (t1, mut b) = Sample::snapshot(&shared, &plan.softirqd)?;
        b.elapsed = t1 - t0;
        Ok((desc, b.since(&a)))
    });
    shared.stop.store(true, Ordering::Relaxed);
    let mut worker_error = None;
    for h in handles {
        let r = h.join().unwrap_or_else(|_| Err("a worker panicked".into()));
        if let Err(e) = r {
            worker_error.get_or_insert(e);
        }
    }
    match worker_error {
        Some(e) => Err(e),
        None => measured,
    }
}
