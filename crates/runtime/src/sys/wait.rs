//! Waiting: `ppoll` on the socket and a wake-up `eventfd`, and the background thread's
//! `timerfd`.

use super::*;

/// What `poll` saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Polled {
    pub readable: bool,
    pub error: bool,
}

/// Whether `sock`'s error queue holds an error (`IP_RECVERR`): asked right after a send
/// failed, it tells an error an earlier datagram drew (an ICMP message, which the kernel
/// both queues and reports on the socket's next call, whatever that call's destination)
/// from the failed send's own.
pub(crate) fn error_queued(sock: RawFd) -> bool {
    let mut fd = libc::pollfd {
        fd: sock,
        events: 0, // POLLERR is always reported
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout does not wait.
    let r = unsafe { libc::poll(&mut fd, 1, 0) };
    r > 0 && fd.revents & libc::POLLERR != 0
}

/// Wait until `sock` is readable or has an error, `wake` (if any) is readable, or the
/// timeout passes (`None`: no timeout). Nanosecond precision (`ppoll`).
pub(crate) fn poll(
    sock: RawFd,
    wake: Option<&EventFd>,
    timeout: Option<Duration>,
) -> io::Result<Polled> {
    let pollin = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [pollin(sock), pollin(wake.map_or(-1, |w| w.0.as_raw_fd()))];
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid array of two pollfds (a negative fd is ignored), `tsp` is
    // null or points to a live timespec, and no signal mask is passed.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tsp, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Polled::default());
        }
        return Err(e);
    }
    if fds[1].revents & libc::POLLIN != 0 {
        if let Some(w) = wake {
            w.drain();
        }
    }
    Ok(Polled {
        readable: fds[0].revents & libc::POLLIN != 0,
        error: fds[0].revents & libc::POLLERR != 0,
    })
}

/// A non-blocking eventfd: wakes a thread from [`poll`] without a datagram.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
    /// Make it readable (until drained).
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast::<c_void>(), 8) };
    }
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast::<c_void>(), 8) };
    }
}

/// Make this thread's timed waits precise: the default 50 us timer slack would delay
/// the pacer's sub-microsecond deadlines (background thread only).
pub(crate) fn set_precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// A `timerfd` on CLOCK_MONOTONIC, armed at absolute times. The tokio driver polls one
/// (tokio's own timers have millisecond resolution; the pacer needs microseconds); the
/// blocking flavour's background thread sleeps on one, which other threads can move
/// later without waking it (see `Inner::after_input`).
#[derive(Debug)]
pub(crate) struct TimerFd(OwnedFd);

impl TimerFd {
    /// `nonblocking`: reads return at once (for polling) instead of waiting for expiry.
    pub(crate) fn new(nonblocking: bool) -> io::Result<TimerFd> {
        let flags = libc::TFD_CLOEXEC | if nonblocking { libc::TFD_NONBLOCK } else { 0 };
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd.
        let fd = cvt(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) })?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
    /// Fire at `at_nanos` of CLOCK_MONOTONIC (at once if that has passed); `None` disarms.
    /// Re-arming forgets an expiry not yet read.
    pub(crate) fn set(&self, at_nanos: Option<u64>) {
        let at = at_nanos.map_or(0, |n| n.max(1));
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
        // SAFETY: `spec` is a valid itimerspec; the old value is not requested.
        unsafe {
            libc::timerfd_settime(
                self.0.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }
    /// Read the expiry count: waits for the expiry on a blocking timer (or for a
    /// signal). (The tokio driver's non-blocking timer is never read: see `aio::drive`.)
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own timerfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast::<c_void>(), 8) };
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
