//! A session driven by hand: the test plays the peer, frame by frame, to
//! show what a session does with what no honest peer sends (other
//! versions, strangers, malformed, truncated, tampered and forged
//! operations, envelopes out of order).

use std::sync::Arc;
use std::time::Duration;

use super::wire::{
    decode_frame, encode_frame, frame_with, Hello, Message, SyncedOperation, WireOperation,
    UNKNOWN_ORIGIN,
};
use super::*;
use crate::model::{ActionId, ActionType, Branch, OperationWithContext, Ordinal, SyncUnit};

use crate::models::{CounterModel, CreateDocumentInput, ModelRegistry};
use crate::store::{Durability, Paging, SyncBatch};

const WAIT: Duration = Duration::from_secs(20);
const REPAIRS_IN_FLIGHT_FOR_TESTS: usize = super::session::REPAIRS_IN_FLIGHT;

fn reactor(dir: &std::path::Path) -> Arc<Reactor> {
    Arc::new(
        Reactor::builder(dir)
            .durability(Durability::Buffered)
            .registry(ModelRegistry::with_examples())
            .open()
            .expect("open"),
    )
}

/// Operations a real reactor wrote: a counter's creation and `n`
/// increments, in ordinal order.
fn source_operations(n: usize) -> Vec<OperationWithContext> {
    let dir = tempfile::tempdir().expect("dir");
    let source = reactor(dir.path());
    let doc = DocumentId::new("doc").expect("id");
    create_counter(&source, "doc");
    for i in 0..n {
        let add = crate::model::Action::new(
            ActionId::new(format!("add-{i}")).expect("id"),
            ActionType::new("INCREMENT").expect("type"),
            Scope::global(),
            1_000 + i as u64,
            b"1".to_vec(),
        );
        source
            .execute(doc.clone(), Branch::main(), vec![add])
            .expect("submit")
            .written(WAIT)
            .expect("written");
    }
    source
        .store()
        .get_since_ordinal(Ordinal(1), Paging::all())
        .expect("feed")
        .items
}

/// The originator the test's wire operations name.
const PEER_ORIGIN: [u8; 16] = [9; 16];

fn wire(item: &OperationWithContext, ordinal: u64) -> WireOperation {
    WireOperation {
        ordinal,
        bytes: SyncedOperation::of(item).encode(),
        origin: PEER_ORIGIN,
        signature: None,
    }
}

/// The hello of a peer named `peer` that is node `node`, holding nothing of
/// ours, in epoch 0.
fn peer_hello(node: [u8; 16]) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        node,
        name: "peer".into(),
        inbox_cursor: 0,
        inbox_witness: None,
        inbox_epoch: 0,
        last_ordinal: 0,
        seen_yours: true,
    }
}

/// A manager with one remote, `peer`, and the peer's end of its session.
struct Harness {
    _dir: tempfile::TempDir,
    sync: SyncManager,
    session: Option<SessionHandle>,
    peer: InProcessChannel,
}

impl Harness {
    fn new(options: RemoteOptions) -> Self {
        Self::with(SyncOptions::new(), options)
    }

    fn with(sync_options: SyncOptions, options: RemoteOptions) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let sync = SyncManager::open(reactor(dir.path()), sync_options.name("me")).expect("sync");
        sync.add_remote("peer", options).expect("remote");
        let (mine, peer) = in_process_pair();
        let session = Some(sync.attach("peer", mine).expect("attach"));
        Self {
            _dir: dir,
            sync,
            session,
            peer,
        }
    }

    fn recv(&mut self) -> Message {
        let frame = self
            .peer
            .recv(WAIT)
            .expect("open")
            .expect("a frame in time");
        decode_frame(&frame).expect("a good frame")
    }

    /// The next ack, skipping hellos and envelopes.
    fn ack(&mut self) -> (u64, bool) {
        loop {
            if let Message::Ack { cursor, gap, .. } = self.recv() {
                return (cursor, gap);
            }
        }
    }

    fn send(&mut self, message: &Message) {
        self.peer.send(encode_frame(message)).expect("send");
    }

    /// Sends `ops` as the peer's ordinals 1, 2, … in one envelope of
    /// epoch 0.
    fn send_from_start(&mut self, ops: &[OperationWithContext]) {
        self.send(&Message::Envelope {
            first: 1,
            last: ops.len() as u64,
            witness: crate::model::Digest::default(),
            epoch: 0,
            operations: (1..).zip(ops).map(|(o, op)| wire(op, o)).collect(),
        });
    }

    fn hello(&mut self) {
        assert!(matches!(self.recv(), Message::Hello(_)));
        self.send(&Message::Hello(Hello {
            last_ordinal: 1_000,
            ..peer_hello([7; 16])
        }));
    }

    /// Waits until the session has taken the peer's hello (and with it
    /// the node the remote is).
    fn wait_connected(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.sync.remotes().expect("remotes")[0].connected {
            assert!(std::time::Instant::now() < deadline, "never connected");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn value(&self) -> Option<i64> {
        let reactor = self.sync.reactor();
        let token = ConsistencyToken(reactor.store().last_ordinal());
        let doc = reactor
            .view()
            .get(
                &DocumentId::new("doc").expect("id"),
                &crate::view::ViewFilter::default(),
                Some(token),
            )
            .ok()?;
        CounterModel::value(&doc.scopes.get(&Scope::global())?.state)
    }

    fn end(mut self) -> Result<()> {
        let session = self.session.take().expect("running");
        drop(self.peer);
        session.join()
    }
}

#[test]
fn refused_operations_become_dead_letters_with_their_reason_and_the_rest_loads() {
    let ops = source_operations(4);
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    let mut malformed = wire(&ops[1], 2);
    malformed.bytes.extend_from_slice(b"trailing junk");
    let mut truncated = wire(&ops[2], 3);
    truncated.bytes.truncate(truncated.bytes.len() / 2);
    let mut synced = SyncedOperation::of(&ops[3]);
    synced.action.input = b"1000".to_vec(); // content hash kept: tampered
    let tampered = WireOperation {
        ordinal: 4,
        bytes: synced.encode(),
        origin: PEER_ORIGIN,
        signature: None,
    };
    let operations = vec![
        wire(&ops[0], 1),
        malformed,
        truncated,
        tampered,
        wire(&ops[4], 5),
    ];
    h.send(&Message::Envelope {
        first: 1,
        last: 5,
        witness: crate::model::Digest::default(),
        epoch: 0,
        operations,
    });
    assert_eq!(h.ack(), (5, false), "refusals are handled, so acked");
    let letters = h.sync.dead_letters("peer").expect("letters");
    let reasons: Vec<(u64, &str)> = letters
        .iter()
        .map(|l| (l.ordinal, l.reason.split(':').next().unwrap_or("")))
        .collect();
    assert_eq!(
        reasons,
        [(2, "malformed"), (3, "truncated"), (4, "tampered")],
        "{letters:?}"
    );
    assert_eq!(letters[2].document_id.as_deref(), Some("doc"));
    assert_eq!(h.value(), Some(1), "the good increment loaded, no other");
    // The same refused bytes again (a repair, twice): no second letter.
    let mut again = wire(&ops[1], 0);
    again.bytes.extend_from_slice(b"trailing junk");
    for seq in [1, 2] {
        h.send(&Message::Repair {
            seq,
            operations: vec![again.clone()],
        });
        loop {
            if let Message::RepairAck { seq: acked } = h.recv() {
                assert_eq!(acked, seq);
                break;
            }
        }
    }
    assert_eq!(h.sync.dead_letters("peer").expect("letters").len(), 3);
    assert_eq!(
        h.sync
            .document_status("peer", &DocumentId::new("doc").expect("id"))
            .expect("status"),
        DocumentSyncStatus::Error(letters[2].reason.clone())
    );
    h.end().expect("a clean end");
}

#[test]
fn with_trusted_keys_unsigned_and_forged_operations_are_refused() {
    let ops = source_operations(3);
    let peer_key = SigningKey::from_seed_phrase("peer");
    let other_key = SigningKey::from_seed_phrase("someone else");
    let mut h = Harness::new(RemoteOptions::new().trusted_keys([peer_key.public_key()]));
    h.hello();
    let signed = |item: &OperationWithContext, ordinal, key: &SigningKey| WireOperation {
        signature: Some(key.sign(&SyncedOperation::of(item))),
        ..wire(item, ordinal)
    };
    let mut bad_signature = signed(&ops[3], 4, &peer_key);
    bad_signature.signature.as_mut().expect("signed").signature[0] ^= 1;
    h.send(&Message::Envelope {
        first: 1,
        last: 4,
        witness: crate::model::Digest::default(),
        epoch: 0,
        operations: vec![
            signed(&ops[0], 1, &peer_key),
            wire(&ops[1], 2),
            signed(&ops[2], 3, &other_key),
            bad_signature,
        ],
    });
    assert_eq!(h.ack(), (4, false));
    let reasons: Vec<String> = h
        .sync
        .dead_letters("peer")
        .expect("letters")
        .into_iter()
        .map(|l| l.reason)
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with("forged")),
        "{reasons:?}"
    );
    assert!(reasons[0].contains("unsigned"));
    assert!(reasons[1].contains("not trusted"));
    assert!(reasons[2].contains("does not verify"));
    // The creation (signed by the peer's key) loaded; nothing else did.
    let doc = SyncUnit::new(
        DocumentId::new("doc").expect("id"),
        Scope::document(),
        Branch::main(),
    );
    assert!(h.sync.reactor().store().head(&doc).expect("head").is_some());
    assert_eq!(h.value().unwrap_or(0), 0);
    h.end().expect("a clean end");
}

#[test]
fn an_envelope_out_of_order_waits_unacked_until_the_gap_fills() {
    let ops = source_operations(3);
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    let envelope = |first: u64, last: u64| Message::Envelope {
        first,
        last,
        witness: crate::model::Digest::default(),
        epoch: 0,
        operations: (first..=last)
            .map(|o| wire(&ops[o as usize - 1], o))
            .collect(),
    };
    h.send(&envelope(3, 4));
    assert_eq!(h.ack(), (0, true), "held, not acked");
    assert_eq!(h.value(), None, "nothing loaded out of order");
    h.send(&envelope(1, 2));
    // Each load acks as it completes: 2, then the buffered one's 4.
    assert_eq!(h.ack(), (2, false));
    assert_eq!(h.ack(), (4, false), "the buffered envelope followed on");
    assert_eq!(h.value(), Some(3));
    h.send(&envelope(1, 2));
    assert_eq!(
        h.ack(),
        (4, false),
        "a repeat is acked again, changes nothing"
    );
    assert_eq!(h.value(), Some(3));
    h.end().expect("a clean end");
}

#[test]
fn another_protocol_version_is_refused_with_a_clear_error() {
    let mut h = Harness::new(RemoteOptions::new());
    assert!(matches!(h.recv(), Message::Hello(_)));
    h.peer
        .send(frame_with(PROTOCOL_VERSION + 1, b"a hello from the future"))
        .expect("send");
    let Message::Refuse { reason } = h.recv() else {
        panic!("expected a refusal");
    };
    assert!(
        reason.contains(&format!("protocol {}", PROTOCOL_VERSION + 1)),
        "{reason}"
    );
    let error = h.end().expect_err("refused");
    assert!(
        matches!(&error, Error::SyncRefused { reason } if reason.contains("protocol")),
        "{error}"
    );
}

#[test]
fn another_database_under_a_known_remote_name_is_refused() {
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    h.wait_connected(); // node [7; 16] is now the remote's
    let (mine, peer) = in_process_pair();
    drop(h.session.take());
    h.session = Some(h.sync.attach("peer", mine).expect("attach"));
    h.peer = peer;
    assert!(matches!(h.recv(), Message::Hello(_)));
    h.send(&Message::Hello(peer_hello([8; 16])));
    let error = h.end().expect_err("refused");
    assert!(
        error.to_string().contains("remove and add the remote"),
        "{error}"
    );
}

#[test]
fn a_stranger_is_refused_unless_new_remotes_are_accepted() {
    let dir = tempfile::tempdir().expect("dir");
    let sync =
        SyncManager::open(reactor(dir.path()), SyncOptions::new().name("server")).expect("sync");
    let stranger = |sync: &SyncManager| {
        let (mine, mut peer) = in_process_pair();
        let session = sync.accept(mine);
        let hello = Message::Hello(Hello {
            name: "stranger".into(),
            seen_yours: false,
            ..peer_hello([9; 16])
        });
        peer.send(encode_frame(&hello)).expect("send");
        let reply = decode_frame(&peer.recv(WAIT).expect("open").expect("reply")).expect("frame");
        drop(peer);
        (reply, session.join())
    };
    let (reply, ended) = stranger(&sync);
    assert!(matches!(reply, Message::Refuse { reason } if reason.contains("not a remote")));
    assert!(matches!(ended, Err(Error::SyncRefused { .. })));
    drop(sync);

    let sync = SyncManager::open(
        reactor(tempfile::tempdir().expect("dir").path()),
        SyncOptions::new().name("server").accept_new_remotes(true),
    )
    .expect("sync");
    let (reply, ended) = stranger(&sync);
    assert!(matches!(reply, Message::Hello(h) if h.name == "server" && h.seen_yours));
    ended.expect("a clean end");
    let names: Vec<String> = sync
        .remotes()
        .expect("remotes")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["stranger"]);
}

#[test]
fn removing_a_remote_forgets_its_cursors_letters_buffers_and_echo_records_but_not_originators() {
    let ops = source_operations(3);
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    let mut bad = wire(&ops[1], 2);
    bad.bytes.clear();
    h.send(&Message::Envelope {
        first: 1,
        last: 2,
        witness: crate::model::Digest::default(),
        epoch: 0,
        operations: vec![wire(&ops[0], 1), bad],
    });
    assert_eq!(h.ack(), (2, false));
    h.send(&Message::Envelope {
        first: 4,
        last: 4,
        witness: crate::model::Digest::default(),
        epoch: 0,
        operations: vec![wire(&ops[3], 4)],
    });
    assert_eq!(h.ack(), (2, true));
    let state = h.sync.shared.state.clone();
    let creation = &ops[0].operation;
    assert!(state
        .came_from(&creation.id, &creation.content_hash, "peer")
        .expect("read"));
    h.sync.remove_remote("peer").expect("remove");
    assert!(h.sync.remotes().expect("remotes").is_empty());
    assert_eq!(state.cursors("peer").expect("cursors"), (0, 0));
    assert!(state.dead_letters("peer").expect("letters").is_empty());
    assert!(state.buffered("peer", 10).expect("buffered").is_empty());
    assert!(!state
        .came_from(&creation.id, &creation.content_hash, "peer")
        .expect("read"));
    // Who originated it is still known: the audit counts by it.
    assert_eq!(
        state
            .originators(&[(creation.id, creation.content_hash)])
            .expect("read"),
        [Some(PEER_ORIGIN)]
    );
    assert!(matches!(
        h.sync.remove_remote("peer"),
        Err(Error::RemoteUnknown { .. })
    ));
    h.end().expect("the session ended with its remote");
}

#[test]
fn repairs_go_a_few_at_a_time_and_wait_for_acks() {
    let ops = source_operations(4);
    let dir = tempfile::tempdir().expect("dir");
    let options = SyncOptions::new().name("me").envelope_ordinals(1);
    let sync = SyncManager::open(reactor(dir.path()), options).expect("sync");
    sync.add_remote("peer", RemoteOptions::new())
        .expect("remote");
    let (mine, peer) = in_process_pair();
    let mut h = Harness {
        _dir: dir,
        sync,
        session: None,
        peer,
    };
    h.session = Some(h.sync.attach("peer", mine).expect("attach"));
    h.hello();
    h.send(&Message::Envelope {
        first: 1,
        last: 5,
        witness: crate::model::Digest::default(),
        epoch: 0,
        operations: (0..5).map(|o| wire(&ops[o], o as u64 + 1)).collect(),
    });
    assert_eq!(h.ack(), (5, false));
    // Our own envelopes of what we loaded (nothing goes back): ack them.
    loop {
        match h.recv() {
            Message::Envelope { last, .. } => {
                h.send(&Message::Ack {
                    epoch: 0,
                    cursor: last,
                    gap: false,
                });
                if last == 5 {
                    break;
                }
            }
            _ => continue,
        }
    }
    // A peer claiming to hold nothing: five one-operation repairs are due.
    h.send(&Message::Digests { streams: vec![] });
    let mut repairs = Vec::new();
    while let Ok(Some(frame)) = h.peer.recv(Duration::from_millis(300)) {
        if let Ok(Message::Repair { seq, .. }) = decode_frame(&frame) {
            repairs.push(seq);
        }
    }
    assert_eq!(repairs.len(), REPAIRS_IN_FLIGHT_FOR_TESTS, "{repairs:?}");
    h.send(&Message::RepairAck { seq: repairs[0] });
    let next = loop {
        let frame = h.peer.recv(WAIT).expect("open").expect("the next repair");
        if let Ok(Message::Repair { seq, .. }) = decode_frame(&frame) {
            break seq;
        }
    };
    assert!(!repairs.contains(&next));
    h.end().expect("a clean end");
}

#[test]
fn a_newer_session_of_a_remote_takes_it_over_and_the_older_ends() {
    let ops = source_operations(1);
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    let (mine, peer) = in_process_pair();
    let newer = h.sync.attach("peer", mine).expect("attach");
    let older = h.session.take().expect("running");
    let _older_peer = std::mem::replace(&mut h.peer, peer);
    h.session = Some(newer);
    // The newer one claims the remote once its peer's hello checks out.
    h.hello();
    older
        .join()
        .expect("the older session ends cleanly by itself");
    owns_and_loads(h, &ops);
}

#[test]
fn a_refused_newer_connection_leaves_the_working_session_alone() {
    let ops = source_operations(1);
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    // Once the session has taken the peer's hello (and with it the node
    // the remote is)...
    h.wait_connected();
    // ...another database dials in under the same name: refused at its
    // hello, before it claims the remote.
    let (mine, mut intruder) = in_process_pair();
    let refused = h.sync.attach("peer", mine).expect("attach");
    let frame = intruder.recv(WAIT).expect("open").expect("a hello");
    assert!(matches!(decode_frame(&frame), Ok(Message::Hello(_))));
    intruder
        .send(encode_frame(&Message::Hello(peer_hello([8; 16]))))
        .expect("send");
    let error = refused.join().expect_err("refused");
    assert!(
        error.to_string().contains("remove and add the remote"),
        "{error}"
    );
    // The session that was working still owns the remote and loads.
    owns_and_loads(h, &ops);
}

/// The session owns the remote: it loads `ops` (a creation and an
/// increment) and acks them, and the remote shows connected.
fn owns_and_loads(mut h: Harness, ops: &[OperationWithContext]) {
    h.send_from_start(&ops[..2]);
    assert_eq!(h.ack(), (2, false));
    assert_eq!(h.value(), Some(1));
    assert!(h.sync.remotes().expect("remotes")[0].connected);
    h.end().expect("a clean end");
}

/// Creates counter `doc` on `reactor`.
fn create_counter(reactor: &Reactor, doc: &str) {
    let create = CreateDocumentInput::new(CounterModel::document_type(), 1, doc);
    reactor
        .create(DocumentId::new(doc).expect("id"), create)
        .expect("submit")
        .written(WAIT)
        .expect("created");
}

/// The documents of an envelope's operations.
fn documents_of(operations: &[WireOperation]) -> Vec<String> {
    operations
        .iter()
        .map(|w| {
            SyncedOperation::decode(&w.bytes)
                .expect("a good operation")
                .document_id
                .to_string()
        })
        .collect()
}

/// A session whose remote's filter passes only document `a`, with counters
/// `a` and `b` written; our last ordinal.
fn narrow_to_a_with_b_held_back() -> (Harness, u64) {
    let narrow = RemoteFilter::all().documents([DocumentId::new("a").expect("id")]);
    let h = Harness::new(RemoteOptions::new().filter(narrow));
    create_counter(h.sync.reactor(), "a");
    create_counter(h.sync.reactor(), "b");
    let last = h.sync.reactor().store().last_ordinal().get();
    (h, last)
}

#[test]
fn a_widened_filter_sends_everything_anew_and_acks_of_the_old_epoch_count_for_nothing() {
    let (mut h, last) = narrow_to_a_with_b_held_back();
    h.hello();
    // Epoch 0: the whole range goes, with only `a` in it. Not acked yet.
    let mut sent = Vec::new();
    loop {
        if let Message::Envelope {
            epoch: 0,
            last: end,
            operations,
            ..
        } = h.recv()
        {
            sent.extend(documents_of(&operations));
            if end == last {
                break;
            }
        }
    }
    assert!(
        sent.iter().all(|d| d == "a") && !sent.is_empty(),
        "{sent:?}"
    );
    // Widen: the session starts a new epoch and asks the peer to rewind.
    h.sync
        .add_remote("peer", RemoteOptions::new())
        .expect("widen");
    let epoch = loop {
        if let Message::Rewind { epoch } = h.recv() {
            break epoch;
        }
    };
    assert!(epoch > 0);
    // An ack of epoch 0, in flight across the change, covers the range it
    // held back from `b`: it must not count.
    h.send(&Message::Ack {
        epoch: 0,
        cursor: last,
        gap: false,
    });
    // The peer had not rewound yet: what came of the new epoch meanwhile
    // it dropped, so it must come again.
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(Some(_)) = h.peer.recv(Duration::from_millis(10)) {}
    h.send(&Message::Rewound { epoch });
    let mut resent = Vec::new();
    loop {
        match h.recv() {
            Message::Envelope {
                epoch: e,
                last: end,
                operations,
                ..
            } if e == epoch => {
                resent.extend(documents_of(&operations));
                if end == last {
                    break;
                }
            }
            Message::Envelope { epoch: e, .. } => panic!("an envelope of epoch {e}"),
            _ => continue,
        }
    }
    assert!(resent.iter().any(|d| d == "b"), "{resent:?}");
    assert!(resent.iter().any(|d| d == "a"), "{resent:?}");
    h.end().expect("a clean end");
}

#[test]
fn a_filter_widened_before_the_peers_hello_still_sends_what_it_held_back() {
    let (mut h, last) = narrow_to_a_with_b_held_back();
    let witness = h
        .sync
        .reactor()
        .store()
        .get_since_ordinal(Ordinal(last), Paging::first(1))
        .expect("feed")
        .items[0]
        .operation
        .hash;
    // The session waits for the peer's hello when the filter widens.
    assert!(matches!(h.recv(), Message::Hello(_)));
    h.sync
        .add_remote("peer", RemoteOptions::new())
        .expect("widen");
    std::thread::sleep(Duration::from_millis(50));
    // A peer that holds everything up to `last` of the narrow epoch (its
    // witness matches): only the new epoch can bring it `b`.
    h.send(&Message::Hello(Hello {
        inbox_cursor: last,
        inbox_witness: Some(witness),
        ..peer_hello([7; 16])
    }));
    let epoch = loop {
        if let Message::Rewind { epoch } = h.recv() {
            break epoch;
        }
    };
    h.send(&Message::Rewound { epoch });
    let mut resent = Vec::new();
    loop {
        if let Message::Envelope {
            epoch: e,
            last: end,
            operations,
            ..
        } = h.recv()
        {
            if e == epoch {
                resent.extend(documents_of(&operations));
                if end == last {
                    break;
                }
            }
        }
    }
    assert!(resent.iter().any(|d| d == "b"), "{resent:?}");
    h.end().expect("a clean end");
}

/// Envelopes the session sends until one covers `last`, acking each: the
/// operations they carry, by action id, and the ranges they cover.
fn sent_through(h: &mut Harness, last: u64) -> (Vec<String>, Vec<(u64, u64)>) {
    let (mut actions, mut ranges) = (Vec::new(), Vec::new());
    loop {
        if let Message::Envelope {
            epoch,
            first,
            last: end,
            operations,
            ..
        } = h.recv()
        {
            ranges.push((first, end));
            for w in &operations {
                let op = SyncedOperation::decode(&w.bytes).expect("a good operation");
                actions.push(op.into_loadable().operation.action.id.to_string());
            }
            h.send(&Message::Ack {
                epoch,
                cursor: end,
                gap: false,
            });
            if end >= last {
                return (actions, ranges);
            }
        }
    }
}

/// What the peer sent never goes back to it; what we write goes once,
/// whether the outbox takes it from the bus (a local execute, announced)
/// or from the store (loads, and what was written before the session).
/// Resubmitting the peer's action here writes nothing and sends nothing.
#[test]
fn what_the_peer_sent_is_not_echoed_and_what_we_write_goes_once() {
    let ops = source_operations(2);
    let mut h = Harness::new(RemoteOptions::new());
    h.hello();
    h.send_from_start(&ops);
    assert_eq!(h.ack(), (3, false));
    let reactor = h.sync.reactor().clone();
    let doc = DocumentId::new("doc").expect("id");
    let increment = |id: &str, at: u64| {
        crate::model::Action::new(
            ActionId::new(id).expect("id"),
            ActionType::new("INCREMENT").expect("type"),
            Scope::global(),
            at,
            b"1".to_vec(),
        )
    };
    // The peer's own action again: already applied, nothing is written.
    let again = ops[1].operation.action.clone();
    reactor
        .execute(doc.clone(), Branch::main(), vec![again])
        .expect("submit")
        .written(WAIT)
        .expect("written");
    assert_eq!(reactor.store().last_ordinal().get(), 3);
    for i in 0..3 {
        reactor
            .execute(
                doc.clone(),
                Branch::main(),
                vec![increment(&format!("mine-{i}"), 5_000 + i)],
            )
            .expect("submit")
            .written(WAIT)
            .expect("written");
    }
    let (actions, ranges) = sent_through(&mut h, 6);
    assert_eq!(
        actions,
        ["mine-0", "mine-1", "mine-2"],
        "covered: {ranges:?}"
    );
    let mut covered = 0;
    for (first, last) in ranges {
        assert_eq!(first, covered + 1, "contiguous ranges");
        covered = last;
    }
    assert_eq!(h.value(), Some(5));
    h.end().expect("a clean end");
}

/// An operation we wrote that the peer sent us back (through a third
/// node) before our outbox got to it is not sent to the peer: being
/// announced as ours does not skip the echo check.
#[test]
fn our_operation_the_peer_sent_back_before_we_sent_it_is_not_echoed() {
    let mut h = Harness::with(SyncOptions::new().window_ordinals(1), RemoteOptions::new());
    h.hello();
    let reactor = h.sync.reactor().clone();
    create_counter(&reactor, "doc");
    // Ordinal 1 goes and is not acked: the window of one is full.
    let (first, last) = loop {
        if let Message::Envelope { first, last, .. } = h.recv() {
            break (first, last);
        }
    };
    assert_eq!((first, last), (1, 1));
    let add = crate::model::Action::new(
        ActionId::new("x").expect("id"),
        ActionType::new("INCREMENT").expect("type"),
        Scope::global(),
        5_000,
        b"1".to_vec(),
    );
    let doc = DocumentId::new("doc").expect("id");
    reactor
        .execute(doc, Branch::main(), vec![add])
        .expect("submit")
        .written(WAIT)
        .expect("written");
    // Let the session take the announcement while its window is full.
    std::thread::sleep(Duration::from_millis(50));
    let ours = reactor
        .store()
        .get_since_ordinal(Ordinal(1), Paging::all())
        .expect("feed")
        .items;
    assert_eq!(ours.len(), 2);
    // The peer sends both back as its own ordinals 1 and 2.
    h.send_from_start(&ours);
    assert_eq!(h.ack(), (2, false));
    // Now the window opens: ordinal 2 is covered, and not sent.
    h.send(&Message::Ack {
        epoch: 0,
        cursor: 1,
        gap: false,
    });
    loop {
        if let Message::Envelope {
            first,
            last,
            operations,
            ..
        } = h.recv()
        {
            assert_eq!((first, last), (2, 2));
            assert!(operations.is_empty(), "echoed {operations:?}");
            break;
        }
    }
    h.end().expect("a clean end");
}

#[test]
fn a_known_originator_beats_an_unknown_one_whichever_remote_sent_it() {
    let ops = source_operations(1);
    let dir = tempfile::tempdir().expect("dir");
    let sync = SyncManager::open(reactor(dir.path()), SyncOptions::new()).expect("sync");
    let state = &sync.shared.state;
    let op = &ops[0].operation;
    let sent = (op.id, op.content_hash);
    assert_eq!(state.originators(&[sent]).expect("read"), [None]);
    let mut batch = SyncBatch::default();
    // "a" sorts first and does not know; "b" does.
    state.put_origin(&mut batch, (&op.id, &op.content_hash), "a", &UNKNOWN_ORIGIN);
    state.put_origin(&mut batch, (&op.id, &op.content_hash), "b", &PEER_ORIGIN);
    state.write(batch).expect("write");
    // Among others not sent, read with one iterator.
    let never_sent = (crate::model::OperationId([1; 16]), op.content_hash);
    assert_eq!(
        state
            .originators(&[never_sent, sent, never_sent])
            .expect("read"),
        [None, Some(PEER_ORIGIN), None]
    );
}
