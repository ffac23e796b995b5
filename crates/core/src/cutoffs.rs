//! Unscheduled-priority cutoffs from message lengths: which bytes of a message travel at
//! an unscheduled priority, and how to split those bytes into priority levels.
//!
//! The SIGCOMM paper gives unscheduled levels equal shares of the bytes sent at
//! unscheduled priorities, the shortest messages (or, when senders choose by what is left
//! of a message, the fewest bytes left) on the highest level. The simulator computes
//! them from a workload's distribution; an endpoint with `Config::learn_cutoffs_ticks`
//! computes them from the lengths of the messages it receives, and announces them.

/// The packets of a `len`-byte message that travel at an unscheduled priority, as
/// (key, payload bytes): those starting in its first `unsched_end` bytes, and those with
/// at most `tail_bytes` of it left from their start (granted at an unscheduled priority,
/// see `Config::grant_tail_bytes`). The key is what a sender compares with the cutoffs:
/// the bytes left from the packet on when `by_remaining`, else the message's length.
pub fn unscheduled_packets(
    len: u32,
    seg: u32,
    unsched_end: u32,
    tail_bytes: u32,
    by_remaining: bool,
) -> impl Iterator<Item = (u32, u32)> {
    let seg = seg.max(1);
    let n = len.div_ceil(seg).max(1);
    let head = unsched_end.min(len).div_ceil(seg).clamp(1, n);
    let tail_from = n.saturating_sub(tail_bytes.div_ceil(seg)).max(head);
    (0..head).chain(tail_from..n).filter_map(move |k| {
        let off = k * seg;
        let left = len - off;
        if k >= head && left > tail_bytes {
            return None;
        }
        let key = if by_remaining { left } else { len };
        Some((key, left.min(seg)))
    })
}

/// Cutoffs that give each of `levels` unscheduled levels (the top ones, 7 down) an equal
/// share of the weight of `samples` (key, weight), the smallest keys on the highest
/// level; a cutoff equal to the one above is dropped (one level fewer is used), and the
/// lowest level used takes every key up to `longest`. Sorts `samples`.
///
/// Returns `unsched_cutoffs` (index = priority; 0 for the scheduled levels below).
pub fn split(samples: &mut [(u32, f64)], levels: u8, longest: u32) -> [u32; 8] {
    let levels = levels.clamp(1, 7);
    samples.sort_unstable_by_key(|&(key, _)| key);
    let total: f64 = samples.iter().map(|&(_, w)| w).sum();
    let mut cutoffs = [0u32; 8];
    let (mut level, mut acc, mut i) = (7usize, 0.0, 0);
    for step in 1..levels as usize {
        let target = total * step as f64 / levels as f64;
        while i < samples.len() && acc < target * (1.0 - 1e-12) {
            acc += samples[i].1;
            i += 1;
        }
        let Some(&(key, _)) = samples.get(i.saturating_sub(1)) else {
            break;
        };
        if level < 7 && cutoffs[level + 1] >= key {
            continue; // the same cutoff again: one level fewer
        }
        cutoffs[level] = key;
        level -= 1;
    }
    cutoffs[level] = longest.max(cutoffs.get(level + 1).copied().unwrap_or(0));
    cutoffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscheduled_packets_are_the_head_and_the_tail() {
        // 10 packets of 100 bytes, 300 unscheduled, a 250-byte tail.
        let by_left: Vec<_> = unscheduled_packets(1_000, 100, 300, 250, true).collect();
        assert_eq!(
            by_left,
            [(1_000, 100), (900, 100), (800, 100), (200, 100), (100, 100)]
        );
        let by_len: Vec<_> = unscheduled_packets(1_000, 100, 300, 0, false).collect();
        assert_eq!(by_len, [(1_000, 100), (1_000, 100), (1_000, 100)]);
        // A short message: its one packet, counted once.
        assert_eq!(
            unscheduled_packets(50, 100, 300, 250, true).collect::<Vec<_>>(),
            [(50, 50)]
        );
    }

    #[test]
    fn levels_get_equal_shares_smallest_on_top() {
        let mut s: Vec<(u32, f64)> = (1..=100).map(|k| (k, 1.0)).collect();
        let c = split(&mut s, 4, 1_000);
        assert_eq!(c, [0, 0, 0, 0, 1_000, 75, 50, 25]);
        // Repeated keys use fewer levels.
        let mut s = vec![(5, 10.0), (6, 1.0)];
        assert_eq!(split(&mut s, 3, 9), [0, 0, 0, 0, 0, 0, 9, 5]);
        // One level: everything up to the longest.
        assert_eq!(split(&mut [(3, 1.0)], 1, 7), [0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(split(&mut [], 3, 7)[7], 7);
    }
}
