//! At-most-once execution: what a server remembers about a client socket's requests.
//!
//! # The hazard (PROTOCOL.md section 7)
//! A request packet is delayed in a host; the client retries, the retry is executed,
//! answered, acknowledged and freed; then the delayed packet arrives. If the server holds
//! no state for that RPC any more, it would create it again and, for a one-packet request,
//! execute it a second time. Linux Homa has this bug. So does any design that forgets an
//! executed RPC the moment it is acknowledged.
//!
//! # The rule
//! For each client socket (peer address, client port) the server keeps a [`History`]:
//! - `done`: ids of this client's requests that were *executed* (handed to the application)
//!   and whose server state has since been freed;
//! - `floor`: every id at or below it is treated as executed-or-dead.
//!
//! A request packet whose id is not live on the server and is `<= floor` or in `done` is
//! dropped without any answer (in particular never RPC_UNKNOWN, which would make the
//! client restart it). Nothing is ever removed from the rejected set: ids leave `done`
//! only when `floor` passes them, and `floor` only grows. **So while a client socket's
//! history is kept, an executed request can never execute again, however late or often
//! its packets arrive.** That is the safety half, and it needs no timing assumption.
//!
//! # Keeping it small without losing liveness
//! `done` would grow forever, so `floor` advances, using two facts:
//! 1. A client numbers its requests in increasing order and sends a request's first
//!    packets when it creates it. So when id X first arrives here at time t, every smaller
//!    id Y of that client socket that could still come to us was created before t.
//! 2. A client RPC Y that this server does not know gets no DATA, GRANT or BUSY from us,
//!    only RPC_UNKNOWN, on which the client restarts it (a server short of buffer space
//!    refuses requests that way and admits them later). Y is either admitted while it is
//!    a live RPC with an id above `floor`, or, once `floor` passes it, refused with
//!    silence, and the client fails it after `timeout_ticks`.
//!
//! Hence at time `t + horizon` (with `horizon = dedup_horizon_ticks`, which must exceed
//! `timeout_ticks` plus the worst packet delay) every such Y that was never executed
//! here either was refused for good or is restarting with packets that this rule
//! refuses, and `floor` may rise to `X - 1`. Safety does not depend on this timing: an
//! id at or below `floor` never creates an RPC, so it is never executed twice; a Y
//! still restarting when `floor` passes it only loses liveness (it times out). The one exception is a Y that this server knew and
//! discarded *unexecuted* (its request stalled): the client may legitimately restart
//! it, so `floor` stays below every id discarded unexecuted within the last `horizon`.
//! If the assumptions are violated (a packet delayed longer than the horizon), the cost
//! is liveness only: a late request is refused and its client times out. Never a second
//! execution.
//!
//! A history with nothing live and no activity for `client_history_idle_ticks` is dropped.
//! That, like TCP's TIME_WAIT, is the one place a bound on packet delay is assumed (the
//! horizon is assumed to exceed it too; at `max_client_histories` a history idle for a
//! horizon may go early).
//!
//! # Another incarnation on the same port
//! Runtimes start each socket's ids at a random point (`Config::client_id_base`, from
//! the operating system's random source), so that no one off the path can guess them. A
//! new process that binds a port its predecessor used therefore numbers its requests
//! unrelated to the old ones, often below the old floor, and would be refused as
//! "executed" for as long as the old history is kept. Two facts separate it from a late
//! packet of the old one:
//! 1. Only one socket holds a port at a time, and a history with nothing live and no
//!    activity for a horizon can receive no late packet of its client socket (the
//!    horizon exceeds the longest delay, as above).
//! 2. A client socket's ids rise by 2 per request; one [`INCARNATION_GAP`] below the
//!    floor would take it 2^39 requests: no packet that late is still in flight. Random
//!    bases of two incarnations are that close with probability 2^-21.
//!
//! So a request more than `INCARNATION_GAP` below the floor of a history that has nothing
//! live and no activity for a horizon comes from a new incarnation: the history starts
//! over for it ([`History::new_incarnation`]). The cost if the delay bound is broken is
//! the same as the floor's: a packet delayed longer than the horizon could run again.
//! While the old history is active, the new incarnation's requests are refused (it times
//! out and retries), at most a horizon after the old socket's last request.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most refused request ids one history holds the floor back for.
const MAX_REFUSED: usize = 1_024;

/// How far below a history's floor a request id must be to come from another
/// incarnation of its client socket (see the module's documentation).
pub(crate) const INCARNATION_GAP: u64 = 1 << 40;

/// Shrink `q` to twice its length once it holds less than a quarter of its capacity (and
/// has room for more than 64).
fn shrink<T>(q: &mut VecDeque<T>) {
    if q.capacity() > 4 * q.len().max(64) {
        q.shrink_to(2 * q.len());
    }
}

/// The ids of a client socket's live server RPCs; only the smallest is ever asked for.
///
/// A client numbers its requests in increasing order and they end in nearly that order,
/// so ids that arrive above all others are kept in a deque, in order: appended at the
/// back, marked dead when they end and popped once dead at the front. (A `BTreeSet` of
/// them all cost 5-7% of the engine's instructions per 100-byte RPC with 1,000
/// outstanding, its node shuffles on every insert and remove.) Ids that arrive out of
/// order go to a `BTreeSet`, and an id ending away from the front is only marked, so a
/// client choosing its ids and its acks to hurt costs O(log n) per operation, never a
/// shift of the deque; the marks are swept out when they are most of it.
#[derive(Debug, Default)]
struct LiveIds {
    /// Increasing ids, and whether each is still live; the front one is live.
    in_order: VecDeque<(u64, bool)>,
    /// Entries of `in_order` that are no longer live.
    dead: usize,
    /// Live ids that arrived below the back of `in_order`.
    others: BTreeSet<u64>,
}

/// Dead entries `LiveIds` tolerates before it sweeps them (when they are also half).
const LIVE_IDS_SWEEP: usize = 64;

impl LiveIds {
    fn insert(&mut self, id: u64) {
        match self.in_order.back() {
            Some(&(last, _)) if last >= id => match self.position(id) {
                Some(at) => {
                    if !std::mem::replace(&mut self.in_order[at].1, true) {
                        self.dead -= 1;
                    }
                }
                None => {
                    self.others.insert(id);
                }
            },
            // (Already live out of order: once the deque has emptied past it.)
            _ if self.others.contains(&id) => {}
            _ => self.in_order.push_back((id, true)),
        }
    }

    fn remove(&mut self, id: u64) {
        let at = match self.in_order.front() {
            Some(&(first, _)) if first == id => 0,
            _ => {
                if self.others.remove(&id) {
                    return;
                }
                let Some(at) = self.position(id) else { return };
                at
            }
        };
        if !std::mem::replace(&mut self.in_order[at].1, false) {
            return;
        }
        self.dead += 1;
        while self.in_order.front().is_some_and(|&(_, live)| !live) {
            self.in_order.pop_front();
            self.dead -= 1;
        }
        if self.dead > LIVE_IDS_SWEEP && 2 * self.dead > self.in_order.len() {
            self.in_order.retain(|&(_, live)| live);
            self.dead = 0;
        }
    }

    /// Where `id` is in `in_order`, live or not.
    fn position(&self, id: u64) -> Option<usize> {
        self.in_order.binary_search_by_key(&id, |&(i, _)| i).ok()
    }

    fn first(&self) -> Option<u64> {
        let front = self.in_order.front().map(|&(id, _)| id);
        front.into_iter().chain(self.others.first().copied()).min()
    }

    /// Give back the memory of a burst once it has ended.
    fn shrink(&mut self) {
        shrink(&mut self.in_order);
    }
}

/// What a server remembers about one client socket's requests.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// Every id `<= floor` counts as executed or dead.
    floor: u64,
    /// Executed-and-freed ids above `floor` (compaction drops those the floor passes), in
    /// increasing order. A client numbers
    /// its requests in increasing order and they are freed in nearly that order, so an
    /// id almost always goes at the back (O(1), and with concurrent RPCs a short shift
    /// otherwise), a new request's id is above them all (one compare), and compaction
    /// pops from the front.
    done: VecDeque<u64>,
    /// `(tick, id)`: id first seen at tick; increasing ids only.
    candidates: VecDeque<(u64, u64)>,
    /// Highest id ever seen from this client socket.
    max_seen: u64,
    /// `(tick, id)`: discarded without execution at tick; the client may restart it.
    discarded: VecDeque<(u64, u64)>,
    /// id -> the tick it was last refused without creating an RPC (see `note_refused`).
    refused: BTreeMap<u64, u64>,
    /// Live server RPCs of this client socket.
    pub live: u32,
    /// This client socket sent us one-way messages (so it speaks that extension and may
    /// be sent their acknowledgements).
    pub one_way: bool,
    /// One-way messages taken within the last horizon, as `(tick, id)`: the floor stays
    /// below them, so that their ids stay in `done` and a sender whose ack was lost
    /// learns, when it asks, that its message arrived (rather than meeting the floor's
    /// silence, meant for ids that may have died). Kept as a queue of increasing ids
    /// (an id taken after a higher one replaces it), so its front is the smallest.
    one_way_taken: VecDeque<(u64, u64)>,
    /// Their ids: the floor stays below every one, so that a request live for longer
    /// than a horizon (slow to arrive under heavy loss) and then discarded unexecuted is
    /// not already below the floor, refused for good when its client restarts it.
    live_ids: LiveIds,
    /// Last tick anything happened.
    last_active: u64,
    /// A request of this client socket was executed here (and freed since).
    executed_any: bool,
}

impl History {
    /// True when a request with this id must not create a new server RPC.
    pub fn rejects(&self, id: u64) -> bool {
        id <= self.floor || self.done_position(id).is_ok()
    }

    /// True when a request `id` arriving at `tick` comes from a new incarnation of the
    /// client socket (far below the floor, while nothing has happened here for
    /// `horizon` ticks): the history should then start over, and the request be taken.
    pub fn new_incarnation(&self, id: u64, tick: u64, horizon: u64) -> bool {
        self.live == 0
            && tick >= self.last_active.saturating_add(horizon)
            && id.saturating_add(INCARNATION_GAP) <= self.floor
    }

    /// True when `id` was executed and freed and the floor has not passed it yet (an id
    /// at or below the floor may have been executed or may have died unexecuted).
    pub fn executed(&self, id: u64) -> bool {
        id > self.floor && self.done_position(id).is_ok()
    }

    /// A new server RPC for `id` was created at `tick`.
    pub fn note_created(&mut self, id: u64, tick: u64) {
        self.live += 1;
        self.live_ids.insert(id);
        self.last_active = tick;
        if id > self.max_seen {
            self.max_seen = id;
            self.candidates.push_back((tick, id));
        }
    }

    /// A server RPC was freed; `executed` says whether its request reached the application.
    pub fn note_freed(&mut self, id: u64, executed: bool, tick: u64) {
        self.live = self.live.saturating_sub(1);
        self.live_ids.remove(id);
        self.last_active = tick;
        if executed {
            self.executed_any = true;
            if id > self.floor {
                match self.done_position(id) {
                    Err(at) if at == self.done.len() => self.done.push_back(id),
                    Err(at) => self.done.insert(at, id),
                    Ok(_) => {}
                }
            }
        } else {
            self.discarded.push_back((tick, id));
        }
    }

    /// One-way message `id` was taken (handed to the application) at `tick`.
    pub fn note_taken_one_way(&mut self, id: u64, tick: u64) {
        self.one_way = true;
        while self.one_way_taken.back().is_some_and(|&(_, b)| b >= id) {
            self.one_way_taken.pop_back();
        }
        self.one_way_taken.push_back((tick, id));
    }

    /// A request `id` was refused at `tick` without creating an RPC (no buffer space, no
    /// waiting slot): its client will restart it, so the floor must not pass it for a
    /// horizon, or a request refused for long would be refused for good as "executed".
    /// O(log n): a flood of refused forged requests calls this for every packet. At most
    /// `MAX_REFUSED` ids are held; past that new ones are not (only liveness is at
    /// stake, never a second execution).
    pub fn note_refused(&mut self, id: u64, tick: u64) {
        self.last_active = tick;
        if self.refused.len() < MAX_REFUSED || self.refused.contains_key(&id) {
            self.refused.insert(id, tick);
        }
    }

    /// Advance `floor` as far as the rule allows at `tick`. Returns true when the history
    /// holds nothing worth keeping any more.
    pub fn compact(&mut self, tick: u64, horizon: u64, idle: u64) -> bool {
        while matches!(self.discarded.front(), Some(&(t, _)) if t + horizon <= tick) {
            self.discarded.pop_front();
        }
        self.refused.retain(|_, &mut t| t + horizon > tick);
        while matches!(self.one_way_taken.front(), Some(&(t, _)) if t + horizon <= tick) {
            self.one_way_taken.pop_front();
        }
        let limit = self
            .discarded
            .iter()
            .map(|&(_, id)| id)
            .chain(self.refused.keys().next().copied())
            .chain(self.live_ids.first())
            .chain(self.one_way_taken.front().map(|&(_, id)| id))
            .map(|id| id.saturating_sub(1))
            .min()
            .unwrap_or(u64::MAX);
        while let Some(&(t, id)) = self.candidates.front() {
            if t + horizon > tick || id.saturating_sub(1) > limit {
                break;
            }
            self.candidates.pop_front();
            self.floor = self.floor.max(id - 1);
        }
        while self.done.front().is_some_and(|&d| d <= self.floor) {
            self.done.pop_front();
        }
        // A burst of requests (or of one-way messages, which hold the floor back for a
        // horizon) leaves these long; give the memory back once they are short again.
        shrink(&mut self.done);
        shrink(&mut self.candidates);
        shrink(&mut self.one_way_taken);
        self.live_ids.shrink();
        // Nothing executed, nothing live: there is nothing to run twice, so nothing to
        // remember (requests from forged sources, refused or dropped unexecuted, leave
        // nothing behind).
        self.live == 0 && (!self.executed_any || tick >= self.last_active + idle)
    }

    /// True when the history may be dropped before `client_history_idle_ticks` (to make
    /// room for another at `max_client_histories`): nothing live and nothing done for
    /// `horizon` ticks. `horizon` exceeds the longest a packet can be delayed, so no
    /// packet of a request this client socket sent can still arrive: the same
    /// assumption the floor's advance makes.
    pub fn may_drop_early(&self, tick: u64, horizon: u64) -> bool {
        self.live == 0 && tick >= self.last_active + horizon
    }

    /// The last tick anything happened.
    pub fn last_active(&self) -> u64 {
        self.last_active
    }

    /// Where `id` is in `done` (`Ok`), or where it would go (`Err`).
    ///
    /// `done` holds a horizon's worth of requests (hundreds of thousands at a few hundred
    /// thousand RPCs a second), and an id looked up below its last is almost always among
    /// the last few (RPCs are freed in nearly the order they were numbered). So the search
    /// gallops back from the end and bisects only the range that brackets `id`: a bisection
    /// of all of `done` missed the cache at every step, 5% of the CPU of a 100-byte RPC.
    #[inline]
    fn done_position(&self, id: u64) -> Result<usize, usize> {
        let d = &self.done;
        match d.back() {
            Some(&last) if id <= last => {}
            _ => return Err(d.len()), // the usual case: above every id freed so far
        }
        // d[hi] >= id throughout; the answer is the first index in lo..=hi holding an id
        // at least `id`.
        let mut hi = d.len() - 1;
        let mut step = 1;
        let mut lo = loop {
            if hi < step {
                break 0;
            }
            let probe = hi - step;
            if d[probe] < id {
                break probe + 1;
            }
            hi = probe;
            step *= 2;
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if d[mid] < id {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if d[lo] == id {
            Ok(lo)
        } else {
            Err(lo)
        }
    }

    /// Ids held in `done` (for tests and metrics).
    #[cfg(test)]
    pub fn done_len(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the property test below: an id live out of order (in the set) was added
    /// to the deque again once the deque had emptied past it, and counted twice.
    #[test]
    fn an_id_live_out_of_order_is_not_added_again_once_the_deque_empties() {
        let mut live = LiveIds::default();
        live.insert(75);
        live.insert(0); // below 75: out of order
        live.remove(75); // the deque empties
        live.insert(0); // already live
        assert_eq!((live.in_order.len(), live.others.len()), (0, 1));
        live.remove(0);
        assert_eq!(live.first(), None);
    }

    proptest::proptest! {
        /// The live ids' smallest is a set's, whatever order ids come and go in (the
        /// usual order is increasing; any other must work too), and the marks of ended
        /// ids never outnumber the live ones by much.
        #[test]
        fn live_ids_keep_their_smallest(ops in proptest::collection::vec((0u64..300, 0u8..3), 0..600)) {
            let mut live = LiveIds::default();
            let mut model = std::collections::BTreeSet::new();
            let mut next = 300;
            for (id, op) in ops {
                match op {
                    0 => {
                        live.insert(id);
                        model.insert(id);
                    }
                    1 => {
                        // The usual case: above every id so far.
                        next += 1 + id % 3;
                        live.insert(next);
                        model.insert(next);
                    }
                    _ => {
                        let id = model.iter().nth(id as usize % model.len().max(1)).copied().unwrap_or(id);
                        live.remove(id);
                        model.remove(&id);
                    }
                }
                proptest::prop_assert_eq!(live.first(), model.first().copied());
                let marked = live.in_order.len() - live.dead + live.others.len();
                proptest::prop_assert_eq!(marked, model.len());
                proptest::prop_assert!(live.dead <= LIVE_IDS_SWEEP.max(live.in_order.len() / 2 + 1));
            }
        }
    }

    /// The galloping search agrees with a plain binary search wherever the id is (in
    /// `done` or not, below, among or above its ids), for deques that wrap around.
    #[test]
    fn done_position_agrees_with_binary_search() {
        let mut h = History::default();
        for len in 0..70u64 {
            // Rotate the deque's storage so that its contents wrap for some lengths.
            h.done.clear();
            for _ in 0..(len % 7) {
                h.done.push_back(0);
                h.done.pop_front();
            }
            h.done.extend((0..len).map(|i| 10 + 4 * i));
            for id in 0..(20 + 4 * len) {
                assert_eq!(
                    h.done_position(id),
                    h.done.binary_search(&id),
                    "len {len}, id {id}"
                );
            }
        }
    }

    #[test]
    fn executed_ids_are_rejected_forever() {
        let mut h = History::default();
        h.note_created(10, 0);
        h.note_freed(10, true, 1);
        assert!(h.rejects(10));
        // Long after, the floor has passed 10 and 10 is still rejected.
        h.note_created(12, 2);
        h.note_freed(12, true, 3);
        assert!(!h.compact(5_000, 1_000, 60_000));
        assert!(h.rejects(10) && h.rejects(12));
        assert_eq!(h.done_len(), 1); // 12 remains: floor is 11
        assert!(!h.rejects(14));
    }

    #[test]
    fn ids_freed_out_of_order_are_all_rejected_until_compacted_away() {
        let mut h = History::default();
        for id in [2, 4, 6, 8, 10] {
            h.note_created(id, 0);
        }
        for id in [6, 2, 10, 4] {
            h.note_freed(id, true, 1);
        }
        h.note_freed(6, true, 1); // freed twice (cannot happen, but harmless)
        assert_eq!(h.done_len(), 4);
        for id in [2, 4, 6, 10] {
            assert!(h.rejects(id), "{id}");
        }
        for id in [1, 3, 8, 12] {
            assert!(!h.rejects(id), "{id}");
        }
        // 8 runs too. Candidates 2..10 were seen at tick 0: past the horizon, with none
        // of them live any more, the floor reaches 9.
        h.note_freed(8, true, 1);
        h.compact(1_000, 1_000, 60_000);
        assert!(h.rejects(8), "below the floor");
        assert_eq!(h.done_len(), 1); // only 10 is above the floor
        assert!(h.rejects(10) && !h.rejects(12));
    }

    #[test]
    fn unexecuted_discard_holds_the_floor_back() {
        let mut h = History::default();
        h.note_created(20, 0);
        h.note_freed(20, false, 50); // stalled request discarded: client may restart it
        h.note_created(22, 60);
        assert!(!h.rejects(20));
        h.compact(1_059, 1_000, 60_000); // 22 seen at 60: not yet past the horizon
        assert!(!h.rejects(20));
        h.compact(1_060, 1_000, 60_000); // discard of 20 expired at 1050; 22's candidate too
        assert!(h.rejects(20));
        assert!(!h.rejects(22));
    }

    #[test]
    fn a_request_refused_again_and_again_holds_the_floor_back() {
        let mut h = History::default();
        h.note_created(30, 0);
        h.note_freed(30, true, 1);
        // 32 is refused (no buffer) at 5, 500 and 1_400; 34 arrives and runs meanwhile.
        h.note_refused(32, 5);
        h.note_created(34, 10);
        h.note_freed(34, true, 11);
        h.note_refused(32, 500);
        h.compact(1_100, 1_000, 60_000);
        assert!(!h.rejects(32), "refused within the horizon: may still come");
        h.note_refused(32, 1_400);
        h.compact(2_300, 1_000, 60_000);
        assert!(!h.rejects(32));
        assert!(h.rejects(30) && h.rejects(34), "executed ones stay refused");
        // Once it stops coming for a horizon, the floor passes it.
        h.compact(2_400, 1_000, 60_000);
        assert!(h.rejects(32));
    }

    #[test]
    fn a_request_live_for_longer_than_a_horizon_can_still_restart_after_a_discard() {
        let mut h = History::default();
        h.note_created(40, 0); // arrives slowly, under heavy loss
        h.note_created(42, 1);
        h.note_freed(42, true, 2);
        // Long past the horizon of 42's arrival, 40 is still live: the floor waits.
        h.compact(5_000, 1_000, 60_000);
        assert!(!h.rejects(40));
        h.note_freed(40, false, 5_001); // given up unexecuted: its client restarts it
        h.compact(5_010, 1_000, 60_000);
        assert!(!h.rejects(40), "a restart of 40 is taken");
        assert!(h.rejects(42));
    }

    #[test]
    fn a_new_incarnation_far_below_the_floor_starts_over_once_the_old_is_quiet() {
        let base = 1 << 50;
        let mut h = History::default();
        h.note_created(base, 0);
        h.note_freed(base, true, 1);
        h.note_created(base + 2, 2);
        h.note_freed(base + 2, true, 3);
        h.compact(2_000, 1_000, 60_000); // floor = base + 1
        let new = 1 << 20; // the new socket's random base: far below
        assert!(h.rejects(new) && h.rejects(base));
        // Within a horizon of the old socket's last request: refused.
        assert!(!h.new_incarnation(new, 1_002, 1_000));
        // Quiet for a horizon: the new incarnation is taken...
        assert!(h.new_incarnation(new, 1_003, 1_000));
        // ...but never an id near the old ones, nor while anything is live.
        assert!(!h.new_incarnation(base - 2, 5_000, 1_000));
        assert!(!h.new_incarnation(base + 1 - INCARNATION_GAP + 1, 5_000, 1_000));
        h.note_created(base + 4, 5_000);
        assert!(!h.new_incarnation(new, 9_000, 1_000));
    }

    #[test]
    fn a_one_way_message_taken_stays_known_as_executed_for_a_horizon() {
        let mut h = History::default();
        h.note_created(50, 0);
        h.note_created(52, 1);
        h.note_freed(52, true, 2);
        // 50 arrives slowly and is taken at 900; 52's arrival is long past the horizon.
        h.note_freed(50, true, 900);
        h.note_taken_one_way(50, 900);
        h.compact(1_500, 1_000, 60_000);
        assert!(h.executed(50) && h.executed(52), "taken within the horizon");
        assert!(h.one_way);
        h.compact(1_900, 1_000, 60_000);
        assert!(h.rejects(50) && !h.executed(50), "past it: below the floor");
    }

    #[test]
    fn a_burst_of_one_way_messages_leaves_no_long_queues_a_horizon_later() {
        let mut h = History::default();
        for k in 0..10_000u64 {
            let id = 2 * k + 2;
            h.note_created(id, k / 100);
            h.note_freed(id, true, k / 100);
            h.note_taken_one_way(id, k / 100);
        }
        h.compact(100, 1_000, 60_000);
        assert_eq!(h.one_way_taken.len(), 10_000, "all within the horizon");
        assert!(h.executed(2) && h.executed(20_000));
        // A horizon later the floor has passed them (but perhaps the last), and the
        // memory is given back.
        h.compact(1_200, 1_000, 60_000);
        assert!(h.rejects(2) && !h.executed(2) && h.rejects(20_000));
        assert!(h.one_way_taken.is_empty() && h.done.len() <= 1, "{h:?}");
        let held = h.done.capacity() + h.candidates.capacity() + h.one_way_taken.capacity();
        assert!(held <= 3 * 64, "{held} entries' room kept");
    }

    #[test]
    fn idle_history_can_be_dropped() {
        let mut h = History::default();
        h.note_created(2, 0);
        assert!(!h.compact(100_000, 1_000, 60_000), "live RPC keeps history");
        h.note_freed(2, true, 10);
        assert!(!h.compact(1_000, 1_000, 60_000));
        assert!(h.compact(60_010, 1_000, 60_000));
    }
}
