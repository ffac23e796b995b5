//! Segmentation and receive offloads turned off on a link through the kernel's ethtool
//! interface (the `SIOCETHTOOL` ioctl on any socket of the link's namespace), so that no
//! machine needs the `ethtool` program for its testbed to match everyone else's.
//!
//! The kernel names its features by strings (`ETH_SS_FEATURES`); a feature's index in
//! that list is its bit in the `ETHTOOL_GFEATURES` / `ETHTOOL_SFEATURES` masks, 32 to a
//! block. Names are looked up, never assumed, since the bits move between kernels.

// The only unsafe code of the crate: three ioctls, each on a buffer laid out as
// <linux/ethtool.h> says and owned by the call.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Whether the testbed turns the feature of this kernel name off: TCP segmentation
/// offload in all its forms (`tx-tcp*-segmentation`, what `ethtool -K tso off` turns
/// off), generic segmentation (`gso off`), GRO (`gro off`; veths start with it off, but
/// a kernel may differ), and UDP segmentation, which `gso off` leaves on: a UDP GSO send
/// of up to 64 datagrams would otherwise cross the emulated link as one packet larger
/// than the MTU, a batching that a real NIC link does not give.
pub(crate) fn turned_off(feature: &str) -> bool {
    matches!(
        feature,
        "tx-generic-segmentation" | "rx-gro" | "tx-udp-segmentation"
    ) || (feature.starts_with("tx-tcp") && feature.ends_with("-segmentation"))
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// A link of the calling thread's network namespace, opened for ethtool requests.
pub(crate) struct Link {
    sock: OwnedFd,
    name: [libc::c_char; libc::IFNAMSIZ],
    /// Every feature name the kernel knows, by bit.
    features: Vec<String>,
}

impl Link {
    /// Opens `dev` (in the calling thread's network namespace).
    pub(crate) fn open(dev: &str) -> io::Result<Link> {
        if dev.is_empty() || dev.len() >= libc::IFNAMSIZ || dev.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{dev:?}: not an interface name"),
            ));
        }
        let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
        for (to, &from) in name.iter_mut().zip(dev.as_bytes()) {
            *to = from as libc::c_char;
        }
        // SAFETY: socket() takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut link = Link {
            sock,
            name,
            features: Vec::new(),
        };
        link.features = link.feature_names()?;
        Ok(link)
    }

    /// One `SIOCETHTOOL` request on `buf`, whose first word is the command.
    fn request(&self, buf: &mut [u32]) -> io::Result<libc::c_int> {
        // SAFETY: an all-zero ifreq is valid (a name of NULs, a null data pointer).
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = self.name;
        ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
        // SAFETY: `ifr` names the device and points at `buf`, which lives across the call
        // and is as long as the command in its first word makes the kernel read and write
        // (each caller sizes it from the counts it put in the header).
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn feature_names(&self) -> io::Result<Vec<String>> {
        // struct ethtool_sset_info: cmd, reserved, a 64-bit mask of sets, then one count
        // per set asked for.
        let mut info = [0u32; 5];
        info[0] = ETHTOOL_GSSET_INFO;
        let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
        info[2] = u32::from_ne_bytes([mask[0], mask[1], mask[2], mask[3]]);
        info[3] = u32::from_ne_bytes([mask[4], mask[5], mask[6], mask[7]]);
        self.request(&mut info)?;
        // The kernel clears the bits of the sets it does not have.
        if info[2] | info[3] == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel lists no features for this device",
            ));
        }
        let count = info[4] as usize;
        // struct ethtool_gstrings: cmd, string_set, len, then len names of 32 bytes. The
        // kernel writes as many names as the set has, whatever `len` says: the count it
        // just gave, a constant of the running kernel (its number of feature bits).
        let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        strings[0] = ETHTOOL_GSTRINGS;
        strings[1] = ETH_SS_FEATURES;
        strings[2] = count as u32;
        self.request(&mut strings)?;
        let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks(ETH_GSTRING_LEN)
            .take(count)
            .map(|s| {
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect())
    }

    fn blocks(&self) -> usize {
        self.features.len().div_ceil(32)
    }

    /// The features `which` picks, with their bits.
    fn picked(&self, which: fn(&str) -> bool) -> impl Iterator<Item = (usize, &str)> {
        self.features
            .iter()
            .enumerate()
            .filter(move |(_, f)| which(f))
            .map(|(b, f)| (b, f.as_str()))
    }

    /// The features `which` picks that are on.
    pub(crate) fn active(&self, which: fn(&str) -> bool) -> io::Result<Vec<String>> {
        // struct ethtool_gfeatures: cmd, size, then per block: available, requested,
        // active, never_changed.
        let n = self.blocks();
        let mut buf = vec![0u32; 2 + 4 * n];
        buf[0] = ETHTOOL_GFEATURES;
        buf[1] = n as u32;
        self.request(&mut buf)?;
        Ok(self
            .picked(which)
            .filter(|&(b, _)| buf[2 + 4 * (b / 32) + 2] & (1 << (b % 32)) != 0)
            .map(|(_, f)| f.to_owned())
            .collect())
    }

    /// Asks for the features `which` picks off, then returns those still on: a device
    /// that cannot change one keeps it.
    pub(crate) fn turn_off(&self, which: fn(&str) -> bool) -> io::Result<Vec<String>> {
        // struct ethtool_sfeatures: cmd, size, then per block: valid (which bits to
        // change), requested (their new values: 0).
        let n = self.blocks();
        let mut buf = vec![0u32; 2 + 2 * n];
        buf[0] = ETHTOOL_SFEATURES;
        buf[1] = n as u32;
        for (b, _) in self.picked(which) {
            buf[2 + 2 * (b / 32)] |= 1 << (b % 32);
        }
        // A positive answer says some could not be changed as asked: read back below.
        self.request(&mut buf)?;
        self.active(which)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Testbed;

    /// `f` on a thread of a network namespace of its own, which goes when the thread
    /// ends; `None` (with a message) where this process may not make one.
    fn in_new_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if let Some(why) = Testbed::unavailable() {
            eprintln!("offloads: skipped ({why})");
            return None;
        }
        let Some(ip) = crate::net::find_program("ip") else {
            eprintln!("offloads: skipped (no `ip` program)");
            return None;
        };
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            // A child forked by this thread starts in its namespace.
            let made = std::process::Command::new(ip)
                .args(["link", "add", "va", "type", "veth", "peer", "name", "vb"])
                .status()
                .expect("run ip");
            assert!(made.success(), "ip link add: {made}");
            f()
        });
        Some(thread.join().expect("namespace thread"))
    }

    #[test]
    fn a_new_veths_offloads_are_on_and_turned_off_stay_off() {
        let outcome = in_new_namespace(|| {
            let link = Link::open("va").expect("open va");
            let before = link.active(turned_off).expect("read features");
            let left = link.turn_off(turned_off).expect("set features");
            let after = link.active(turned_off).expect("read features again");
            // The other end is untouched.
            let peer = Link::open("vb")
                .expect("open vb")
                .active(turned_off)
                .expect("read vb");
            let unknown = link.active(|f| f == "no-such-feature").expect("read");
            (before, left, after, peer, unknown)
        });
        let Some((before, left, after, peer, unknown)) = outcome else {
            return;
        };
        // A veth starts with its segmentation offloads on (GRO off), so a request that
        // changed nothing would show here.
        for f in [
            "tx-tcp-segmentation",
            "tx-tcp6-segmentation",
            "tx-generic-segmentation",
            "tx-udp-segmentation",
        ] {
            assert!(
                before.iter().any(|b| b == f),
                "{f} not on before: {before:?}"
            );
            assert!(
                peer.iter().any(|b| b == f),
                "{f} not on at the peer: {peer:?}"
            );
        }
        assert!(left.is_empty(), "still on: {left:?}");
        assert!(after.is_empty(), "on again: {after:?}");
        assert!(unknown.is_empty());
    }

    #[test]
    fn a_missing_or_malformed_device_is_an_error() {
        let Some((missing, long, empty)) = in_new_namespace(|| {
            (
                Link::open("nosuchdev").err().map(|e| e.kind()),
                Link::open("a-name-longer-than-ifnamsiz")
                    .err()
                    .map(|e| e.kind()),
                Link::open("").err().map(|e| e.kind()),
            )
        }) else {
            return;
        };
        assert!(missing.is_some(), "opening a missing device succeeded");
        assert_eq!(long, Some(io::ErrorKind::InvalidInput));
        assert_eq!(empty, Some(io::ErrorKind::InvalidInput));
    }
}
