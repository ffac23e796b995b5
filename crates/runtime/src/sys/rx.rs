//! Receiving: `recvmmsg` batches and single receives into the socket's slots, with the
//! sender, local address, GRO segment size and truncation of each datagram; ICMP errors
//! from the error queue.

use super::*;

/// What `recv_batch` learnt about one received datagram.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RxMeta {
    pub from: Option<SocketAddr>,
    /// GRO segment size when several datagrams were coalesced; 0 otherwise.
    pub segment: usize,
    /// The datagram did not fit its slot (and spill buffer).
    pub truncated: bool,
    /// Bytes of the datagram past its slot, in its spill buffer (the slot is full).
    pub spilled: usize,
    /// The local address it was sent to, where the socket asked (`IP_PKTINFO`,
    /// `IPV6_RECVPKTINFO`: see `bind::want_arrival_addresses`).
    pub to: Option<IpAddr>,
}

/// Where one datagram is received: the spare capacity of `slot` (up to `RX_SLOT` bytes),
/// then that of `spill` if it has any, for a datagram longer than the slot. Both are
/// emptied first. Returns the iovecs and how many of them are used.
fn slot_iovecs(slot: &mut BytesMut, spill: Option<&mut Vec<u8>>) -> ([libc::iovec; 2], usize) {
    let iovec = |spare: &mut [MaybeUninit<u8>], max: usize| libc::iovec {
        iov_base: spare.as_mut_ptr().cast::<c_void>(),
        iov_len: spare.len().min(max),
    };
    slot.clear();
    let first = iovec(slot.spare_capacity_mut(), RX_SLOT);
    match spill {
        Some(spill) if spill.capacity() > 0 => {
            spill.clear();
            let rest = RX_SLOT.saturating_sub(first.iov_len);
            ([first, iovec(spill.spare_capacity_mut(), rest)], 2)
        }
        _ => ([first, first], 1),
    }
}

/// Set the lengths of `slot` and `spill` to the parts of a `len`-byte datagram received
/// into `iov` (see [`slot_iovecs`]); returns the bytes in the spill buffer.
///
/// # Safety
/// The kernel wrote `len` bytes (at most the iovecs' total length) into `iov`, which
/// `slot_iovecs` made from these `slot` and `spill`.
unsafe fn set_received(
    slot: &mut BytesMut,
    spill: Option<&mut Vec<u8>>,
    iov: &[libc::iovec; 2],
    used: usize,
    len: usize,
) -> usize {
    let first = len.min(iov[0].iov_len);
    // SAFETY: the caller's promise: the kernel wrote the first `first` bytes of the
    // slot's spare capacity (iovec 0) and the rest, up to iovec 1's length, into the
    // spill buffer's.
    unsafe { slot.set_len(first) };
    match spill {
        Some(spill) if used == 2 => {
            let rest = (len - first).min(iov[1].iov_len);
            unsafe { spill.set_len(rest) };
            rest
        }
        _ => 0,
    }
}

/// Receive up to `metas.len()` datagrams, one into each of `slots` (each emptied first and
/// given the received length; a slot should have at most `RX_SLOT` bytes of capacity).
/// A datagram longer than its slot continues in the spill buffer of the same index, if
/// `spills` has one with capacity (its length is then set and counted in
/// [`RxMeta::spilled`]); else it is cut short ([`RxMeta::truncated`]). Returns how many
/// (0 when nothing is waiting and `nonblocking`).
pub(crate) fn recv_batch(
    fd: RawFd,
    slots: &mut [BytesMut],
    spills: &mut [Vec<u8>],
    metas: &mut [RxMeta],
    nonblocking: bool,
) -> io::Result<usize> {
    let n = metas.len().min(MAX_BATCH).min(slots.len());
    if n == 0 {
        return Ok(0);
    }
    let mut names: [MaybeUninit<libc::sockaddr_storage>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    // The kernel writes the control data and says how much (msg_controllen); nothing
    // past that is read, so these buffers need no zeroing.
    let mut ctrl: [MaybeUninit<CmsgBuf>; MAX_BATCH] = [const { MaybeUninit::uninit() }; MAX_BATCH];
    let mut iovs: [MaybeUninit<([libc::iovec; 2], usize)>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    for i in 0..n {
        let iov = iovs[i].write(slot_iovecs(&mut slots[i], spills.get_mut(i)));
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = names[i].as_mut_ptr().cast::<c_void>();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
        msg.msg_iov = iov.0.as_mut_ptr();
        msg.msg_iovlen = iov.1 as _;
        msg.msg_control = ctrl[i].as_mut_ptr().cast::<c_void>();
        msg.msg_controllen = CMSG_BUF as _;
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: msg,
            msg_len: 0,
        });
    }
    // Blocking: return as soon as one datagram is there (without MSG_WAITFORONE,
    // recvmmsg would wait for all `n`).
    let flags = if nonblocking {
        libc::MSG_DONTWAIT
    } else {
        libc::MSG_WAITFORONE
    };
    let got = loop {
        // SAFETY: the first `n` headers are initialised and point to buffers (`names`,
        // `iovs` -> the slots' and spill buffers' spare capacity, `ctrl`) that outlive
        // the call and have the sizes given.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    };
    for i in 0..got {
        // SAFETY: the first `n` headers were initialised above; the kernel updated the
        // first `got` of them (msg_len, msg_namelen, msg_controllen, msg_flags).
        let h = unsafe { hdrs[i].assume_init_ref() };
        // SAFETY: the kernel wrote `msg_len` bytes (at most the iovecs' length, so within
        // the slot's and spill buffer's capacity) into iovecs i, made from them.
        let spilled = unsafe {
            let (iov, used) = iovs[i].assume_init_ref();
            set_received(
                &mut slots[i],
                spills.get_mut(i),
                iov,
                *used,
                h.msg_len as usize,
            )
        };
        let mut meta = RxMeta {
            // SAFETY: the kernel wrote an address of `msg_namelen` bytes into names[i]
            // (zero length, as for some raw sockets, gives None).
            from: if h.msg_hdr.msg_namelen > 0 {
                unsafe { read_sockaddr(&names[i], h.msg_hdr.msg_namelen) }
            } else {
                None
            },
            segment: 0,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            spilled,
            to: None,
        };
        // SAFETY: the kernel set msg_controllen to the bytes of control data it wrote into
        // ctrl[i].
        unsafe { read_cmsgs(&h.msg_hdr, &mut meta) };
        metas[i] = meta;
    }
    Ok(got)
}

/// Block until one datagram arrives and receive it into `slot` (and `spill`) as
/// `recv_batch` does. Returns 1, or 0 if interrupted or the socket's receive timeout
/// passed.
///
/// With `cmsgs`, or a spill buffer to fill, `recvmsg` (for a single datagram it costs
/// less than `recvmmsg`), whose control messages give the segment size of a GRO aggregate
/// and the address the datagram arrived at. Without, `recvfrom`, which costs the kernel
/// less again: no `msghdr` and iovec array to copy in and out (measured on loopback:
/// ~0.18 us per receive, 0.35 us of a 100-byte round trip). Only correct while GRO is off
/// on the socket, when the kernel never hands over an aggregate, and the socket does not
/// ask where datagrams arrived.
pub(crate) fn recv_one(
    fd: RawFd,
    slot: &mut BytesMut,
    mut spill: Option<&mut Vec<u8>>,
    meta: &mut RxMeta,
    cmsgs: bool,
) -> io::Result<usize> {
    if !cmsgs && spill.as_ref().is_none_or(|s| s.capacity() == 0) {
        return recv_from(fd, slot, meta);
    }
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut ctrl = MaybeUninit::<CmsgBuf>::uninit();
    let (mut iov, used) = slot_iovecs(slot, spill.as_deref_mut());
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast::<c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = used as _;
    msg.msg_control = ctrl.as_mut_ptr().cast::<c_void>();
    msg.msg_controllen = CMSG_BUF as _;
    // SAFETY: every pointer in `msg` refers to a live buffer of the size given.
    let r = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    let Some(len) = received_len(r)? else {
        return Ok(0);
    };
    // SAFETY: the kernel wrote `len` bytes (at most the iovecs' length, within the slot's
    // and spill buffer's capacity) into the iovecs made from them.
    let spilled = unsafe { set_received(slot, spill, &iov, used, len) };
    *meta = RxMeta {
        // SAFETY: the kernel wrote an address of msg_namelen bytes.
        from: if msg.msg_namelen > 0 {
            unsafe { read_sockaddr(&name, msg.msg_namelen) }
        } else {
            None
        },
        segment: 0,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        spilled,
        to: None,
    };
    // SAFETY: the kernel set msg_controllen to the bytes of control data it wrote.
    unsafe { read_cmsgs(&msg, meta) };
    Ok(1)
}

/// Read the control messages of a received datagram into `meta`: a GRO aggregate's
/// segment size, and the address the datagram was sent to.
///
/// # Safety
/// `msg` is a header the kernel filled: its `msg_controllen` bytes of `msg_control` are
/// control messages (the walk stays within them).
unsafe fn read_cmsgs(msg: &libc::msghdr, meta: &mut RxMeta) {
    // SAFETY: the caller vouches for `msg`; CMSG_FIRSTHDR/CMSG_NXTHDR stay within its
    // control data, and each message read is of the type its header names.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (SOL_UDP, UDP_GRO) => {
                    let v = data.cast::<c_int>().read_unaligned();
                    meta.segment = v.max(0) as usize;
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    // The header's destination (`ipi_spec_dst` is the route's, which differs
                    // for broadcasts): the address the sender matches our answers by.
                    let a = u32::from_be(info.ipi_addr.s_addr);
                    meta.to = Some(IpAddr::V4(std::net::Ipv4Addr::from(a)));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    meta.to = Some(IpAddr::V6(info.ipi6_addr.s6_addr.into()));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
}

/// The length a single-datagram receive call returned (`r`), or `None` when it was
/// interrupted or found nothing.
fn received_len(r: isize) -> io::Result<Option<usize>> {
    if r >= 0 {
        return Ok(Some(r as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
        _ => Err(e),
    }
}

/// `recv_one` without control messages: `recvfrom`.
fn recv_from(fd: RawFd, slot: &mut BytesMut, meta: &mut RxMeta) -> io::Result<usize> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut name_len = size_of::<libc::sockaddr_storage>() as socklen_t;
    let ([iov, _], _) = slot_iovecs(slot, None);
    // SAFETY: the buffer is the slot's spare capacity of `iov_len` bytes and `name` has
    // room for `name_len` bytes; both outlive the call. With MSG_TRUNC the kernel returns
    // the datagram's real length even when it did not fit.
    let r = unsafe {
        libc::recvfrom(
            fd,
            iov.iov_base,
            iov.iov_len,
            libc::MSG_TRUNC,
            name.as_mut_ptr().cast::<libc::sockaddr>(),
            &mut name_len,
        )
    };
    let Some(len) = received_len(r)? else {
        return Ok(0);
    };
    // SAFETY: the kernel wrote min(len, iov_len) bytes at the start of the slot's spare
    // capacity.
    unsafe { slot.set_len(len.min(iov.iov_len)) };
    *meta = RxMeta {
        // SAFETY: the kernel wrote an address of `name_len` bytes.
        from: if name_len > 0 {
            unsafe { read_sockaddr(&name, name_len) }
        } else {
            None
        },
        segment: 0,
        truncated: len > iov.iov_len,
        spilled: 0,
        to: None,
    };
    Ok(1)
}

/// One entry of a socket's error queue (`IP_RECVERR`, `IPV6_RECVERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedError {
    /// Where the datagram that caused it was going.
    pub dest: Option<SocketAddr>,
    /// The error, as the kernel converted it.
    pub errno: i32,
    /// The ICMP message behind it: ICMPv6 or not, its type and its code.
    pub icmp: Option<(bool, u8, u8)>,
    /// The source and destination ports of the Homa packet it was about (the first four
    /// bytes of the packet, which the queue returns).
    pub ports: Option<(u16, u16)>,
}

impl QueuedError {
    /// The destination host said no socket there has the packet's destination port
    /// (ICMP or ICMPv6 port unreachable), as the Linux module answers for a port it has
    /// no socket on.
    pub(crate) fn port_unreachable(&self) -> bool {
        matches!(self.icmp, Some((false, 3, 3)) | Some((true, 1, 4)))
    }

    /// The destination host runs nothing for the packet's IP protocol: ICMP protocol
    /// unreachable, or ICMPv6 parameter problem, unknown next header.
    pub(crate) fn protocol_unreachable(&self) -> bool {
        matches!(self.icmp, Some((false, 3, 2)) | Some((true, 4, 1)))
    }
}

/// Read one entry of the socket's error queue (`IP_RECVERR`). `None` when the queue is
/// empty.
pub(crate) fn recv_error(fd: RawFd) -> io::Result<Option<QueuedError>> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut ctrl: [u64; 64] = [0; 64];
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast::<c_void>(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast::<c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast::<c_void>();
    msg.msg_controllen = size_of::<[u64; 64]>() as _;
    // SAFETY: every pointer in `msg` refers to a live local buffer of the size given.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let dest = if msg.msg_namelen > 0 {
        // SAFETY: the kernel wrote an address of msg_namelen bytes.
        unsafe { read_sockaddr(&name, msg.msg_namelen) }
    } else {
        None
    };
    // (The queue returns the packet from its transport header on: for UDP and raw
    // sockets alike, the Homa header, whose first four bytes are its ports.)
    let ports = (r >= 4).then(|| {
        (
            u16::from_be_bytes([data[0], data[1]]),
            u16::from_be_bytes([data[2], data[3]]),
        )
    });
    let mut found = QueuedError {
        dest,
        errno: 0,
        icmp: None,
        ports,
    };
    // SAFETY: as in recv_batch, the walk stays within msg_controllen bytes of `ctrl`;
    // sock_extended_err is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let lvl = (*c).cmsg_level;
            let ty = (*c).cmsg_type;
            if (lvl == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
                || (lvl == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR)
            {
                let ee = libc::CMSG_DATA(c)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                found.errno = ee.ee_errno as i32;
                found.icmp = match ee.ee_origin {
                    libc::SO_EE_ORIGIN_ICMP => Some((false, ee.ee_type, ee.ee_code)),
                    libc::SO_EE_ORIGIN_ICMP6 => Some((true, ee.ee_type, ee.ee_code)),
                    _ => None,
                };
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(found))
}
