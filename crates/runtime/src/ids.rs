//! Where each socket's client RPC ids start, and its engine's seed: drawn from the
//! operating system's random source, so that a sender off the path cannot guess the id
//! of a live RPC (docs/PROTOCOL.md, "What an off-path sender must guess").
//!
//! Ids never repeat within a process: a socket's ids start above every id that any
//! socket this process opened before could have handed out by then (a socket hands out
//! fewer than one id per nanosecond), so a socket that takes the port of a closed one
//! never reuses its ids. Across processes the bases are unrelated, and servers tell a new
//! socket on an old port from a late packet of the old one (`homa_core`'s history.rs).

use std::io;
use std::sync::Mutex;
use std::time::Instant;

/// Ids below this: room for 2^62 more ids per socket before the engine's limit (2^63),
/// 146 years at one a nanosecond.
const BASE_RANGE: u64 = 1 << 62;

/// The last base handed out and when: every id handed out by this process's sockets so
/// far is below `base + nanoseconds since`.
static LAST: Mutex<Option<(u64, Instant)>> = Mutex::new(None);

/// 64 bits from the operating system's random source (`getrandom`).
pub(crate) fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(io::Error::other)?;
    Ok(u64::from_ne_bytes(b))
}

/// The first client id for a new socket: random (61 bits), and above every id this
/// process's earlier sockets can have used (then 31 random bits above that bound).
pub(crate) fn client_id_base() -> io::Result<u64> {
    let r = random_u64()?;
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let bound = last.map_or(0, |(base, at)| {
        let since = now.duration_since(at).as_nanos().min(u64::MAX as u128) as u64;
        base.saturating_add(since).saturating_add(2)
    });
    let drawn = (r % BASE_RANGE).max(2);
    let base = if drawn >= bound {
        drawn
    } else {
        bound.saturating_add(r >> 33)
    };
    let base = base.min(BASE_RANGE * 2 - 2) & !1;
    // The new bound (base + time since now) is above the old one at every later time.
    *last = Some((base, now));
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_random_even_and_above_what_earlier_sockets_can_have_used() {
        let mut prev: Option<(u64, Instant)> = None;
        let mut lows = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let before = Instant::now();
            let b = client_id_base().unwrap();
            assert_eq!(b % 2, 0);
            assert!((2..1 << 63).contains(&b), "{b}");
            if let Some((p, returned)) = prev {
                // The earlier socket may have handed out an id a nanosecond since.
                let since = before.duration_since(returned).as_nanos() as u64;
                assert!(b >= p + since + 2, "{b} after {p} (+{since} ns)");
            }
            prev = Some((b, Instant::now()));
            lows.insert(b & 0xffff_fffe);
        }
        // Random, not a count: the low bits of the bases are all different.
        assert!(lows.len() > 990, "{} distinct", lows.len());
    }
}
