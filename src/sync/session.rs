//! One session: the protocol over one channel with one remote, on its own
//! thread. Hello (versions, identities, where to resume), then envelopes
//! out from the acked cursor and acks back, envelopes in, loaded in order
//! (later ones buffered), and digests now and then. Nothing a channel does
//! to frames (loss, repeats, reordering, damage) loses an operation: only
//! durably loaded ranges are acked, and the sender resends the rest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::channel::{Channel, ChannelClosed};
use super::state::RemoteRecord;
use super::wire::{self, FrameError, Hello, Message, WireOperation, PROTOCOL_VERSION};
use super::{check_name, digest, inbox, outbox, Shared, RELAY_REMOTE_PREFIX};
use crate::bus::{FeedBuffer, Subscription};
use crate::error::{Error, Result};
use crate::model::Digest;
use crate::store::SyncBatch;

/// How long a session waits for a frame before looking at its outbox and
/// timers again: the latency of a new local write reaching the channel.
const POLL: Duration = Duration::from_millis(2);
/// Repairs sent and not yet acked, at most. With the outbox window, this
/// bounds what a session sends that its peer has not read: two sessions
/// blocked sending to each other cannot fill a bounded channel.
pub(crate) const REPAIRS_IN_FLIGHT: usize = 4;
/// Envelopes being loaded at once: the next is checked and submitted
/// while the reactor writes the one before.
const LOADS_IN_FLIGHT: usize = 3;
/// Bus events a session's subscription queues, and announced operations
/// it keeps past what it sent (a session behind by more reads the store):
/// a few windows' worth, and no more than the queue holds.
const ANNOUNCED_EVENTS: usize = 4_096;
const ANNOUNCED_OPS: usize = 4_096;
/// How often the acked outbox cursor is written (losing it only costs a
/// resend).
const PERSIST_EVERY: Duration = Duration::from_millis(100);

/// Runs a session until the channel closes (`Ok`), it is stopped (`Ok`),
/// or it fails or is refused (`Err`).
pub(crate) fn run(
    shared: &Shared,
    remote: Option<String>,
    channel: Box<dyn Channel>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut session = Session::new(shared, channel);
    let result = match remote {
        Some(name) => session.bind(&name).and_then(|()| session.run(stop)),
        None => session.run(stop),
    };
    let result = match result {
        Err(Error::Transport { reason }) if reason == CLOSED => Ok(()),
        other => other,
    };
    session.finish(&result);
    result
}

const CLOSED: &str = "channel closed";

impl From<ChannelClosed> for Error {
    fn from(_: ChannelClosed) -> Self {
        Error::Transport {
            reason: CLOSED.into(),
        }
    }
}

struct Session<'a> {
    shared: &'a Shared,
    /// This session's number (see `Shared::owner`).
    id: u64,
    channel: Box<dyn Channel>,
    /// The remote, once known (at once when attached, from its hello when
    /// accepted).
    remote: Option<(String, RemoteRecord)>,
    /// Our ordinals sent / acked by the remote.
    sent: u64,
    /// The highest ordinal ever sent: operations below it are resends,
    /// not counted again.
    high: u64,
    acked: u64,
    acked_written: u64,
    acked_written_at: Instant,
    last_ack_progress: Instant,
    last_rewind: Instant,
    /// The remote's ordinals we have loaded.
    inbox: u64,
    /// The witness of `inbox` (the remote's chain hash at that ordinal).
    inbox_witness: Option<Digest>,
    /// The epoch of our inbox for the remote (its rewinds).
    inbox_epoch: u64,
    /// Our outbox epoch toward the remote (our rewinds).
    epoch: u64,
    /// Whether this session has claimed its remote (after the hello
    /// checks): only the newest claim runs.
    claimed: bool,
    peer_hello: bool,
    peer_saw_ours: bool,
    last_hello: Option<Instant>,
    last_digests: Option<Instant>,
    /// Repairs waiting to go, and those sent and not yet acked.
    repairs: VecDeque<Vec<WireOperation>>,
    repairs_in_flight: Vec<(u64, Instant)>,
    next_repair: u64,
    /// The options generation the remote's record was read at.
    generation: u64,
    /// When we last asked the peer to rewind, until it says it did.
    rewind_pending: Option<Instant>,
    /// Loads of envelopes on their way, oldest first.
    in_flight: VecDeque<InFlight>,
    /// What the bus announces of our writes, kept past `sent` so the
    /// outbox sends it without reading it back from the store. Subscribed
    /// once the peer's hello came, and drained at every turn, so a
    /// connection that never gets that far, or a peer that stops acking,
    /// holds no announcements.
    announcements: Option<Subscription>,
    announced: FeedBuffer,
}

/// An envelope being loaded: the inbox cursor (and witness) it sets once
/// written, and the sync-store changes to write with that cursor.
struct InFlight {
    load: inbox::LoadInFlight,
    last: u64,
    witness: Digest,
    batch: SyncBatch,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, channel: Box<dyn Channel>) -> Self {
        let now = Instant::now();
        Self {
            shared,
            id: shared.next_session.fetch_add(1, Ordering::AcqRel),
            channel,
            remote: None,
            sent: 0,
            high: 0,
            acked: 0,
            acked_written: 0,
            acked_written_at: now,
            last_ack_progress: now,
            last_rewind: now,
            inbox: 0,
            inbox_witness: None,
            inbox_epoch: 0,
            epoch: 0,
            claimed: false,
            peer_hello: false,
            peer_saw_ours: false,
            last_hello: None,
            last_digests: None,
            repairs: VecDeque::new(),
            repairs_in_flight: Vec::new(),
            next_repair: 0,
            generation: 0,
            rewind_pending: None,
            in_flight: VecDeque::new(),
            announcements: None,
            announced: FeedBuffer::new(ANNOUNCED_OPS),
        }
    }

    /// Binds the session to a known remote and loads its cursors.
    fn bind(&mut self, name: &str) -> Result<()> {
        self.generation = self.shared.options_generation.load(Ordering::Acquire);
        let record = self
            .shared
            .state
            .remote(name)?
            .ok_or_else(|| Error::RemoteUnknown { name: name.into() })?;
        let (acked, inbox) = self.shared.state.cursors(name)?;
        (self.acked, self.sent, self.acked_written, self.inbox) = (acked, acked, acked, inbox);
        self.inbox_witness = self.shared.state.inbox_witness(name)?;
        self.inbox_epoch = self.shared.state.inbox_epoch(name)?;
        self.epoch = self.shared.state.outbox_epoch(name)?;
        self.remote = Some((name.to_owned(), record));
        *self.shared.bound.lock().entry(name.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Makes this the session of its remote (an older one ends at its next
    /// turn) unless a newer one (attached later) already claimed it. Only
    /// after the peer's hello passed every check: a refused connection
    /// never displaces a working one. Ownership moves only forward in
    /// attach order, so an older session whose hello comes late cannot
    /// take the remote back.
    ///
    /// Envelopes buffered by an earlier session may be of a history the
    /// peer no longer has: they are dropped under the same lock an older
    /// session buffers under, so none of its lands after the drop.
    fn claim(&mut self) -> Result<()> {
        let mut owners = self.shared.owner.lock();
        let owner = owners.entry(self.name().to_owned()).or_insert(self.id);
        *owner = (*owner).max(self.id);
        self.claimed = true;
        if *owner == self.id {
            let mut batch = SyncBatch::default();
            self.shared.state.drop_buffered(&mut batch, self.name());
            self.shared.state.write(batch)?;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        self.remote.as_ref().map_or("", |(name, _)| name)
    }

    fn send(&mut self, message: &Message) -> Result<()> {
        self.channel.send(wire::encode_frame(message))?;
        Ok(())
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        let resend = self.shared.options.resend_after;
        loop {
            if stop.load(Ordering::Acquire) || self.shared.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.remote.is_some() {
                if !self.shared.live.lock().contains_key(self.name()) {
                    return Ok(()); // the remote was removed
                }
                if self.superseded() {
                    return Ok(()); // a newer session took the remote over
                }
                self.reload_options()?;
                let hello_due = self.last_hello.is_none_or(|at| at.elapsed() >= resend);
                if !(self.peer_hello && self.peer_saw_ours) && hello_due {
                    self.send_hello()?;
                }
            }
            if self.peer_hello {
                self.take_announcements();
                self.complete_loads()?;
                self.pump()?;
                self.pump_repairs()?;
                self.timers()?;
            }
            if let Some(frame) = self.channel.recv(POLL)? {
                self.handle(frame)?;
            }
        }
    }

    /// Takes the remote's options again when `add_remote` changed any.
    fn reload_options(&mut self) -> Result<()> {
        let generation = self.shared.options_generation.load(Ordering::Acquire);
        if generation == self.generation {
            return Ok(());
        }
        self.generation = generation;
        let Some((name, record)) = &mut self.remote else {
            return Ok(());
        };
        let Some(fresh) = self.shared.state.remote(name)? else {
            return Ok(()); // removed: the loop ends the session
        };
        *record = fresh;
        let epoch = self.shared.state.outbox_epoch(name)?;
        if epoch != self.epoch {
            // The filter changed (`add_remote` started a new epoch): what
            // the old one held back lies under the acked cursor. Taken
            // before the peer's hello too, so the hello is judged against
            // the new epoch.
            self.epoch = epoch;
            if self.peer_hello {
                self.start_epoch()?;
            }
        }
        Ok(())
    }

    /// Starts a new outbox epoch toward the remote (`bump`) and
    /// stores it, under the record lock.
    fn bump_epoch(&mut self) -> Result<()> {
        let _record = self.shared.record_lock.lock();
        let stored = self.shared.state.outbox_epoch(self.name())?;
        self.epoch = super::state::next_epoch(stored.max(self.epoch));
        let mut batch = SyncBatch::default();
        self.shared
            .state
            .put_outbox_epoch(&mut batch, self.name(), self.epoch);
        self.shared.state.write(batch)
    }

    /// Sends everything again from our first ordinal in the current epoch,
    /// and has the peer rewind its inbox to it (`Rewind`, repeated until
    /// `Rewound` of this epoch). Acks of other epochs are ignored, so none
    /// from before counts.
    fn start_epoch(&mut self) -> Result<()> {
        self.acked = 0;
        self.sent = 0;
        self.write_acked()?;
        let name = self.name().to_owned();
        self.shared.update(&name, |l| l.acked = 0);
        self.rewind_pending = Some(Instant::now());
        let epoch = self.epoch;
        self.send(&Message::Rewind { epoch })
    }

    fn send_hello(&mut self) -> Result<()> {
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            node: self.shared.node.node,
            name: self.shared.node.name.clone(),
            inbox_cursor: self.inbox,
            inbox_witness: self.inbox_witness,
            inbox_epoch: self.inbox_epoch,
            last_ordinal: self.shared.reactor.store().last_ordinal().get(),
            seen_yours: self.peer_hello,
        };
        self.last_hello = Some(Instant::now());
        self.send(&Message::Hello(hello))
    }

    /// Sends envelopes while the window has room and ordinals remain.
    fn pump(&mut self) -> Result<()> {
        let window = self.shared.options.window_ordinals;
        while self.sent - self.acked < window {
            self.take_announcements();
            let Some((name, record)) = &self.remote else {
                return Ok(());
            };
            let filter = &record.options.filter;
            let Some(out) =
                outbox::next_envelope(self.shared, name, filter, self.sent, &mut self.announced)?
            else {
                return Ok(());
            };
            if self.sent == self.acked {
                // Nothing was in flight: the resend timer starts now, not
                // at the last ack (maybe long ago).
                self.last_ack_progress = Instant::now();
            }
            let count = out
                .operations
                .iter()
                .filter(|op| op.ordinal > self.high)
                .count() as u64;
            self.sent = out.last;
            self.high = self.high.max(out.last);
            let epoch = self.epoch;
            self.send(&Message::Envelope {
                epoch,
                first: out.first,
                last: out.last,
                witness: out.witness,
                operations: out.operations,
            })?;
            let name = self.name().to_owned();
            self.shared.update(&name, |l| l.sent += count);
        }
        Ok(())
    }

    /// Moves what the bus announced into the feed buffer (subscribing at
    /// the first call).
    fn take_announcements(&mut self) {
        let bus = self.shared.reactor.bus();
        let announcements = self
            .announcements
            .get_or_insert_with(|| bus.subscribe(ANNOUNCED_EVENTS));
        while let Some(delivery) = announcements.try_recv_delivery() {
            self.announced.offer(&delivery, self.sent);
        }
    }

    /// Sends waiting repairs while fewer than `REPAIRS_IN_FLIGHT` are
    /// unacked. One unacked for long is taken as lost (the next digest
    /// round finds whatever it carried).
    fn pump_repairs(&mut self) -> Result<()> {
        let lost_after = self.shared.options.resend_after * 4;
        self.repairs_in_flight
            .retain(|(_, at)| at.elapsed() < lost_after);
        while self.repairs_in_flight.len() < REPAIRS_IN_FLIGHT {
            let Some(operations) = self.repairs.pop_front() else {
                break;
            };
            let seq = self.next_repair;
            self.next_repair += 1;
            self.repairs_in_flight.push((seq, Instant::now()));
            self.send(&Message::Repair { seq, operations })?;
        }
        Ok(())
    }

    /// Resends after silence, writes the acked cursor now and then, and
    /// starts the anti-entropy pass when it is due and nothing is in
    /// flight.
    fn timers(&mut self) -> Result<()> {
        let options = &self.shared.options;
        if self
            .rewind_pending
            .is_some_and(|at| at.elapsed() >= options.resend_after)
        {
            self.rewind_pending = Some(Instant::now());
            let epoch = self.epoch;
            self.send(&Message::Rewind { epoch })?;
        }
        let options = &self.shared.options;
        if self.sent > self.acked && self.last_ack_progress.elapsed() >= options.resend_after {
            self.sent = self.acked; // go back: resend everything unacked
            self.last_ack_progress = Instant::now();
        }
        if self.acked != self.acked_written && self.acked_written_at.elapsed() >= PERSIST_EVERY {
            self.write_acked()?;
        }
        let due = options
            .anti_entropy_every
            .is_some_and(|every| self.last_digests.is_none_or(|at| at.elapsed() >= every));
        if due && self.caught_up() {
            self.last_digests = Some(Instant::now());
            let Some((_, record)) = &self.remote else {
                return Ok(());
            };
            let streams = digest::digests(self.shared, &record.options.filter)?;
            self.send(&Message::Digests { streams })?;
        }
        Ok(())
    }

    /// Whether the remote has acked every committed ordinal of ours.
    fn caught_up(&self) -> bool {
        self.acked >= self.shared.reactor.store().last_ordinal().get()
    }

    fn write_acked(&mut self) -> Result<()> {
        if self.superseded() {
            return Ok(());
        }
        self.shared
            .state
            .set_outbox_cursor(self.name(), self.acked)?;
        self.acked_written = self.acked;
        self.acked_written_at = Instant::now();
        Ok(())
    }

    fn handle(&mut self, frame: Vec<u8>) -> Result<()> {
        let message = match wire::decode_frame(&frame) {
            Ok(message) => message,
            Err(FrameError::Version(theirs)) => {
                let reason = format!(
                    "the peer speaks sync protocol {theirs}, this build speaks {PROTOCOL_VERSION}"
                );
                return self.refuse(reason);
            }
            // Damaged in transit (or nonsense): not acked, so it comes
            // again with the resend.
            Err(FrameError::Damaged(_) | FrameError::Malformed(_)) => return Ok(()),
        };
        if !matches!(message, Message::Hello(_)) && self.peer_hello {
            // The peer only sends these after our hello reached it.
            self.peer_saw_ours = true;
        }
        match message {
            Message::Hello(hello) => self.on_hello(hello),
            Message::Refuse { reason } => Err(Error::SyncRefused {
                reason: format!("the peer refused the session: {reason}"),
            }),
            Message::Envelope {
                epoch,
                first,
                last,
                witness,
                operations,
            } if self.peer_hello && epoch == self.inbox_epoch && first <= last => {
                self.on_envelope(first, (last, witness), operations, frame)
            }
            // Of another epoch (before a rewind, or after one we have not
            // seen yet): dropped, unacked; it comes again if it matters.
            Message::Envelope { .. } => Ok(()),
            Message::Rewind { epoch } if self.peer_hello => {
                if epoch > self.inbox_epoch {
                    self.rewind(epoch)?;
                }
                if epoch == self.inbox_epoch {
                    self.send(&Message::Rewound { epoch })?;
                }
                Ok(()) // an older epoch: stale
            }
            Message::Rewind { .. } => Ok(()),
            Message::Rewound { epoch } => {
                if epoch == self.epoch {
                    self.rewind_pending = None;
                }
                Ok(())
            }
            Message::Ack { epoch, cursor, gap } => {
                if epoch == self.epoch && !self.superseded() {
                    self.on_ack(cursor, gap);
                }
                Ok(())
            }
            Message::Digests { streams } if self.peer_hello => {
                // Only with nothing of ours in flight (else the peer's
                // digests lag behind what it is about to load), and no
                // repair of an earlier round still going.
                let busy = !self.repairs.is_empty() || !self.repairs_in_flight.is_empty();
                if busy || !self.caught_up() || self.sent != self.acked {
                    return Ok(());
                }
                let Some((_, record)) = &self.remote else {
                    return Ok(());
                };
                let chunk = self.shared.options.envelope_ordinals;
                self.repairs.extend(digest::repairs(
                    self.shared,
                    &record.options.filter,
                    &streams,
                    chunk,
                )?);
                Ok(())
            }
            Message::Repair { seq, operations } if self.peer_hello => {
                self.load_repair(operations)?;
                self.send(&Message::RepairAck { seq })
            }
            Message::RepairAck { seq } => {
                self.repairs_in_flight.retain(|(s, _)| *s != seq);
                Ok(())
            }
            Message::Digests { .. } | Message::Repair { .. } => Ok(()),
        }
    }

    fn refuse(&mut self, reason: String) -> Result<()> {
        // Best effort: the peer may be gone or unable to read us.
        let _ = self.send(&Message::Refuse {
            reason: reason.clone(),
        });
        Err(Error::SyncRefused { reason })
    }

    fn on_hello(&mut self, hello: Hello) -> Result<()> {
        if hello.protocol != PROTOCOL_VERSION {
            return self.refuse(format!(
                "the peer speaks sync protocol {}, this build speaks {PROTOCOL_VERSION}",
                hello.protocol
            ));
        }
        if self.remote.is_none() {
            if check_name(&hello.name).is_err() || hello.name.starts_with(RELAY_REMOTE_PREFIX) {
                return self.refuse(format!("{:?} is not a remote name", hello.name));
            }
            if self.shared.state.remote(&hello.name)?.is_none() {
                if !self.shared.options.accept_new_remotes {
                    return self.refuse(format!(
                        "{} is not a remote of {}",
                        hello.name, self.shared.node.name
                    ));
                }
                self.shared
                    .state
                    .put_remote(&hello.name, &RemoteRecord::default())?;
                self.shared.insert_remote(&hello.name);
            }
            self.bind(&hello.name)?;
        }
        let Some((name, record)) = &mut self.remote else {
            return Ok(());
        };
        match record.peer_node {
            Some(node) if node != hello.node => {
                let reason = format!(
                    "remote {name} was node {}, this peer is node {}: remove and add the remote \
                     again to sync with a new database",
                    super::state::hex(&node),
                    super::state::hex(&hello.node)
                );
                return self.refuse(reason);
            }
            Some(_) => {}
            None => {
                let _record = self.shared.record_lock.lock();
                record.peer_node = Some(hello.node);
                if let Some(mut stored) = self.shared.state.remote(name)? {
                    stored.peer_node = Some(hello.node);
                    self.shared.state.put_remote(name, &stored)?;
                }
            }
        }
        let committed = self.shared.reactor.store().last_ordinal().get();
        if !self.peer_hello {
            self.peer_hello = true;
            self.claim()?;
            if self.superseded() {
                return Ok(()); // a newer session has the remote: this one ends
            }
            // The epoch as stored now (a filter changed while we waited
            // for this hello, maybe under an older session).
            self.epoch = self.shared.state.outbox_epoch(self.name())?;
            // Resume where the peer says it is, even behind our cursor (it
            // was restored from a backup): it knows what it holds.
            self.acked = hello.inbox_cursor.min(committed);
            self.sent = self.acked;
            if hello.inbox_epoch != self.epoch {
                // Our filter changed since the peer last confirmed an
                // epoch, or the peer saw an epoch of ours we do not
                // remember (we were restored from a backup): a new epoch
                // above both makes it take everything anew.
                self.epoch = self.epoch.max(hello.inbox_epoch);
                self.bump_epoch()?;
                self.start_epoch()?;
            } else if hello.inbox_cursor > 0
                && outbox::witness_at(self.shared, hello.inbox_cursor)? != hello.inbox_witness
            {
                // The peer's cursor names an ordinal of ours that is not
                // the operation it loaded there: we went back and wrote
                // again. It must take everything anew.
                self.bump_epoch()?;
                self.start_epoch()?;
            }
            // Stored only now: before the epoch was settled, the peer's
            // cursor might have been one of an epoch that no longer counts.
            self.write_acked()?;
            let (acked, inbox, name) = (self.acked, self.inbox, self.name().to_owned());
            self.shared.update(&name, |l| {
                l.connected = true;
                l.acked = acked;
                l.inbox = inbox;
                l.last_error = None;
            });
        } else if hello.inbox_epoch == self.epoch {
            self.on_ack(hello.inbox_cursor, false);
        }
        self.peer_saw_ours |= hello.seen_yours;
        if !hello.seen_yours {
            self.send_hello()?;
        }
        Ok(())
    }

    fn on_ack(&mut self, cursor: u64, gap: bool) {
        let cursor = cursor.min(self.shared.reactor.store().last_ordinal().get());
        if cursor > self.acked {
            self.acked = cursor;
            self.sent = self.sent.max(cursor);
            self.last_ack_progress = Instant::now();
            let name = self.name().to_owned();
            self.shared.update(&name, |l| l.acked = cursor);
        }
        if gap && cursor < self.acked {
            // The peer misses what it once acked: it lost its state (or
            // rewound on a repeated request). Its cursor is the truth.
            self.acked = cursor;
            self.sent = cursor;
            let name = self.name().to_owned();
            self.shared.update(&name, |l| l.acked = cursor);
        }
        // The peer holds a later envelope and misses an earlier one: resend
        // now rather than at the timeout (at most a few times a timeout).
        let soon = self.shared.options.resend_after / 4;
        if gap && self.sent > self.acked && self.last_rewind.elapsed() >= soon {
            self.sent = self.acked;
            self.last_rewind = Instant::now();
        }
    }

    /// Starts the inbox again from 0 in the peer's new `epoch`: the
    /// ordinals we counted as loaded are not (all) what it would send now.
    /// Loading is idempotent, so taking everything again costs time, never
    /// correctness.
    fn rewind(&mut self, epoch: u64) -> Result<()> {
        // Loads on their way still land (loading is idempotent); their
        // cursors are of the old epoch, so they are not written.
        self.in_flight.clear();
        let name = self.name().to_owned();
        self.inbox = 0;
        self.inbox_witness = None;
        self.inbox_epoch = epoch;
        let mut batch = SyncBatch::default();
        self.shared
            .state
            .put_inbox_cursor(&mut batch, &name, 0, None, epoch);
        self.shared.state.drop_buffered(&mut batch, &name);
        self.shared.state.write(batch)?;
        self.shared.update(&name, |l| l.inbox = 0);
        Ok(())
    }

    /// The end of what is loaded or being loaded: the inbox cursor the
    /// newest load in flight will set.
    fn received_end(&self) -> u64 {
        self.in_flight.back().map_or(self.inbox, |f| f.last)
    }

    fn on_envelope(
        &mut self,
        first: u64,
        (last, witness): (u64, Digest),
        operations: Vec<WireOperation>,
        frame: Vec<u8>,
    ) -> Result<()> {
        let name = self.name().to_owned();
        let end = self.received_end();
        if last <= end {
            // A repeat: acked now, or when the load holding it completes.
            return if self.in_flight.is_empty() {
                self.ack(false)
            } else {
                Ok(())
            };
        }
        if first > end.saturating_add(1) {
            // Out of order: it waits (unacked), unless the buffer is full;
            // either way the resend brings what is missing.
            let limit = self.shared.options.buffered_envelopes;
            // Under the owner lock: a newer session's claim cannot drop
            // the buffer between our check and our write.
            let owners = self.shared.owner.lock();
            if owners.get(&name) == Some(&self.id)
                && self.shared.state.buffered_count(&name, limit)? < limit
            {
                self.shared.state.buffer_envelope(&name, first, frame)?;
            }
            drop(owners);
            return self.ack(true);
        }
        self.start_load(operations, (last, witness), SyncBatch::default())?;
        // Buffered envelopes that now follow on, lowest first, one read
        // at a time.
        while let Some((first, frame)) = self.shared.state.buffered(&name, 1)?.pop() {
            let end = self.received_end();
            if first > end.saturating_add(1) {
                break; // still a gap before it
            }
            let mut batch = SyncBatch::default();
            self.shared.state.unbuffer(&mut batch, &name, first);
            match wire::decode_frame(&frame) {
                Ok(Message::Envelope {
                    epoch,
                    last,
                    witness,
                    operations,
                    ..
                }) if epoch == self.inbox_epoch && last > end => {
                    self.start_load(operations, (last, witness), batch)?
                }
                _ => self.shared.state.write(batch)?, // covered already
            }
        }
        Ok(())
    }

    fn ack(&mut self, gap: bool) -> Result<()> {
        let cursor = self.inbox;
        let epoch = self.inbox_epoch;
        self.send(&Message::Ack { epoch, cursor, gap })
    }

    /// Starts loading an envelope's operations past what is loaded or
    /// being loaded; `batch` is written with the cursor it sets. At most
    /// `LOADS_IN_FLIGHT` go at once: more waits for the oldest.
    fn start_load(
        &mut self,
        operations: Vec<WireOperation>,
        (last, witness): (u64, Digest),
        batch: SyncBatch,
    ) -> Result<()> {
        let Some((name, record)) = &self.remote else {
            return Ok(());
        };
        let end = self.received_end();
        let operations = operations
            .into_iter()
            .filter(|op| op.ordinal > end)
            .collect();
        let load = inbox::start(self.shared, name, &record.options, operations)?;
        self.in_flight.push_back(InFlight {
            load,
            last,
            witness,
            batch,
        });
        while self.in_flight.len() > LOADS_IN_FLIGHT {
            self.complete_oldest()?;
        }
        Ok(())
    }

    /// Completes the loads in flight that are done, oldest first.
    fn complete_loads(&mut self) -> Result<()> {
        while self.in_flight.front().is_some_and(|f| f.load.is_done()) {
            self.complete_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest load, then writes its dead letters and the
    /// inbox cursor it sets in one batch, and acks.
    fn complete_oldest(&mut self) -> Result<()> {
        let Some(InFlight {
            load,
            last,
            witness,
            mut batch,
        }) = self.in_flight.pop_front()
        else {
            return Ok(());
        };
        let name = self.name().to_owned();
        let loaded = load.finish(self.shared)?;
        if self.superseded() {
            return Ok(()); // the newer session owns the cursors now
        }
        self.shared
            .state
            .put_dead_letters(&mut batch, &name, &loaded.dead_letters)?;
        self.shared.state.put_inbox_cursor(
            &mut batch,
            &name,
            last,
            Some(witness),
            self.inbox_epoch,
        );
        self.shared.state.write(batch)?;
        self.inbox = last;
        self.inbox_witness = Some(witness);
        let letters = loaded.dead_letters.len() as u64;
        self.shared.update(&name, |l| {
            l.inbox = last;
            l.received += loaded.operations;
            l.dead_letters += letters;
        });
        self.ack(false)
    }

    /// Loads a repair (outside any cursor) and writes its dead letters.
    fn load_repair(&mut self, operations: Vec<WireOperation>) -> Result<()> {
        let Some((name, record)) = &self.remote else {
            return Ok(());
        };
        let name = name.clone();
        let loaded = inbox::load(self.shared, &name, &record.options, operations)?;
        if self.superseded() {
            return Ok(());
        }
        let mut batch = SyncBatch::default();
        self.shared
            .state
            .put_dead_letters(&mut batch, &name, &loaded.dead_letters)?;
        self.shared.state.write(batch)?;
        let letters = loaded.dead_letters.len() as u64;
        self.shared.update(&name, |l| {
            l.received += loaded.operations;
            l.dead_letters += letters;
        });
        Ok(())
    }

    /// Whether this is the newest session of its remote.
    fn owns(&self) -> bool {
        self.shared.owner.lock().get(self.name()) == Some(&self.id)
    }

    /// Whether a newer session took the remote over: this one then writes
    /// nothing more of the remote's state and ends.
    fn superseded(&self) -> bool {
        self.claimed && !self.owns()
    }

    fn finish(&mut self, result: &Result<()>) {
        if self.remote.is_none() {
            return;
        }
        let name = self.name().to_owned();
        let removed = !self.shared.live.lock().contains_key(&name);
        let owner = {
            let owners = self.shared.owner.lock();
            match owners.get(&name) {
                Some(id) => *id == self.id,
                None => !self.claimed,
            }
        };
        if self.acked != self.acked_written && !removed && owner {
            let _ = self.write_acked();
        }
        if let Some(count) = self.shared.bound.lock().get_mut(&name) {
            *count = count.saturating_sub(1);
        }
        if owner {
            let error = result.as_ref().err().map(ToString::to_string);
            self.shared.update(&name, |l| {
                l.connected = false;
                l.last_error = error;
            });
        }
    }
}
