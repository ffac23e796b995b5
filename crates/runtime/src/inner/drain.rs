//! A graceful shutdown: the socket stops taking requests, lets the responses it still
//! owes reach their clients, then shuts down.

use super::deliver::Wake;
use super::{Guard, Inner, State};
use homa_core::{RpcState, Time};

/// A drain in progress (see [`Inner::begin_drain`]).
pub(crate) struct Drain {
    /// When the socket shuts down whatever is left.
    deadline: Time,
    /// The callers waiting for the drain to end (usually one), woken by the first input
    /// or timer that finds it over, or by a shutdown.
    waiters: Vec<Wake>,
    /// It was found over (its waiters woken): the socket's driver no longer wakes for
    /// its deadline.
    over: bool,
    /// The socket's port.
    port: u16,
}

impl Drain {
    pub(super) fn into_waiters(self) -> Vec<Wake> {
        self.waiters
    }
}

impl Inner {
    /// Stop taking requests and one-way messages (later ones are dropped or refused, as
    /// by a socket that takes none), drop the requests still arriving, and keep every
    /// server RPC whose request has reached the application until its response is
    /// acknowledged, or until `deadline`. Returns false if the socket is shut down
    /// already. A second call while draining moves the deadline earlier only.
    pub(crate) fn begin_drain(&self, st: &mut Guard<'_>, deadline: Time) -> bool {
        if st.shutdown {
            return false;
        }
        if let Some(d) = st.drain.as_mut() {
            d.deadline = d.deadline.min(deadline);
            // (The driver's timer: see `next_wake`.)
            self.after_command(st, None);
            return true;
        }
        tracing::debug!(local = %self.local, "draining");
        st.ep.set_server(self.port, false);
        st.ep.set_one_way(self.port, false);
        // Refusing requests is the point now, not a mistake worth a warning.
        st.warned_not_server = true;
        let arriving: Vec<_> = st
            .ep
            .rpcs(self.port)
            .filter(|r| r.state == RpcState::Incoming)
            .map(|r| (r.peer, r.id))
            .collect();
        for (peer, id) in arriving {
            st.ep.discard(self.port, peer, id);
        }
        st.drain = Some(Drain {
            deadline,
            waiters: Vec::new(),
            over: false,
            port: self.port,
        });
        self.after_command(st, None);
        true
    }

    /// Whether the drain is over at `now`: its deadline has passed, or nothing is left
    /// that it waits for (see [`State::unfinished`]). `None` while it goes on, or when no
    /// drain was begun.
    pub(crate) fn drain_over(&self, st: &State, now: Time) -> Option<()> {
        st.drain_over_at(Some(now))
    }

    /// Have `wake` woken when the drain is over (checked whenever the socket's driver
    /// handles input or a timer, and the driver wakes for the drain's deadline). A caller
    /// already waiting is not added twice.
    pub(crate) fn wait_drain(&self, st: &mut State, wake: Wake) {
        if let Some(d) = st.drain.as_mut() {
            if !d.waiters.iter().any(|w| w.same_as(&wake)) {
                d.waiters.push(wake);
            }
        }
    }

    /// After input or a timer: wake the drain's waiters if the drain is over.
    pub(super) fn check_drain(&self, st: &mut State, now: Time) {
        if self.drain_over(st, now).is_some() {
            st.end_drain_wait();
        }
    }
}

impl State {
    /// When the driver must wake to end a drain that nothing else ends first: an idle
    /// engine has no tick to run, and its socket no input, so without this a drain with
    /// something left (a request never answered, a one-way message never taken) would
    /// outlive its deadline. `None` once the drain was found over.
    pub(super) fn drain_deadline(&self) -> Option<Time> {
        self.drain
            .as_ref()
            .filter(|d| !d.over && !self.shutdown)
            .map(|d| d.deadline)
    }

    /// The drain is over: wake its waiters (they shut the socket down).
    fn end_drain_wait(&mut self) {
        if let Some(d) = self.drain.as_mut() {
            d.over = true;
            let waiters = std::mem::take(&mut d.waiters);
            self.wakes.extend(waiters);
        }
    }

    /// An outcome was taken from the queue while draining: if it was the last one-way
    /// message the drain waited for, the drain is over now (nothing else may look before
    /// its deadline: the engine keeps nothing of a delivered message, and may be idle).
    pub(super) fn after_take_while_draining(&mut self) {
        let found = self.drain.as_ref().is_some_and(|d| d.over) || self.shutdown;
        if !found && self.drain_over_at(None).is_some() {
            self.end_drain_wait();
        }
    }

    /// [`Inner::drain_over`]; without a time, only whether nothing is left.
    fn drain_over_at(&self, now: Option<Time>) -> Option<()> {
        let d = self.drain.as_ref()?;
        (now.is_some_and(|n| n >= d.deadline) || self.unfinished(d.port) == 0).then_some(())
    }

    /// A graceful shutdown is under way.
    pub(crate) fn draining(&self) -> bool {
        self.drain.is_some() && !self.shutdown
    }

    /// What a drain waits for on `port`: server RPCs whose request reached the
    /// application (queued or taken) and whose response is not yet acknowledged, and
    /// one-way messages queued for the application (their senders were told they were
    /// delivered, and the engine keeps nothing of them).
    pub(super) fn unfinished(&self, port: u16) -> usize {
        let serving = self.ep.rpcs(port).filter(|r| {
            matches!(
                r.state,
                RpcState::InService | RpcState::Outgoing | RpcState::AwaitingAck
            )
        });
        let one_way = self.ready.iter().filter(|r| {
            matches!(
                r,
                super::Ready::Msg {
                    kind: crate::MessageKind::OneWay,
                    ..
                }
            )
        });
        serving.count() + one_way.count()
    }

    /// How many RPCs and messages the shutdown that ended the drain cut off (`None`: no
    /// drain ended that way).
    pub(crate) fn drain_cut_off(&self) -> Option<usize> {
        self.drain_result
    }
}
