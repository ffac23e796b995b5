//! Interfaces: their addresses, MTU and link speed, and the BPF filter that keeps a raw
//! socket to Homa's ports.

use super::*;

/// An interface as `getifaddrs` lists it.
#[derive(Debug, Clone)]
pub(crate) struct Interface {
    pub name: String,
    pub addr: Option<IpAddr>,
    pub up: bool,
    pub loopback: bool,
}

/// Every (interface, address) pair of the host.
pub(crate) fn interfaces() -> Vec<Interface> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, valid until freeifaddrs;
        // ifa_name is a NUL-terminated string and ifa_addr is null or a sockaddr whose
        // family field says how long it is.
        unsafe {
            let ifa = &*p;
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let addr = if ifa.ifa_addr.is_null() {
                None
            } else {
                match (*ifa.ifa_addr).sa_family as c_int {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        Some(IpAddr::V4(Ipv4Addr::from(
                            sin.sin_addr.s_addr.to_ne_bytes(),
                        )))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            let flags = ifa.ifa_flags as c_int;
            out.push(Interface {
                name,
                addr,
                up: flags & libc::IFF_UP != 0,
                loopback: flags & libc::IFF_LOOPBACK != 0,
            });
            p = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Most ports [`attach_port_filter`] lists; past it every packet is let through.
pub(crate) const MAX_FILTER_PORTS: usize = 200;

/// The classic BPF program of [`attach_port_filter`]: load the Homa destination port
/// (IPv4 raw sockets see the IP header first, so skip `4 * IHL` bytes; IPv6 ones start at
/// the Homa header), accept it if it is one of `ports`, drop the packet otherwise.
pub(crate) fn port_filter(v6: bool, ports: &[u16]) -> Vec<libc::sock_filter> {
    const LDX_B_MSH: u16 = 0xb1; // X = 4 * (P[k] & 0xf)
    const LD_H_IND: u16 = 0x48; // A = P[X + k] (16 bits)
    const LD_H_ABS: u16 = 0x28; // A = P[k] (16 bits)
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut prog = if v6 {
        vec![op(LD_H_ABS, 0, 0, 2)]
    } else {
        vec![op(LDX_B_MSH, 0, 0, 0), op(LD_H_IND, 0, 0, 2)]
    };
    if ports.len() > MAX_FILTER_PORTS {
        return vec![op(RET_K, 0, 0, u32::MAX)];
    }
    let n = ports.len();
    for (i, &p) in ports.iter().enumerate() {
        // Jump over the remaining comparisons and the reject to the accept.
        prog.push(op(JEQ_K, (n - i) as u8, 0, u32::from(p)));
    }
    prog.push(op(RET_K, 0, 0, 0));
    prog.push(op(RET_K, 0, 0, u32::MAX));
    prog
}

/// Let the kernel hand this raw socket only protocol-146 packets for `ports` (the Homa
/// ports this process holds). Every raw socket of a protocol gets a copy of every packet,
/// so without a filter each process using raw mode would copy and drop all the host's
/// Homa traffic meant for the others.
pub(crate) fn attach_port_filter(fd: RawFd, v6: bool, ports: &[u16]) -> io::Result<()> {
    let mut prog = port_filter(v6, ports);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the
    // program and only reads from the buffer, whose exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast::<c_void>(),
            size_of::<libc::sock_fprog>() as socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    /// Runs a classic BPF program of the shapes `port_filter` emits over `packet`.
    fn run(prog: &[libc::sock_filter], packet: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let half = |at: usize| -> Option<u32> {
            Some(u32::from(u16::from_be_bytes([
                *packet.get(at)?,
                *packet.get(at + 1)?,
            ])))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0xb1 => x = 4 * u32::from(packet[i.k as usize] & 0xf),
                0x48 => match half(x as usize + i.k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x28 => match half(i.k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x15 => pc += if a == i.k { i.jt } else { i.jf } as usize,
                0x06 => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn v4_packet(ihl: u8, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; ihl as usize * 4 + 40];
        p[0] = 0x40 | ihl;
        let h = ihl as usize * 4;
        p[h + 2..h + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn port_filter_accepts_exactly_the_listed_ports() {
        let prog = port_filter(false, &[4000, 4001, 40_000]);
        for (port, ihl, pass) in [(4000, 5, true), (40_000, 6, true), (4002, 5, false)] {
            assert_eq!(run(&prog, &v4_packet(ihl, port)) != 0, pass, "port {port}");
        }
        assert_eq!(run(&port_filter(false, &[]), &v4_packet(5, 4000)), 0);
        let v6 = port_filter(true, &[7]);
        assert_ne!(run(&v6, &[0, 1, 0, 7, 0, 0]), 0);
        assert_eq!(run(&v6, &[0, 1, 0, 8, 0, 0]), 0);
        assert_eq!(run(&v6, &[0, 1]), 0, "too short to carry a port");
        let many: Vec<u16> = (1..=MAX_FILTER_PORTS as u16 + 1).collect();
        assert_ne!(
            run(&port_filter(false, &many), &v4_packet(5, 9)),
            0,
            "all pass"
        );
    }
}

/// An `ifreq` naming `name` (None if the name does not fit).
fn ifreq_for(name: &str) -> Option<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, &s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    Some(req)
}

/// A datagram socket to ask the kernel about interfaces: made by the calling thread, so
/// it answers for that thread's network namespace (`/sys/class/net` shows the namespace
/// `/sys` was mounted in, which differs for a thread that only called `setns`).
fn query_socket() -> Option<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: fd is a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The MTU of interface `name`, from the kernel (SIOCGIFMTU).
pub(crate) fn interface_mtu(name: &str) -> Option<u32> {
    let sock = query_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: `req` is a valid ifreq the kernel fills in; the fd is open.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    // SAFETY: after SIOCGIFMTU succeeds the union holds ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    (r == 0 && mtu > 0).then_some(mtu as u32)
}

/// The legacy `struct ethtool_cmd` of <linux/ethtool.h> (ETHTOOL_GSET), which every
/// driver that reports a speed still answers.
#[repr(C)]
#[derive(Default)]
struct EthtoolCmd {
    cmd: u32,
    supported: u32,
    advertising: u32,
    speed: u16,
    duplex: u8,
    port: u8,
    phy_address: u8,
    transceiver: u8,
    autoneg: u8,
    mdio_support: u8,
    maxtxpkt: u32,
    maxrxpkt: u32,
    speed_hi: u16,
    eth_tp_mdix: u8,
    eth_tp_mdix_ctrl: u8,
    lp_advertising: u32,
    reserved: [u32; 2],
}

/// The link speed of interface `name` in Mbit/s, from the kernel (SIOCETHTOOL); None when
/// the driver reports none (loopback) or an unknown speed.
pub(crate) fn interface_speed_mbps(name: &str) -> Option<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GSET: u32 = 1;
    let sock = query_socket()?;
    let mut req = ifreq_for(name)?;
    let mut cmd = EthtoolCmd {
        cmd: ETHTOOL_GSET,
        ..EthtoolCmd::default()
    };
    req.ifr_ifru.ifru_data = (&mut cmd as *mut EthtoolCmd).cast::<libc::c_char>();
    // SAFETY: `req` names the interface and points at `cmd`, which outlives the call and
    // has the layout the kernel writes for ETHTOOL_GSET.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    let speed = u32::from(cmd.speed) | (u32::from(cmd.speed_hi) << 16);
    (r == 0 && speed != 0 && speed != u32::MAX && speed != 0xFFFF).then_some(speed)
}

#[cfg(test)]
mod interface_tests {
    use super::*;

    #[test]
    fn loopback_mtu_and_speed_come_from_the_kernel() {
        let sysfs: Option<u32> = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        assert_eq!(interface_mtu("lo"), sysfs);
        assert!(interface_mtu("lo").is_some());
        assert_eq!(
            interface_speed_mbps("lo"),
            None,
            "loopback reports no speed"
        );
        assert_eq!(interface_mtu("no-such-if0"), None);
        assert_eq!(interface_mtu("a-name-longer-than-ifnamsiz"), None);
        assert_eq!(interface_mtu(""), None);
    }
}
