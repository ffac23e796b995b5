//! The io_uring path: multishot receive into a provided buffer ring, one submit per loop.

use super::*;

/// An anonymous private mapping: page-aligned, zero-filled memory.
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl Mapping {
    pub(crate) fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing
        // aliases no existing memory.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(Mapping {
                ptr: p.cast::<u8>(),
                len,
            })
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, not unmapped
        // since. Owners drop a mapping only once the kernel no longer uses it (see
        // `UringIo::drop`), and nothing else points into it.
        unsafe { libc::munmap(self.ptr.cast::<c_void>(), self.len) };
    }
}

/// The kernel's `struct io_uring_buf`, one entry of a provided-buffer ring. The ring's
/// tail is the `resv` field of entry 0.
#[repr(C)]
pub(crate) struct RingEntry {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) bid: u16,
    pub(crate) resv: u16,
}

const _: () = assert!(size_of::<RingEntry>() == size_of::<types::BufRingEntry>());

/// A ring of `entries` receive buffers of `buf_len` bytes that the kernel picks from.
pub(crate) struct BufRing {
    pub(crate) ring: Mapping,
    pub(crate) bufs: Mapping,
    pub(crate) entries: u16,
    pub(crate) buf_len: usize,
    /// Our tail: entries before it are (or will be, once published) the kernel's.
    pub(crate) tail: u16,
}

impl BufRing {
    /// `entries` must be a power of two no larger than 32768.
    pub(crate) fn new(entries: u16, buf_len: usize) -> io::Result<Self> {
        debug_assert!(entries.is_power_of_two() && entries <= 1 << 15);
        let ring = Mapping::new(usize::from(entries) * size_of::<RingEntry>())?;
        let bufs = Mapping::new(usize::from(entries) * buf_len)?;
        let mut r = BufRing {
            ring,
            bufs,
            entries,
            buf_len,
            tail: 0,
        };
        for bid in 0..entries {
            r.recycle(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Give buffer `bid` back to the kernel (visible once `publish`ed).
    pub(crate) fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        let slot = usize::from(self.tail & (self.entries - 1));
        let e = self.ring.ptr.cast::<RingEntry>().wrapping_add(slot);
        let addr = self.bufs.ptr as u64 + u64::from(bid) * self.buf_len as u64;
        // SAFETY: slot < entries, so `e` lies within the ring mapping (page-aligned, so
        // aligned for RingEntry). The kernel reads only entries between its head and
        // the published tail; this one is at or past our tail, so nobody reads it while
        // it is written. Fields are written one by one, never `resv`, which in entry 0
        // is the tail the kernel may be reading.
        unsafe {
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.buf_len as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make the recycled buffers visible to the kernel.
    pub(crate) fn publish(&self) {
        let tail = self.ring.ptr.cast::<RingEntry>();
        // SAFETY: entry 0's `resv` is the ring's tail: a u16 inside the mapping,
        // aligned, that we only ever access atomically and the kernel only reads (with
        // acquire semantics, matching the release store).
        let tail = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*tail).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed to us.
    pub(crate) fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_len {
            return None;
        }
        // SAFETY: buffer `bid` lies within the buffer mapping (bid < entries,
        // len <= buf_len). The kernel filled it and owns it no more until we recycle
        // it, which needs `&mut self` and so cannot happen while this slice lives.
        Some(unsafe {
            std::slice::from_raw_parts(self.bufs.ptr.add(usize::from(bid) * self.buf_len), len)
        })
    }

    pub(crate) fn ring_addr(&self) -> u64 {
        self.ring.ptr as u64
    }
}

/// Set up a ring, preferring the modes recommended for networking.
pub(crate) fn new_ring(sq: u32, cq: u32) -> Result<(IoUring, &'static str), String> {
    let mut last = None;
    for mode in ["DEFER_TASKRUN|SINGLE_ISSUER", "COOP_TASKRUN", "default"] {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq);
        match mode {
            "DEFER_TASKRUN|SINGLE_ISSUER" => {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            "COOP_TASKRUN" => {
                b.setup_coop_taskrun();
            }
            _ => {}
        }
        match b.build(sq) {
            Ok(ring) => return Ok((ring, mode)),
            // EINVAL: this kernel lacks the flag; try the next mode.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(format!("io_uring_setup: {e}")),
        }
    }
    Err(format!(
        "io_uring_setup: {}",
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

/// io_uring: a multishot `RecvMsgMulti` into a provided-buffer ring, `SendMsg` per send
/// header, one `io_uring_enter` per `exchange` in the common case.
pub(crate) struct UringIo {
    // Dropped first: closing the ring fd after `drop` has quiesced it.
    pub(crate) ring: IoUring,
    pub(crate) socket: UdpSocket,
    pub(crate) gso: bool,
    pub(crate) mode: &'static str,
    pub(crate) timeout: types::Timespec,
    /// A multishot timeout completing every `LOSS_TIMEOUT` bounds the waits (Linux
    /// 6.4); without, each wait carries the timeout itself (an hrtimer per wait).
    pub(crate) tick: bool,
    pub(crate) tick_armed: bool,
    pub(crate) recv_armed: bool,
    /// Sends submitted whose completion has not arrived.
    pub(crate) inflight: usize,
    pub(crate) cqes: Vec<cqueue::Entry>,
    pub(crate) stats: IoStats,
    // The kernel may use these until `quiesce` says it has stopped: freed only then.
    pub(crate) recv_hdr: ManuallyDrop<Box<libc::msghdr>>,
    pub(crate) bufs: ManuallyDrop<BufRing>,
    pub(crate) tx: ManuallyDrop<TxQueue>,
}

impl UringIo {
    pub(crate) fn new(socket: UdpSocket, gso: bool, window: usize) -> Result<Self, String> {
        let sq = (2 * window + 8).next_power_of_two().clamp(64, 8192) as u32;
        let (ring, mode) = new_ring(sq, 4 * sq)?;
        if !ring.params().is_feature_ext_arg() {
            return Err("no IORING_FEAT_EXT_ARG (Linux 5.11) for timed waits".into());
        }
        let entries = (2 * window).next_power_of_two().clamp(64, 1 << 15) as u16;
        let buf_len = if gso { GRO_SLOT } else { SLOT };
        let bufs =
            BufRing::new(entries, buf_len).map_err(|e| format!("buffer ring memory: {e}"))?;
        // SAFETY: the ring memory is a page-aligned mapping of `entries` entries that
        // lives in `self.bufs` until `drop`, which unregisters it (or leaks it when the
        // kernel might still use it). The buffers it names are in the same struct.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring_addr(), entries, BGID, 0)
        }
        .map_err(|e| format!("register_buf_ring (Linux 5.19): {e}"))?;
        let mut recv_hdr = Box::new(zeroed_msghdr());
        // The multishot receive reads only these two: the room for the source address
        // and for control messages at the head of each buffer.
        recv_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        recv_hdr.msg_controllen = CTRL_LEN as _;
        Ok(UringIo {
            ring,
            socket,
            gso,
            mode,
            timeout: types::Timespec::from(LOSS_TIMEOUT),
            tick: true,
            tick_armed: false,
            recv_armed: false,
            inflight: 0,
            cqes: Vec::with_capacity(4 * sq as usize),
            stats: IoStats::default(),
            recv_hdr: ManuallyDrop::new(recv_hdr),
            bufs: ManuallyDrop::new(bufs),
            tx: ManuallyDrop::new(TxQueue::with_capacity(2 * window)),
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{}, {} provided buffers of {} B",
            self.mode, self.bufs.entries, self.bufs.buf_len
        )
    }

    /// Submit what is queued and wait for `want` completions, or (at most) until the
    /// tick or the timeout ends the wait.
    pub(crate) fn enter(&mut self, want: usize) -> Result<(), String> {
        self.enter_with(want, !self.tick)
    }

    /// `enter`, with `timed`: the wait itself ends after `LOSS_TIMEOUT`.
    pub(crate) fn enter_with(&mut self, want: usize, timed: bool) -> Result<(), String> {
        let r = if timed {
            let args = types::SubmitArgs::new().timespec(&self.timeout);
            self.ring.submitter().submit_with_args(want, &args)
        } else {
            self.ring.submitter().submit_and_wait(want)
        };
        self.stats.syscalls += 1;
        match r {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // ETIME: the wait timed out. EBUSY: completions overflowed the ring;
                // reaping them makes room.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY) => Ok(()),
                _ => Err(format!("io_uring_enter: {e}")),
            },
        }
    }

    /// Take the completions: sends are accounted here, receives kept in `self.cqes`.
    pub(crate) fn reap(&mut self) -> Result<(), String> {
        let mut error = None;
        for cqe in self.ring.completion() {
            if cqe.user_data() != SEND_UD {
                self.cqes.push(cqe);
                continue;
            }
            self.inflight -= 1;
            let r = cqe.result();
            if r < 0 {
                if send_error_is_drop(-r) {
                    self.stats.dropped_sends += 1;
                } else {
                    error = Some(io::Error::from_raw_os_error(-r));
                }
            }
        }
        match error {
            None => Ok(()),
            Some(e) => Err(format!("SendMsg: {e}")),
        }
    }

    /// Queue the send headers built from `self.tx`, and the receive and the tick if they
    /// are not armed.
    pub(crate) fn push_sqes(&mut self) -> Result<(), String> {
        let fd = types::Fd(self.socket.as_raw_fd());
        let n = if self.tx.is_empty() {
            0
        } else {
            self.tx.build(self.gso)
        };
        let hdrs = self.tx.headers();
        let recv_hdr: *const libc::msghdr = &**self.recv_hdr;
        let mut k = 0;
        let mut attempts = 0;
        loop {
            let mut sq = self.ring.submission();
            while k < n {
                let sqe = opcode::SendMsg::new(fd, hdrs.wrapping_add(k).cast::<libc::msghdr>())
                    .build()
                    .user_data(SEND_UD);
                // SAFETY: the entry points to send header k, which points into
                // `self.tx`. `exchange` changes `self.tx` only after every send's
                // completion arrived, and `drop` frees it only then, so it outlives the
                // kernel's use.
                if unsafe { sq.push(&sqe) }.is_err() {
                    break;
                }
                k += 1;
                self.inflight += 1;
            }
            if k == n && !self.recv_armed {
                let sqe = opcode::RecvMsgMulti::new(fd, recv_hdr, BGID)
                    .build()
                    .user_data(RECV_UD);
                // SAFETY: the entry points to `self.recv_hdr` and selects buffers from
                // the ring registered as BGID; both live until `drop` has seen the
                // receive's final completion (or leaks them).
                if unsafe { sq.push(&sqe) }.is_ok() {
                    self.recv_armed = true;
                }
            }
            if k == n && self.tick && !self.tick_armed {
                let sqe = opcode::Timeout::new(&self.timeout)
                    .count(0)
                    .flags(types::TimeoutFlags::MULTISHOT)
                    .build()
                    .user_data(TICK_UD);
                // SAFETY: the entry points to `self.timeout`, which the kernel copies
                // when it takes the entry (in this `submit`), and which lives as long
                // as the ring anyway.
                if unsafe { sq.push(&sqe) }.is_ok() {
                    self.tick_armed = true;
                }
            }
            drop(sq);
            if k == n && self.recv_armed && (self.tick_armed || !self.tick) {
                return Ok(());
            }
            attempts += 1;
            if attempts > 8 {
                return Err("submission queue stays full".into());
            }
            // The submission queue is full: hand it to the kernel and go on.
            self.ring
                .submit()
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            self.stats.syscalls += 1;
        }
    }

    /// Stop the kernel using our memory: cancel the receive and wait for it and every
    /// send to complete. Returns whether that happened.
    pub(crate) fn quiesce(&mut self) -> bool {
        if self.recv_armed {
            let timeout = types::Timespec::from(Duration::from_secs(1));
            // NotFound means it already ended; its final completion is still to reap.
            let _ = self.ring.submitter().register_sync_cancel(
                Some(timeout),
                types::CancelBuilder::user_data(RECV_UD).all(),
            );
        }
        for _ in 0..20 {
            self.cqes.clear();
            let _ = self.reap();
            for cqe in &self.cqes {
                if cqe.user_data() == RECV_UD && !cqueue::more(cqe.flags()) {
                    self.recv_armed = false;
                }
            }
            if !self.recv_armed && self.inflight == 0 {
                let _ = self.ring.submitter().unregister_buf_ring(BGID);
                return true;
            }
            if self.enter_with(1, true).is_err() {
                break;
            }
        }
        false
    }
}

impl Transport for UringIo {
    fn queue(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    fn exchange<F>(&mut self, mut deliver: F) -> Result<(), String>
    where
        F: FnMut(&mut TxQueue, SocketAddrV4, &[u8]),
    {
        self.push_sqes()?;
        // One system call: submit the sends, wait for their completions and at least one
        // more (a receive), or for the loss timeout.
        self.cqes.clear();
        self.enter(self.inflight + 1)?;
        self.reap()?;
        // Rarely a receive completes before all sends have; they own `self.tx` till then.
        let mut waits = 0;
        while self.inflight > 0 {
            if waits == 50 {
                return Err(format!("{} sends not completed after 5 s", self.inflight));
            }
            self.enter(1)?;
            self.reap()?;
            waits += 1;
        }
        self.tx.clear();
        let cqes = std::mem::take(&mut self.cqes);
        for cqe in &cqes {
            if cqe.user_data() == TICK_UD {
                if !cqueue::more(cqe.flags()) {
                    self.tick_armed = false;
                    if cqe.result() == -libc::EINVAL {
                        // No multishot timeouts (before Linux 6.4): time each wait.
                        self.tick = false;
                    }
                }
                continue;
            }
            if cqe.user_data() != RECV_UD {
                return Err(format!("unexpected completion {}", cqe.user_data()));
            }
            if !cqueue::more(cqe.flags()) {
                // The multishot ended: re-armed by the next `push_sqes`, after the
                // buffers below are back in the ring.
                self.recv_armed = false;
                self.stats.rearms += 1;
            }
            let r = cqe.result();
            if r < 0 {
                if r == -libc::ENOBUFS {
                    // The buffer ring ran dry; the datagrams wait in the socket.
                    self.stats.enobufs += 1;
                    continue;
                }
                let e = io::Error::from_raw_os_error(-r);
                return Err(format!("multishot RecvMsg (Linux 6.0): {e}"));
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                return Err("receive completion without a buffer".into());
            };
            {
                let buf = self
                    .bufs
                    .get(bid, r as usize)
                    .ok_or("receive completion names no buffer of ours")?;
                let out = types::RecvMsgOut::parse(buf, &self.recv_hdr)
                    .map_err(|()| "malformed io_uring_recvmsg_out")?;
                if out.is_payload_truncated() || out.is_control_data_truncated() {
                    self.stats.truncated += 1;
                } else {
                    let src = sockaddr_in_bytes(out.name_data())
                        .ok_or("RecvMsg: datagram from a non-IPv4 source")?;
                    let segment = gro_segment(out.control_data());
                    let tx = &mut *self.tx;
                    for_each_segment(out.payload_data(), segment, |d| deliver(tx, src, d));
                }
            }
            self.bufs.recycle(bid);
        }
        self.bufs.publish();
        self.cqes = cqes;
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        if self.quiesce() {
            // SAFETY: the receive has delivered its final completion and every send
            // has completed, so the kernel holds no pointer into these any more; each
            // is dropped exactly once, here, and not used after.
            unsafe {
                ManuallyDrop::drop(&mut self.tx);
                ManuallyDrop::drop(&mut self.bufs);
                ManuallyDrop::drop(&mut self.recv_hdr);
            }
        }
        // Otherwise the kernel might still write into the receive buffers or read the
        // send buffers: leak them (never expected; a few MiB at most).
    }
}
