//! RPC id rules and priority mappings.

/// Largest message Linux Homa accepts (`HOMA_MAX_MESSAGE_LENGTH`).
pub const HOMA_MAX_MESSAGE_LENGTH: u32 = 1_000_000;
/// Number of network priority levels.
pub const NUM_PRIORITIES: u8 = 8;

/// An RPC id as known locally.
///
/// Clients choose even ids. On the wire every packet carries the id *as its sender knows
/// it*: the client sends `id`, the server sends `id | 1`. So a receiver always finds its own
/// id for the RPC as `sender_id ^ 1`, and the low bit says which side it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RpcId(pub u64);

impl RpcId {
    /// The local id for the RPC a received packet belongs to.
    pub fn from_sender_id(sender_id: u64) -> RpcId {
        RpcId(sender_id ^ 1)
    }
    /// True when this side is the client (even id).
    pub fn is_client(self) -> bool {
        self.0 & 1 == 0
    }
    /// The value to put in `sender_id` of packets this side sends.
    pub fn to_wire(self) -> u64 {
        self.0
    }
    /// The id the client uses for this RPC (even).
    pub fn client_id(self) -> u64 {
        self.0 & !1
    }
    /// The id the peer uses for this RPC.
    pub fn peer_id(self) -> RpcId {
        RpcId(self.0 ^ 1)
    }
}

impl core::fmt::Display for RpcId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// IPv4 TOS byte for a Homa priority: the priority goes in the top three bits (ECN 0).
/// Priorities above 7 are clamped.
pub fn priority_to_tos(priority: u8) -> u8 {
    priority.min(NUM_PRIORITIES - 1) << 5
}

/// Homa priority carried by an IPv4 TOS byte.
pub fn tos_to_priority(tos: u8) -> u8 {
    tos >> 5
}

/// IPv6 traffic class for a Homa priority (same layout as the IPv4 TOS byte).
pub fn priority_to_traffic_class(priority: u8) -> u8 {
    priority_to_tos(priority)
}

/// Homa priority carried by an IPv6 traffic class.
pub fn traffic_class_to_priority(traffic_class: u8) -> u8 {
    tos_to_priority(traffic_class)
}

/// Priority for the unscheduled bytes of a message of `length` bytes, given a receiver's
/// cutoffs: the highest priority whose cutoff is at least `length`. Like Linux Homa, entry 0
/// counts as unlimited whatever it holds (it travels as 0 on the wire), so there is always
/// an answer. A message longer than every cutoff (possible only where both hosts raised
/// `max_message_length` above the module's 1,000,000 bytes) takes the lowest priority that
/// has a cutoff, the receiver's lowest unscheduled level, rather than 0; Linux Homa's
/// cutoffs always reach its longest message, so against it the rule is the module's.
pub fn unsched_priority(cutoffs: &[u32; 8], length: u32) -> u8 {
    let mut lowest_with_cutoff = 0;
    for i in (1..cutoffs.len()).rev() {
        if cutoffs[i] >= length {
            return i as u8;
        }
        if cutoffs[i] != 0 {
            lowest_with_cutoff = i as u8;
        }
    }
    lowest_with_cutoff
}
