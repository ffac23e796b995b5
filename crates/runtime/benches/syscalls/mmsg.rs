//! The path the runtime uses: `recvmmsg`/`sendmmsg`, with or without GSO/GRO.

use super::*;

/// `recvmmsg`/`sendmmsg`, and with `gso` UDP GSO sends and GRO receives.
pub(crate) struct MmsgIo {
    pub(crate) socket: UdpSocket,
    pub(crate) gso: bool,
    pub(crate) slot_len: usize,
    pub(crate) bufs: Vec<u8>,
    pub(crate) names: Vec<libc::sockaddr_in>,
    pub(crate) ctrls: Vec<CtrlBuf>,
    pub(crate) iovs: Vec<libc::iovec>,
    pub(crate) hdrs: Vec<libc::mmsghdr>,
    pub(crate) tx: TxQueue,
    pub(crate) stats: IoStats,
}

impl MmsgIo {
    pub(crate) fn new(socket: UdpSocket, gso: bool, window: usize) -> Self {
        let slot_len = if gso { GRO_SLOT } else { SLOT };
        MmsgIo {
            socket,
            gso,
            slot_len,
            bufs: vec![0; MAX_BATCH * slot_len],
            names: vec![sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); MAX_BATCH],
            ctrls: vec![CtrlBuf([0; CTRL_LEN]); MAX_BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                };
                MAX_BATCH
            ],
            hdrs: (0..MAX_BATCH)
                .map(|_| libc::mmsghdr {
                    msg_hdr: zeroed_msghdr(),
                    msg_len: 0,
                })
                .collect(),
            tx: TxQueue::with_capacity(2 * window),
            stats: IoStats::default(),
        }
    }

    pub(crate) fn send(&mut self) -> Result<(), String> {
        let fd = self.socket.as_raw_fd();
        let n = self.tx.build(self.gso);
        let hdrs = self.tx.headers();
        let mut sent = 0;
        while sent < n {
            let batch = (n - sent).min(MAX_BATCH);
            let first = hdrs.wrapping_add(sent);
            let r = if self.gso && batch == 1 {
                // One GSO send (or a lone datagram): sendmsg, as the runtime does.
                // SAFETY: header `sent` was laid out by `build` and points into
                // `self.tx`, which is not touched until this call returns.
                let r = unsafe { libc::sendmsg(fd, first.cast::<libc::msghdr>(), 0) };
                // sendmsg counts bytes (0 for an empty datagram); we count headers.
                if r >= 0 {
                    1
                } else {
                    r
                }
            } else {
                // SAFETY: headers sent..sent + batch were laid out by `build` and
                // point into `self.tx`, untouched until the call returns; the kernel
                // writes only their `msg_len`.
                let r = unsafe { libc::sendmmsg(fd, first, batch as _, 0) };
                r as isize
            };
            self.stats.syscalls += 1;
            if r >= 0 {
                sent += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(errno) if send_error_is_drop(errno) => {
                    self.stats.dropped_sends += 1;
                    sent += 1;
                }
                _ => return Err(format!("send: {e}")),
            }
        }
        self.tx.clear();
        Ok(())
    }

    /// Block (at most the socket's receive timeout) for one datagram, then take up to
    /// `MAX_BATCH`. `Ok(None)` when the wait timed out.
    pub(crate) fn recv(&mut self) -> Result<Option<usize>, String> {
        let slot_len = self.slot_len;
        let bufs = self.bufs.as_mut_ptr();
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            iov.iov_base = bufs.wrapping_add(i * slot_len).cast::<c_void>();
            iov.iov_len = slot_len;
        }
        let names = self.names.as_mut_ptr();
        let ctrls = self.ctrls.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            let m = &mut h.msg_hdr;
            m.msg_name = names.wrapping_add(i).cast::<c_void>();
            m.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_iov = iovs.wrapping_add(i);
            m.msg_iovlen = 1;
            m.msg_control = ctrls.wrapping_add(i).cast::<c_void>();
            m.msg_controllen = CTRL_LEN as _;
            m.msg_flags = 0;
        }
        loop {
            // SAFETY: all MAX_BATCH headers point to this struct's buffers with the
            // sizes given (names, iovecs -> `bufs` slots, control buffers), none of
            // which is touched until the call returns.
            let r = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    MAX_BATCH as _,
                    libc::MSG_WAITFORONE as _,
                    ptr::null_mut(),
                )
            };
            self.stats.syscalls += 1;
            if r >= 0 {
                return Ok(Some(r as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(format!("recvmmsg: {e}")),
            }
        }
    }
}

impl Transport for MmsgIo {
    fn queue(&mut self) -> &mut TxQueue {
        &mut self.tx
    }

    fn exchange<F>(&mut self, mut deliver: F) -> Result<(), String>
    where
        F: FnMut(&mut TxQueue, SocketAddrV4, &[u8]),
    {
        if !self.tx.is_empty() {
            self.send()?;
        }
        let Some(got) = self.recv()? else {
            return Ok(());
        };
        for i in 0..got {
            let h = &self.hdrs[i].msg_hdr;
            let len = self.hdrs[i].msg_len as usize;
            if h.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || len > self.slot_len {
                self.stats.truncated += 1;
                continue;
            }
            let Some(src) = from_sockaddr_in(&self.names[i], h.msg_namelen as usize) else {
                return Err("recvmmsg: datagram from a non-IPv4 source".into());
            };
            let ctrl_len: usize = h.msg_controllen as _;
            let ctrl_len = ctrl_len.min(CTRL_LEN);
            let segment = gro_segment(&self.ctrls[i].0[..ctrl_len]);
            let payload = &self.bufs[i * self.slot_len..i * self.slot_len + len];
            let tx = &mut self.tx;
            for_each_segment(payload, segment, |d| deliver(tx, src, d));
        }
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
