//! One-way messages, this implementation's extension (docs/PROTOCOL.md, "One-way
//! messages"): sending one, the agreement with each receiving port that comes first,
//! handing one to the receiving application, and the acknowledgements that complete it at
//! its sender.
//!
//! What keeps the extension away from peers that do not know it (the Linux module, older
//! versions of this engine, sockets that did not opt in): nothing of it goes to a port
//! before that port said it takes one-way messages, except the question itself, a CUTOFFS
//! packet carrying our true cutoffs and a mark in the slot the module ignores. The acks
//! go only to client sockets that sent us one-way DATA.

use super::lifecycle::shrink_vec;
use super::outgoing::Control;
use super::Endpoint;
use crate::buffer::MessageBuf;
use crate::error::{RpcError, SendError};
use crate::event::Event;
use crate::rpc::State;
use crate::time::Time;
use bytes::Bytes;
use homa_wire::{AckEntry, Acks, Body, Common, OneWayMark, Repr, RpcId};
use std::net::{IpAddr, SocketAddr};

/// Acks one ACK packet carries: the one its header names and `MAX_ACKS` more.
const ACKS_PER_PACKET: usize = homa_wire::MAX_ACKS + 1;
/// Priority of the ACK packets that acknowledge one-way messages in batches: the lowest.
/// They are on no message's critical path (the receiver has the message; only its
/// sender's memory waits for them), so they take nothing from the priorities of messages,
/// and they leave only when there is no data to send (`Sender::background`): a batch of
/// them in the NIC would delay every message behind it. One that is late or lost is
/// recovered by the sender's RESEND, answered at once.
const BATCHED_ACK_PRIORITY: u8 = 0;

/// What a port of a peer said about taking one-way messages from us.
#[derive(Debug)]
pub(super) enum Agreement {
    /// First asked at tick `since`, from our port `port`, and again at every tick after;
    /// the messages waiting for the answer, as (handle, id).
    Asked {
        since: u64,
        port: u16,
        waiting: Vec<(usize, RpcId)>,
    },
    /// It takes them.
    Accepted,
}

/// Peers with one-way business at the next tick (either list may hold a peer that has
/// none left by then, or an index the peer table gave to another peer since).
#[derive(Default)]
pub(super) struct OneWayPeers {
    /// Peers with a question outstanding.
    pub(super) asking: Vec<usize>,
    /// Peers we owe acks.
    pub(super) owing: Vec<usize>,
}

impl OneWayPeers {
    /// Nothing is due at the next tick.
    pub(super) fn is_idle(&self) -> bool {
        self.asking.is_empty() && self.owing.is_empty()
    }
}

/// Where a new one-way message stands with its receiving port.
enum Standing {
    Accepted,
    Waiting,
    FirstAsk,
}

impl Endpoint {
    /// Send `data` as a one-way message to the socket at `dest`, from the socket on
    /// `port`. The receiving application gets it as [`Event::Message`] and sends nothing
    /// back; this side gets [`Event::Delivered`] once the receiver has acknowledged the
    /// whole message, or [`Event::Failed`]. `cookie` and `private` are as for
    /// [`send_request`](Self::send_request); so are the errors.
    ///
    /// One-way messages are this implementation's extension to Homa's wire format. The
    /// first one to a port asks that port whether it takes them (see
    /// [`set_one_way`](Self::set_one_way)) and waits for the answer, as do the ones sent
    /// meanwhile. A port that refuses, or that has not answered when its host is heard
    /// from `timeout_ticks` after the question (the Linux module and older versions of
    /// this engine stay silent), fails the waiting messages with
    /// [`RpcError::NotAccepted`]; a host silent for `timeout_ticks` fails them with
    /// [`RpcError::Timeout`].
    pub fn send_message(
        &mut self,
        now: Time,
        port: u16,
        dest: SocketAddr,
        data: impl Into<Bytes>,
        cookie: u64,
        private: bool,
    ) -> Result<RpcId, SendError> {
        let h = self.new_client_rpc(now, port, dest, data.into(), (cookie, private), true)?;
        let (p, id) = (self.rpcs[h].peer(), self.rpcs[h].id);
        let dport = dest.port();
        let agreements = &mut self.peers[p].one_way;
        let standing = match agreements.iter_mut().find(|(q, _)| *q == dport) {
            Some((_, Agreement::Accepted)) => Standing::Accepted,
            Some((_, Agreement::Asked { waiting, .. })) => {
                waiting.push((h, id));
                Standing::Waiting
            }
            None => {
                let (since, waiting) = (self.clock.tick, vec![(h, id)]);
                agreements.push((
                    dport,
                    Agreement::Asked {
                        since,
                        port,
                        waiting,
                    },
                ));
                Standing::FirstAsk
            }
        };
        match standing {
            Standing::Accepted => self.send_update(h),
            Standing::Waiting => self.rpcs[h].held = true,
            Standing::FirstAsk => {
                self.rpcs[h].held = true;
                if !self.one_way.asking.contains(&p) {
                    self.one_way.asking.push(p);
                }
                self.send_question(port, dest, id);
            }
        }
        Ok(id)
    }

    /// Ask the socket at `dest`, from our socket on `port`, whether it takes one-way
    /// messages, before there is one to send: the first message then need not wait for
    /// the answer (a round trip). Nothing happens if the question is already out or
    /// answered yes. The question is repeated at every tick until answered, for
    /// `timeout_ticks` at most; an application that sends only one-way messages to known
    /// peers may ask them all at start.
    pub fn ask_one_way(&mut self, now: Time, port: u16, dest: SocketAddr) -> Result<(), SendError> {
        if !self.sockets.contains_key(&port) {
            return Err(SendError::NoSuchSocket);
        }
        if dest.port() == 0 {
            return Err(SendError::InvalidPort);
        }
        self.start_clock(now);
        let p = self.peers.get_or_insert(dest.ip(), self.clock.tick);
        let agreements = &mut self.peers[p].one_way;
        if agreements.iter().any(|(q, _)| *q == dest.port()) {
            return Ok(());
        }
        let (since, waiting) = (self.clock.tick, Vec::new());
        agreements.push((
            dest.port(),
            Agreement::Asked {
                since,
                port,
                waiting,
            },
        ));
        if !self.one_way.asking.contains(&p) {
            self.one_way.asking.push(p);
        }
        self.send_question(port, dest, RpcId(0));
        Ok(())
    }

    /// The question: from our `port` to `dest`, naming message `id` (0 for none).
    fn send_question(&mut self, port: u16, dest: SocketAddr, id: RpcId) {
        let repr = Repr {
            common: Common {
                sport: port,
                dport: dest.port(),
                sender_id: id.to_wire(),
            },
            body: Body::Cutoffs(self.own_cutoffs(OneWayMark::Query.to_slot())),
        };
        self.queue_control(dest, 0, repr);
    }

    /// A CUTOFFS packet (header `c`) from `from` carried a one-way `mark`.
    pub(super) fn on_one_way_mark(&mut self, from: IpAddr, c: Common, mark: OneWayMark) {
        match mark {
            OneWayMark::Query => {
                let answer = match self.sockets.get(&c.dport) {
                    Some(s) if s.one_way => OneWayMark::Accept,
                    Some(_) => OneWayMark::Refuse,
                    None => OneWayMark::NoSocket,
                };
                self.answer_one_way(from, c, answer);
            }
            OneWayMark::Accept => self.one_way_accepted(from, c.sport),
            OneWayMark::Refuse => self.one_way_refused(from, c.sport, RpcError::NotAccepted),
            OneWayMark::NoSocket => self.one_way_refused(from, c.sport, RpcError::NoSuchSocket),
        }
    }

    /// Answer a question, or one-way DATA, from `from` (header `c`) with `mark`: within
    /// the per-address answer budget, so that forged sources cannot make us a reflector.
    pub(super) fn answer_one_way(&mut self, from: IpAddr, c: Common, mark: OneWayMark) {
        let body = Body::Cutoffs(self.own_cutoffs(mark.to_slot()));
        self.answer(from, c, body);
    }

    /// The port `port` of `from` takes our one-way messages: send the ones waiting. Only
    /// an answer to our question counts.
    fn one_way_accepted(&mut self, from: IpAddr, port: u16) {
        let Some(p) = self.peers.find(from) else {
            return;
        };
        let agreements = &mut self.peers[p].one_way;
        let Some((_, agreement)) = agreements.iter_mut().find(|(q, _)| *q == port) else {
            return;
        };
        let Agreement::Asked { waiting, .. } = std::mem::replace(agreement, Agreement::Accepted)
        else {
            return;
        };
        for (h, id) in waiting {
            if let Some(rpc) = self.rpcs.get_mut(h).filter(|r| r.id == id && r.held) {
                rpc.held = false;
                self.send_update(h);
            }
        }
    }

    /// The port `port` of `from` does not take one-way messages (any more), or has no
    /// socket: every one of ours to it fails with `why`. Only a port we asked, or that had
    /// accepted, is heard.
    fn one_way_refused(&mut self, from: IpAddr, port: u16, why: RpcError) {
        let Some(p) = self.peers.find(from) else {
            return;
        };
        let agreements = &mut self.peers[p].one_way;
        let Some(i) = agreements.iter().position(|(q, _)| *q == port) else {
            return;
        };
        agreements.swap_remove(i);
        let dest = SocketAddr::new(from, port);
        let doomed: Vec<usize> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.one_way && r.is_client() && r.peer_addr == dest)
            .map(|(h, _)| h)
            .collect();
        for h in doomed {
            self.fail(h, why);
        }
    }

    /// Hand the one-way message of server RPC `h` to the application: the message is
    /// executed (its id stays in the client's history), its state freed, and its sender
    /// owed an ack.
    pub(super) fn hand_over_one_way(&mut self, h: usize, data: MessageBuf) {
        self.metrics.one_way_delivered += 1;
        let rpc = &mut self.rpcs[h];
        rpc.state = State::InService;
        self.events.push_back(Event::Message {
            port: rpc.port,
            id: rpc.id,
            peer: rpc.peer_addr,
            data,
        });
        let (p, client_port, history) = (rpc.peer(), rpc.peer_addr.port(), rpc.history);
        let ack = AckEntry {
            client_id: rpc.id.client_id(),
            server_port: rpc.port,
        };
        self.free_rpc(h);
        if let Some(history) = self.histories.get_mut(history as usize) {
            history.note_taken_one_way(ack.client_id, self.clock.tick);
        }
        self.owe_one_way_ack(p, client_port, ack);
    }

    /// Owe peer `p`'s client socket `client_port` the ack `ack`. Acks go out a packet full
    /// at a time, at the end of the receive batch when nothing of ours waits to go, or at
    /// the next tick, or riding on our own one-way DATA to that peer.
    fn owe_one_way_ack(&mut self, p: usize, client_port: u16, ack: AckEntry) {
        let peer = &mut self.peers[p];
        if !peer.owed_listed {
            peer.owed_listed = true;
            self.one_way.owing.push(p);
        }
        let acks = &mut peer.one_way_acks;
        acks.push((client_port, ack));
        if acks.iter().filter(|(q, _)| *q == client_port).count() >= ACKS_PER_PACKET {
            self.send_one_way_acks(p, client_port, None);
        }
    }

    /// Send every ack owed for messages taken on our port `port`, now: the port is
    /// closing, and a runtime stops ticking a closed socket, so the tick that would have
    /// sent them may never come (their senders would hold the messages until they gave
    /// up, not knowing they arrived). Acks owed from other ports wait for the tick.
    pub(super) fn send_one_way_acks_from(&mut self, port: u16) {
        for i in 0..self.one_way.owing.len() {
            let p = self.one_way.owing[i];
            while let Some(client_port) = self.peers.get_mut(p).and_then(|peer| {
                peer.one_way_acks
                    .iter()
                    .find(|(_, a)| a.server_port == port)
                    .map(|&(q, _)| q)
            }) {
                self.send_one_way_acks(p, client_port, Some(port));
            }
        }
    }

    /// An ACK packet with up to [`ACKS_PER_PACKET`] of the acks owed to `p`'s client socket
    /// `client_port` (only those for messages taken on our port `only`, if given).
    fn send_one_way_acks(&mut self, p: usize, client_port: u16, only: Option<u16>) {
        let peer = &mut self.peers[p];
        let mut batch = [AckEntry::default(); ACKS_PER_PACKET];
        let mut n = 0;
        peer.one_way_acks.retain(|&(q, a)| {
            let take = q == client_port
                && only.is_none_or(|port| a.server_port == port)
                && n < ACKS_PER_PACKET;
            if take {
                batch[n] = a;
                n += 1;
            }
            !take
        });
        let dest = SocketAddr::new(peer.addr(), client_port);
        let (Some(first), Ok(acks)) = (batch[..n].first(), Acks::new(&batch[1..n.max(1)])) else {
            return;
        };
        let repr = Repr {
            common: Common {
                sport: first.server_port,
                dport: client_port,
                sender_id: first.client_id | 1,
            },
            body: Body::Ack(acks),
        };
        self.sender.background.push_back(Control {
            dest,
            repr,
            priority: BATCHED_ACK_PRIORITY, // (0: valid whatever num_priorities is)
            local: 0,
        });
    }

    /// An ACK packet from a receiver of our one-way messages (its `sender_id` is odd: the
    /// module's ACKs all come from clients): the message its header names, `sender_id ^ 1`
    /// taken on port `sport`, and those in its body.
    pub(super) fn on_one_way_acks(&mut self, from: IpAddr, c: Common, acks: Acks) {
        let first = AckEntry {
            client_id: c.sender_id ^ 1,
            server_port: c.sport,
        };
        for a in std::iter::once(first).chain(acks.as_slice().iter().copied()) {
            self.one_way_acked(from, a);
        }
    }

    /// `from` acknowledged our one-way message `ack.client_id`, taken on its port
    /// `ack.server_port`: it is complete.
    pub(super) fn one_way_acked(&mut self, from: IpAddr, ack: AckEntry) {
        let Some(h) = self.client_rpcs.get(ack.client_id) else {
            return;
        };
        let r = &self.rpcs[h];
        // (Address and port: an IPv6 link-local destination's scope id is not in `from`.)
        let server = (r.peer_addr.ip(), r.peer_addr.port());
        if !r.one_way || r.held || server != (from, ack.server_port) {
            return;
        }
        self.metrics.one_way_acked += 1;
        self.events.push_back(Event::Delivered {
            port: r.port,
            id: r.id,
            cookie: r.cookie,
            peer: r.peer_addr,
            private: r.private,
        });
        self.free_rpc(h);
    }

    /// A client's RESEND (header `c`) for an RPC we no longer have: if it is a one-way
    /// message we took (its ack must have gone missing), acknowledge it again and return
    /// true. Only ids known to be executed are: at or below a history's floor, an id may
    /// also have died unexecuted, and its sender must then time out, not be told it
    /// arrived.
    pub(super) fn ack_one_way_again(&mut self, from: IpAddr, c: Common) -> bool {
        let Some(i) = self.histories.find((from, c.sport)) else {
            return false;
        };
        let history = &self.histories[i];
        if !(history.one_way && history.executed(c.sender_id)) {
            return false;
        }
        if self.answer_budget(from) {
            let repr = Repr {
                common: Common {
                    sport: c.dport,
                    dport: c.sport,
                    sender_id: c.sender_id | 1,
                },
                body: Body::Ack(Acks::default()),
            };
            let to = SocketAddr::new(from, c.sport);
            self.queue_control(to, self.arrival_local, repr);
        }
        true
    }

    /// The one-way part of a tick: every ack owed goes out; every question not yet
    /// answered is asked again, or after `timeout_ticks` its messages fail.
    pub(super) fn one_way_tick(&mut self) {
        self.send_owed_one_way_acks();
        for p in std::mem::take(&mut self.one_way.asking) {
            self.ask_one_way_again(p);
        }
    }

    /// The end of a receive batch ([`Endpoint::end_batch`]): when none of our data waits
    /// to go, the acks owed go now instead of at the next tick. A sender waiting for one
    /// message's delivery (`deliver` in the runtime) then hears within a round trip
    /// rather than a tick (1.9 ms median for 100 bytes over loopback, against 36 us for
    /// a `call`); a receiver busy sending keeps gathering them, six to a packet or until
    /// the tick. (Drivers that do not bracket batches, such as the simulator, ack at the
    /// tick.)
    pub(super) fn one_way_acks_after_batch(&mut self) {
        let busy = || self.sender.short_queued > 0 || !self.sender.sendable.is_empty();
        if !self.one_way.owing.is_empty() && !busy() {
            self.send_owed_one_way_acks();
        }
    }

    /// Every ack owed, in packets of up to [`ACKS_PER_PACKET`] per client socket.
    fn send_owed_one_way_acks(&mut self) {
        for p in std::mem::take(&mut self.one_way.owing) {
            if let Some(peer) = self.peers.get_mut(p) {
                peer.owed_listed = false;
            }
            while let Some(&(port, _)) = self
                .peers
                .get_mut(p)
                .and_then(|peer| peer.one_way_acks.first())
            {
                self.send_one_way_acks(p, port, None);
            }
            // (A burst from many client sockets of one peer may have left it large.)
            if let Some(peer) = self.peers.get_mut(p) {
                shrink_vec(&mut peer.one_way_acks);
            }
        }
    }

    /// Peer `p`'s unanswered questions: ask again, or give up. A peer not heard from for
    /// `timeout_ticks` since the question (or since last heard, if later) may be down:
    /// its messages fail with [`RpcError::Timeout`]. One still heard from once the
    /// question has waited `timeout_ticks` is alive and ignores it: it does not know the
    /// extension, and they fail with [`RpcError::NotAccepted`]. (Heard from at any time
    /// after the question was not enough: a host that died just after was then said to
    /// refuse, two ticks before it would have been found dead; swarm cases
    /// 7303537875506236710 and 16508091999064752724.)
    fn ask_one_way_again(&mut self, p: usize) {
        let timeout = self.config.timeout_ticks as u64;
        let tick = self.clock.tick;
        let rpcs = &self.rpcs;
        let Some(peer) = self.peers.get_mut(p) else {
            return;
        };
        let (addr, last_heard) = (peer.addr(), peer.last_heard);
        let (mut questions, mut given_up) = (Vec::new(), Vec::new());
        peer.one_way.retain_mut(|(port, agreement)| {
            let Agreement::Asked {
                since,
                port: from,
                waiting,
            } = agreement
            else {
                return true;
            };
            waiting.retain(|&(h, id)| rpcs.get(h).is_some_and(|r| r.id == id && r.held));
            let (from, id) = waiting
                .first()
                .map_or((*from, RpcId(0)), |&(h, id)| (rpcs[h].port, id));
            let gone = tick.saturating_sub(last_heard.max(*since)) >= timeout;
            let ignored = last_heard >= since.saturating_add(timeout);
            if gone || ignored {
                let why = if gone {
                    RpcError::Timeout
                } else {
                    RpcError::NotAccepted
                };
                given_up.extend(waiting.iter().map(|&(h, _)| (h, why)));
                return false;
            }
            questions.push((from, SocketAddr::new(addr, *port), id));
            true
        });
        if !questions.is_empty() {
            self.one_way.asking.push(p);
        }
        for (port, dest, id) in questions {
            self.send_question(port, dest, id);
        }
        for (h, why) in given_up {
            if why == RpcError::Timeout {
                self.metrics.timeouts += 1;
            }
            self.fail(h, why);
        }
    }
}
