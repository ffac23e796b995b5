//! The client and server loops, and the threads that run them.

use super::*;

/// Counters a worker publishes after every loop iteration, on their own cache line.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    pub(crate) rpcs: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) iterations: AtomicU64,
    pub(crate) syscalls: AtomicU64,
    pub(crate) dropped_sends: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) enobufs: AtomicU64,
    pub(crate) rearms: AtomicU64,
}

impl Counters {
    pub(crate) fn publish(&self, rpcs: u64, lost: u64, iterations: u64, io: IoStats) {
        let r = Ordering::Relaxed;
        self.rpcs.store(rpcs, r);
        self.lost.store(lost, r);
        self.iterations.store(iterations, r);
        self.syscalls.store(io.syscalls, r);
        self.dropped_sends.store(io.dropped_sends, r);
        self.truncated.store(io.truncated, r);
        self.enobufs.store(io.enobufs, r);
        self.rearms.store(io.rearms, r);
    }
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) client: Counters,
    pub(crate) server: Counters,
}

/// Keep `window` requests outstanding; a request unanswered for `LOSS_TIMEOUT` counts
/// as lost and is replaced (a late response to it is ignored).
pub(crate) fn client_loop<T: Transport>(
    t: &mut T,
    server: SocketAddrV4,
    window: usize,
    shared: &Shared,
) -> Result<(), String> {
    let mut request = [0u8; PAYLOAD];
    // Requests from sequence number `front` on: when each was sent, whether answered.
    let mut front: u64 = 0;
    let mut requests: VecDeque<(Instant, bool)> = VecDeque::with_capacity(2 * window);
    let mut outstanding = 0;
    let (mut rpcs, mut lost, mut iterations) = (0u64, 0u64, 0u64);
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(&(sent, answered)) = requests.front() {
            if !answered {
                if now.duration_since(sent) < LOSS_TIMEOUT {
                    break;
                }
                lost += 1;
                outstanding -= 1;
            }
            requests.pop_front();
            front += 1;
        }
        while outstanding < window {
            let seq = front + requests.len() as u64;
            request[..8].copy_from_slice(&seq.to_le_bytes());
            t.queue().push(server, &request);
            requests.push_back((now, false));
            outstanding += 1;
        }
        let mut done = 0;
        t.exchange(|_, _, response| {
            let Some(seq) = response.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) else {
                return;
            };
            let slot = seq
                .checked_sub(front)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| requests.get_mut(i));
            if let Some((_, answered @ false)) = slot {
                if response.len() == PAYLOAD {
                    *answered = true;
                    done += 1;
                }
            }
        })?;
        outstanding -= done;
        rpcs += done as u64;
        iterations += 1;
        shared.client.publish(rpcs, lost, iterations, t.stats());
    }
    Ok(())
}

pub(crate) fn server_loop<T: Transport>(t: &mut T, shared: &Shared) -> Result<(), String> {
    let mut served = 0u64;
    let mut iterations = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        t.exchange(|tx, from, request| {
            tx.push(from, request);
            served += 1;
        })?;
        iterations += 1;
        shared.server.publish(served, 0, iterations, t.stats());
    }
    Ok(())
}

#[derive(Clone, Copy)]
pub(crate) enum Role {
    Client(SocketAddrV4),
    Server,
}

#[derive(Clone, Copy)]
pub(crate) struct WorkerSpec {
    pub(crate) variant: Variant,
    pub(crate) role: Role,
    pub(crate) window: usize,
    pub(crate) cpu: Option<usize>,
}

/// Pin the worker, build its transport on its own thread (an io_uring with
/// SINGLE_ISSUER belongs to the thread that made it), report it ready, then run its
/// side.
pub(crate) fn worker(
    spec: WorkerSpec,
    socket: UdpSocket,
    shared: &Shared,
    ready: mpsc::Sender<Result<String, String>>,
) -> Result<(), String> {
    let WorkerSpec {
        variant,
        role,
        window,
        cpu,
    } = spec;
    fn run<T: Transport>(
        mut t: T,
        role: Role,
        window: usize,
        shared: &Shared,
    ) -> Result<(), String> {
        match role {
            Role::Client(server) => client_loop(&mut t, server, window, shared),
            Role::Server => server_loop(&mut t, shared),
        }
    }
    if let Some(cpu) = cpu {
        if let Err(e) = pin_thread(cpu) {
            let e = format!("pinning a thread to CPU {cpu}: {e} (try --pin none)");
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    }
    if variant.uring() {
        match UringIo::new(socket, variant.gso(), window) {
            Ok(t) => {
                let _ = ready.send(Ok(t.describe()));
                run(t, role, window, shared)
            }
            Err(e) => {
                let _ = ready.send(Err(e.clone()));
                Err(e)
            }
        }
    } else {
        let _ = ready.send(Ok(String::new()));
        run(
            MmsgIo::new(socket, variant.gso(), window),
            role,
            window,
            shared,
        )
    }
}

/// The CPUs this process may run on, lowest first (empty if unknown).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 is this thread.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..8 * size_of::<libc::cpu_set_t>())
        // SAFETY: every index is below the set's capacity in bits.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Run the calling thread on `cpu` only.
pub(crate) fn pin_thread(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: cpu_set_t is a plain bit array; all zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the set's capacity in bits (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is an initialised cpu_set_t of the size passed; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
