//! The interfaces of IPv6 link-local peers.
//!
//! The engine names a peer by its IP address alone, and a link-local address (fe80::/10)
//! names a host only together with the link it is on: the kernel refuses to send to one
//! without a scope (the interface) unless the socket is bound to an interface. A socket
//! bound to a link-local address has one; a wildcard socket does not, and must answer
//! each link-local peer on the interface it heard it on. The kernel gives that interface
//! with each datagram received (the sender's `sin6_scope_id`); this table keeps it for
//! the packets the engine sends back.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// Link-local peers remembered, most recently heard first. Hosts talk to few peers on
/// their links; a peer forgotten is learnt again from its next packet.
const MAX_SCOPES: usize = 64;

/// Link-local peers and the interfaces they were last heard on.
#[derive(Debug, Default)]
pub(crate) struct LinkScopes {
    /// (address, interface index), most recently learnt first.
    known: Vec<(Ipv6Addr, u32)>,
}

impl LinkScopes {
    /// Note the interface of the sender `from`, if it is a scoped IPv6 address (the
    /// kernel gives a scope only to link-local senders).
    #[inline]
    pub(crate) fn learn(&mut self, from: SocketAddr) {
        if let SocketAddr::V6(a) = from {
            if a.scope_id() != 0 {
                self.learn_v6(*a.ip(), a.scope_id());
            }
        }
    }

    fn learn_v6(&mut self, ip: Ipv6Addr, scope: u32) {
        if self.known.first() == Some(&(ip, scope)) {
            return; // the common case: the same peer again
        }
        if let Some(i) = self.known.iter().position(|&(a, _)| a == ip) {
            self.known.remove(i);
        } else if self.known.len() == MAX_SCOPES {
            self.known.pop();
        }
        self.known.insert(0, (ip, scope));
    }

    /// `dest`, with the interface its peer was heard on where it is a link-local IPv6
    /// address without one.
    #[inline]
    pub(crate) fn scoped(&self, dest: SocketAddr) -> SocketAddr {
        match dest {
            SocketAddr::V6(a) if a.scope_id() == 0 && is_link_local(a.ip()) => {
                match self.known.iter().find(|&&(ip, _)| ip == *a.ip()) {
                    Some(&(_, scope)) => {
                        SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), a.flowinfo(), scope))
                    }
                    None => dest,
                }
            }
            _ => dest,
        }
    }
}

/// fe80::/10.
fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str, port: u16, scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(s.parse().unwrap(), port, 0, scope))
    }

    #[test]
    fn link_local_destinations_take_the_interface_heard_on() {
        let mut t = LinkScopes::default();
        t.learn(v6("fe80::1", 9, 3));
        t.learn(v6("2001:db8::1", 9, 0)); // not scoped: nothing to learn
        t.learn("10.0.0.1:9".parse().unwrap());
        assert_eq!(t.scoped(v6("fe80::1", 4000, 0)), v6("fe80::1", 4000, 3));
        // A scope given stays; other addresses pass unchanged; an unknown peer too.
        assert_eq!(t.scoped(v6("fe80::1", 4000, 7)), v6("fe80::1", 4000, 7));
        assert_eq!(t.scoped(v6("2001:db8::1", 1, 0)), v6("2001:db8::1", 1, 0));
        assert_eq!(t.scoped(v6("fe80::2", 1, 0)), v6("fe80::2", 1, 0));
        // The peer moved to another interface: the latest wins.
        t.learn(v6("fe80::1", 9, 5));
        assert_eq!(t.scoped(v6("fe80::1", 1, 0)), v6("fe80::1", 1, 5));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_longest_unheard() {
        let mut t = LinkScopes::default();
        for i in 0..(MAX_SCOPES as u16 + 10) {
            t.learn(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i + 1),
                9,
                0,
                2,
            )));
        }
        assert_eq!(t.known.len(), MAX_SCOPES);
        let first = v6("fe80::1", 1, 0);
        assert_eq!(t.scoped(first), first, "the oldest is forgotten");
        let last = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, MAX_SCOPES as u16 + 10);
        let last = SocketAddr::V6(SocketAddrV6::new(last, 1, 0, 0));
        assert_ne!(t.scoped(last), last, "the newest is kept");
    }
}
