//! The send queue both transports fill: datagrams grouped into runs for GSO.

use super::*;

#[derive(Clone, Copy)]
pub(crate) struct Datagram {
    pub(crate) dest: SocketAddrV4,
    pub(crate) start: usize,
    pub(crate) len: usize,
}

/// Datagrams to send, back to back in one buffer, and the send headers built for them:
/// one per datagram, or with GSO one per run of same-size datagrams to one destination.
pub(crate) struct TxQueue {
    pub(crate) bytes: Vec<u8>,
    pub(crate) datagrams: Vec<Datagram>,
    pub(crate) names: Vec<libc::sockaddr_in>,
    pub(crate) iovs: Vec<libc::iovec>,
    pub(crate) ctrls: Vec<CtrlBuf>,
    /// Per header: where its bytes start and its control length.
    pub(crate) layout: Vec<(usize, usize)>,
    pub(crate) hdrs: Vec<libc::mmsghdr>,
}

impl TxQueue {
    pub(crate) fn with_capacity(datagrams: usize) -> Self {
        TxQueue {
            bytes: Vec::with_capacity(datagrams * PAYLOAD),
            datagrams: Vec::with_capacity(datagrams),
            names: Vec::with_capacity(datagrams),
            iovs: Vec::with_capacity(datagrams),
            ctrls: Vec::with_capacity(datagrams),
            layout: Vec::with_capacity(datagrams),
            hdrs: Vec::with_capacity(datagrams),
        }
    }

    pub(crate) fn push(&mut self, dest: SocketAddrV4, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.datagrams.push(Datagram {
            dest,
            start,
            len: data.len(),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
    }

    /// Lay out the send headers for the queued datagrams and return how many. They
    /// point into `self`'s buffers, so from here until the kernel has finished with
    /// them (the send call returned, or every send completion arrived) the queue must
    /// not be changed or dropped; `headers` gives them to the kernel.
    pub(crate) fn build(&mut self, gso: bool) -> usize {
        self.names.clear();
        self.iovs.clear();
        self.ctrls.clear();
        self.layout.clear();
        self.hdrs.clear();
        let mut i = 0;
        while i < self.datagrams.len() {
            let first = self.datagrams[i];
            let mut count = 1;
            if gso && first.len > 0 && first.len <= usize::from(u16::MAX) {
                while let Some(next) = self.datagrams.get(i + count) {
                    if count == MAX_GSO_SEGMENTS
                        || (count + 1) * first.len > MAX_GSO_BYTES
                        || next.dest != first.dest
                        || next.len != first.len
                        || next.start != first.start + count * first.len
                    {
                        break;
                    }
                    count += 1;
                }
            }
            self.names.push(sockaddr_in(first.dest));
            self.iovs.push(libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: count * first.len,
            });
            let mut ctrl = CtrlBuf([0; CTRL_LEN]);
            let ctrl_len = if count > 1 {
                put_segment_cmsg(&mut ctrl, first.len as u16)
            } else {
                0
            };
            self.ctrls.push(ctrl);
            self.layout.push((first.start, ctrl_len));
            i += count;
        }
        // Every vector is complete: the addresses taken below stay valid until the
        // queue is next changed.
        let bytes = self.bytes.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let iovs = self.iovs.as_mut_ptr();
        let ctrls = self.ctrls.as_mut_ptr();
        for (k, &(start, ctrl_len)) in self.layout.iter().enumerate() {
            // The iovec is written through the pointer the header will hold.
            let iov = iovs.wrapping_add(k);
            // SAFETY: k < iovs.len(), so `iov` points to an initialised iovec, and
            // start + its length lies within `bytes` (it covers queued datagrams).
            unsafe { (*iov).iov_base = bytes.wrapping_add(start).cast::<c_void>() };
            let mut msg = zeroed_msghdr();
            msg.msg_name = names.wrapping_add(k).cast::<c_void>();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = iov;
            msg.msg_iovlen = 1;
            if ctrl_len > 0 {
                msg.msg_control = ctrls.wrapping_add(k).cast::<c_void>();
                msg.msg_controllen = ctrl_len as _;
            }
            self.hdrs.push(libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            });
        }
        self.hdrs.len()
    }

    /// The headers `build` laid out (an `mmsghdr` starts with its `msghdr`).
    pub(crate) fn headers(&mut self) -> *mut libc::mmsghdr {
        self.hdrs.as_mut_ptr()
    }
}
