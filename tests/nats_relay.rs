//! The JetStream relay against a real 3-node NATS cluster on loopback
//! (`common::nats_cluster`; needs `nats-server`). The property: reactors
//! that each write to shared documents and to their own, relaying through
//! the cluster while a NATS node is killed and restarted and a relay is
//! stopped and started again, end holding the same set of operations per
//! document, with the same state and state hash; a reactor that was away
//! catches up from its cursor; one away past the stream's retention is
//! told to bootstrap instead of reading on.
//!
//! The cluster tests run one at a time (`CLUSTER` lock): three servers and
//! three reactors each are all two cores take.
#![cfg(feature = "nats")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::docs::stream_ops;
use common::nats_cluster::{Access, Cluster, TOKEN};
use common::reactor::*;
use reactordb::{
    AuditReport, ConsistencyToken, Error, NatsOptions, NatsRelay, NatsTransport, Reactor, Scope,
    Standing, SyncManager, SyncOptions, ViewFilter,
};

static CLUSTER: Mutex<()> = Mutex::new(());

/// What a cluster test starts with: the lock (one at a time), a fresh
/// cluster, a transport.
fn start() -> (
    std::sync::MutexGuard<'static, ()>,
    Cluster,
    Arc<NatsTransport>,
) {
    let one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start();
    (one, cluster, NatsTransport::new().expect("transport"))
}

struct Node {
    reactor: Arc<Reactor>,
    sync: Arc<SyncManager>,
    relay: Option<NatsRelay>,
}

fn options(cluster: &Cluster) -> NatsOptions {
    NatsOptions::new(cluster.urls()).token(TOKEN)
}

/// Options for a stream of the test's own, its name in lower case the
/// subjects' prefix (a stream's subjects may not overlap another's).
fn on_stream(cluster: &Cluster, stream: &str) -> NatsOptions {
    options(cluster)
        .stream(stream)
        .subject_prefix(stream.to_lowercase())
}

fn open_node(dir: &std::path::Path, name: &str) -> Node {
    let reactor = Arc::new(open(dir, 2));
    let sync =
        Arc::new(SyncManager::open(reactor.clone(), SyncOptions::new().name(name)).expect("sync"));
    Node {
        reactor,
        sync,
        relay: None,
    }
}

fn relay(node: &mut Node, transport: &Arc<NatsTransport>, options: NatsOptions) {
    node.relay = Some(transport.relay(node.sync.clone(), options).expect("relay"));
}

/// Waits up to `secs` seconds for `done`; panics saying `what` did not
/// happen.
fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops each node's relay, which must end cleanly.
fn stop_all<const N: usize>(nodes: [&mut Node; N]) {
    for node in nodes {
        node.relay
            .take()
            .expect("running")
            .stop()
            .expect("stopped cleanly");
    }
}

/// Per document: op id → content hash, of the synced scopes.
type Sets = BTreeMap<String, BTreeMap<String, String>>;

fn sets(reactor: &Reactor, docs: &[String]) -> Sets {
    let mut out = Sets::new();
    for doc in docs {
        let set = out.entry(doc.clone()).or_default();
        for scope in [Scope::document(), Scope::global()] {
            for op in stream_ops(reactor.store(), doc, &scope) {
                set.insert(op.id.to_string(), op.content_hash.to_string());
            }
        }
    }
    out
}

fn state(reactor: &Reactor, doc: &str) -> Option<(Vec<u8>, reactordb::Digest)> {
    let token = ConsistencyToken(reactor.store().last_ordinal());
    let got = reactor
        .view()
        .get(&id(doc), &ViewFilter::default(), Some(token))
        .ok()?;
    got.scopes
        .get(&Scope::global())
        .map(|s| (s.state.clone(), s.state_hash))
}

/// Waits until every replica holds the same sets and states.
fn wait_converged(nodes: &[Node], docs: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let first = sets(&nodes[0].reactor, docs);
        let same_sets = nodes[1..].iter().all(|n| sets(&n.reactor, docs) == first);
        if same_sets {
            let states: Vec<_> = docs.iter().map(|d| state(&nodes[0].reactor, d)).collect();
            let same_states = nodes[1..].iter().all(|n| {
                docs.iter()
                    .map(|d| state(&n.reactor, d))
                    .eq(states.iter().cloned())
            });
            if same_states && states.iter().all(Option::is_some) {
                return;
            }
        }
        if Instant::now() > deadline {
            for (i, node) in nodes.iter().enumerate() {
                eprintln!("replica {i}: {:?}", node.sync.remotes());
            }
            let sizes: Vec<Vec<usize>> = nodes
                .iter()
                .map(|n| sets(&n.reactor, docs).values().map(BTreeMap::len).collect())
                .collect();
            panic!("the replicas never converged: operations per document {sizes:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Distinct operations in a document's `global` stream (a merge appends
/// copies of operations it reorders).
fn count(reactor: &Reactor, doc: &str) -> usize {
    stream_ops(reactor.store(), doc, &Scope::global())
        .iter()
        .map(|op| op.id.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn three_reactors_converge_through_the_cluster_while_a_node_and_a_relay_restart() {
    let (_one, mut cluster, transport) = start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| open_node(dirs[i].path(), &format!("r{i}")))
        .collect();
    for node in &mut nodes {
        relay(node, &transport, options(&cluster));
    }
    let shared: Vec<String> = (0..3).map(|d| format!("shared{d}")).collect();
    let own: Vec<String> = (0..3).map(|r| format!("own-r{r}")).collect();
    // Shared documents are created once, on r0, and heard of by the rest.
    for doc in &shared {
        create_counter(&nodes[0].reactor, doc);
    }
    for (r, doc) in own.iter().enumerate() {
        create_counter(&nodes[r].reactor, doc);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let created =
        |n: &Node, d: &String| !stream_ops(n.reactor.store(), d, &Scope::document()).is_empty();
    while !nodes.iter().all(|n| shared.iter().all(|d| created(n, d))) {
        if Instant::now() > deadline {
            for (i, node) in nodes.iter().enumerate() {
                eprintln!("replica {i}: {:?}", node.sync.remotes());
            }
            panic!("the shared documents never arrived");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 0..30 {
        if round == 10 {
            cluster.kill(1); // a NATS node dies mid-run...
        }
        if round == 15 {
            cluster.restart(1); // ...and comes back
        }
        if round == 12 {
            // A relay stops (its reactor keeps writing) and starts again
            // from its cursors.
            nodes[2]
                .relay
                .take()
                .expect("running")
                .stop()
                .expect("stopped cleanly");
        }
        if round == 20 {
            relay(&mut nodes[2], &transport, options(&cluster));
        }
        for (r, node) in nodes.iter().enumerate() {
            for doc in shared.iter().chain([&own[r]]) {
                let job = node
                    .reactor
                    .execute(
                        id(doc),
                        main(),
                        vec![increment(&format!("{doc}-r{r}-{round}"))],
                    )
                    .expect("submit");
                written(&job);
            }
        }
    }
    cluster.wait_ready();
    let docs: Vec<String> = shared.iter().chain(&own).cloned().collect();
    wait_converged(&nodes, &docs);
    // Every increment of every replica is in every replica's set.
    for doc in &shared {
        assert_eq!(count(&nodes[0].reactor, doc), 90, "{doc}");
    }
    for doc in &own {
        assert_eq!(count(&nodes[0].reactor, doc), 30, "{doc}");
    }
    // Each operation is published by the replica that wrote it, never
    // echoed back by the others (a republish after a failed publish may
    // add a few; an echo would add twice the total).
    let distinct: usize = sets(&nodes[0].reactor, &docs)
        .values()
        .map(BTreeMap::len)
        .sum();
    let mut sent = 0;
    for node in nodes.iter_mut() {
        node.relay
            .take()
            .expect("running")
            .stop()
            .expect("stopped cleanly");
        let remote = &node.sync.remotes().expect("remotes")[0];
        assert_eq!(remote.name, "nats:REACTORDB");
        assert_eq!(remote.dead_letters, 0);
        sent += remote.sent_operations as usize;
    }
    assert!(
        sent >= distinct && sent * 2 < distinct * 3,
        "published {sent} for {distinct} operations"
    );
}

#[test]
fn a_reactor_away_past_the_retention_is_told_to_bootstrap() {
    let (_one, cluster, transport) = start();
    // No audit records here (the automatic bootstrap below uses them):
    // creating their bucket while a's consumer opens can hold it up past
    // the 1-second retention.
    let short = || {
        options(&cluster)
            .stream("SHORT")
            .max_age(Some(Duration::from_secs(1)))
            .audit_interval(None)
    };
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut a = open_node(da.path(), "a");
    relay(&mut a, &transport, short());
    // a's consumer is open and reading (it read back its own first
    // message) before the test relies on the retention: on a loaded
    // machine opening it has taken longer than the second a message
    // lives, and a was then behind the retention too.
    create_counter(&a.reactor, "warm-up");
    wait_until("a's consumer read its own message", 30, || {
        a.sync
            .remotes()
            .expect("remotes")
            .iter()
            .any(|r| r.name == "nats:SHORT" && r.inbox_cursor >= 1)
    });
    create_counter(&a.reactor, "doc");
    let token = ConsistencyToken(a.reactor.store().last_ordinal());
    a.sync
        .wait_synced("nats:SHORT", token, Duration::from_secs(30))
        .expect("published");
    // What `a` published expires before `b` first reads the stream.
    std::thread::sleep(Duration::from_millis(2500));
    let mut b = open_node(db.path(), "b");
    relay(&mut b, &transport, short());
    wait_until("the relay read on past the gap", 30, || {
        b.relay.as_ref().expect("running").is_finished()
    });
    match b.relay.take().expect("ended").stop() {
        Err(Error::SyncBehindRetention {
            cursor: 0,
            first_available,
            ..
        }) => {
            assert!(first_available > 1)
        }
        other => panic!("expected SyncBehindRetention, got {other:?}"),
    }
    assert!(
        stream_ops(b.reactor.store(), "doc", &Scope::document()).is_empty(),
        "nothing was half-loaded"
    );
    // b bootstraps from a over point-to-point sync, then relays again,
    // reading on from what the stream holds.
    a.sync
        .add_remote("b", reactordb::RemoteOptions::new())
        .expect("remote");
    b.sync
        .add_remote("a", reactordb::RemoteOptions::new())
        .expect("remote");
    let (x, y) = reactordb::in_process_pair();
    let sessions = (
        a.sync.attach("b", x).expect("attach"),
        b.sync.attach("a", y).expect("attach"),
    );
    wait_until("the bootstrap never came", 30, || {
        !stream_ops(b.reactor.store(), "doc", &Scope::document()).is_empty()
    });
    drop(sessions);
    relay(&mut b, &transport, short().bootstrapped(true));
    written(
        &a.reactor
            .execute(id("doc"), main(), vec![increment("after")])
            .expect("submit"),
    );
    wait_until("the relay did not read on after the bootstrap", 30, || {
        count(&b.reactor, "doc") == 1
    });
    b.relay
        .take()
        .expect("running")
        .stop()
        .expect("stopped cleanly");
    // One relay per stream and reactor; removing the remote ends it.
    match transport.relay(a.sync.clone(), short()) {
        Err(Error::SyncRefused { .. }) => {}
        other => panic!("a second relay must be refused: {:?}", other.map(|_| ())),
    }
    // The relay's remote is no peer's: a session under its name is refused.
    let (x, _y) = reactordb::in_process_pair();
    assert!(matches!(
        a.sync.attach("nats:SHORT", x),
        Err(Error::SyncRefused { .. })
    ));
    a.sync.remove_remote("nats:SHORT").expect("removed");
    wait_until("the relay outlived its remote", 5, || {
        a.relay.as_ref().expect("held").is_finished()
    });
    a.relay.take().expect("held").stop().expect("ended cleanly");
    assert!(a
        .sync
        .remotes()
        .expect("remotes")
        .iter()
        .all(|r| r.name != "nats:SHORT"));
}

const CHILD_ENV: &str = "REACTORDB_NATS_CHILD_DIR";
/// Rounds each child process writes (one increment per shared document
/// and one on its own document per round).
const CHILD_ROUNDS: usize = 40;
const SHARED: [&str; 3] = ["shared0", "shared1", "shared2"];
/// The child that loads some partitions only: the shared documents' and
/// its own (the others' own documents are in other partitions).
const PARTITIONED: &str = "r1";

/// The documents a child loads: every one, but for [`PARTITIONED`].
fn child_loads(name: &str, doc: &str) -> bool {
    name != PARTITIONED || SHARED.contains(&doc) || doc == format!("own-{name}")
}

/// A child's relay options: [`PARTITIONED`] serves its documents'
/// partitions only.
fn child_options(name: &str, options: NatsOptions) -> NatsOptions {
    if name != PARTITIONED {
        return options;
    }
    let own = format!("own-{name}");
    options.partitions(
        SHARED
            .iter()
            .copied()
            .chain([own.as_str()])
            .map(|d| NatsOptions::partition_of(&id(d))),
    )
}

/// A reactor process: relays through the cluster named in its directory,
/// writes its rounds (reporting each write once written), then keeps
/// relaying until it is killed.
#[test]
fn nats_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run normally: nothing to do
    };
    let dir = std::path::Path::new(&dir);
    let name = std::fs::read_to_string(dir.join("name")).expect("name");
    let urls: Vec<String> = std::fs::read_to_string(dir.join("urls"))
        .expect("urls")
        .lines()
        .map(String::from)
        .collect();
    let transport = NatsTransport::new().expect("transport");
    let mut node = open_node(&dir.join("db"), &name);
    relay(
        &mut node,
        &transport,
        child_options(&name, NatsOptions::new(urls).token(TOKEN)),
    );
    let created = |doc: &str| !stream_ops(node.reactor.store(), doc, &Scope::document()).is_empty();
    if name == "r0" {
        for doc in SHARED.into_iter().filter(|d| !created(d)) {
            create_counter(&node.reactor, doc);
        }
    }
    let own = format!("own-{name}");
    if !created(&own) {
        create_counter(&node.reactor, &own);
    }
    wait_until("the shared documents never arrived", 60, || {
        SHARED.iter().all(|d| created(d))
    });
    let pid = std::process::id();
    let mut out = std::io::stdout().lock();
    for round in 0..CHILD_ROUNDS {
        for doc in SHARED.iter().copied().chain([own.as_str()]) {
            let aid = format!("{doc}-{name}-p{pid}-{round}");
            let job = node
                .reactor
                .execute(id(doc), main(), vec![increment(&aid)])
                .expect("submit");
            written(&job);
            writeln!(out, "ack {doc} {aid}").expect("stdout");
            out.flush().expect("flush");
        }
    }
    writeln!(out, "done").expect("stdout");
    out.flush().expect("flush");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs its closure when dropped during a panic (a failed test's context).
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
}

/// Reads a child's reports until it says `done`, or, with `stop_after`,
/// until that many writes.
fn follow(
    stdout: std::process::ChildStdout,
    acked: &Mutex<BTreeSet<(String, String)>>,
    stop_after: Option<usize>,
) {
    let mut count = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if line == "done" {
            return;
        }
        if let Some(rest) = line.strip_prefix("ack ") {
            let (doc, aid) = rest.split_once(' ').expect("doc and action");
            acked
                .lock()
                .unwrap()
                .insert((doc.to_owned(), aid.to_owned()));
            count += 1;
            if stop_after.is_some_and(|k| count >= k) {
                return;
            }
        }
    }
    panic!("a child ended before it was done");
}

#[test]
fn reactor_processes_killed_and_a_nats_node_killed_still_converge() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    for (i, dir) in dirs.iter().enumerate() {
        std::fs::write(dir.path().join("name"), format!("r{i}")).expect("name");
        std::fs::write(dir.path().join("urls"), cluster.urls().join("\n")).expect("urls");
    }
    let acked = Mutex::new(BTreeSet::new());
    // Each child's standard error goes to a file in its directory, shown
    // when the test fails.
    let spawn = |i: usize| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dirs[i].path().join("stderr"))
            .expect("log");
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "nats_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dirs[i].path())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn child")
    };
    let logs: Vec<_> = dirs.iter().map(|d| d.path().join("stderr")).collect();
    let show_logs = || {
        for log in &logs {
            eprintln!(
                "== {}\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    };
    let _logs_on_failure = OnDrop(Some(show_logs));
    let mut children: Vec<_> = (0..3).map(spawn).collect();
    let outs: Vec<_> = children
        .iter_mut()
        .map(|c| c.stdout.take().expect("piped"))
        .collect();
    std::thread::scope(|scope| {
        let acked = &acked;
        let mut outs = outs.into_iter();
        let (o0, o1, o2) = (outs.next(), outs.next(), outs.next());
        scope.spawn(move || follow(o0.expect("r0"), acked, None));
        scope.spawn(move || follow(o2.expect("r2"), acked, None));
        // r1 is SIGKILLed a third of the way through its writes; a NATS
        // node dies meanwhile and comes back.
        follow(o1.expect("r1"), acked, Some(CHILD_ROUNDS * 4 / 3));
        children[1].kill().expect("SIGKILL");
        children[1].wait().expect("reap");
        cluster.kill(2);
        children[1] = spawn(1);
        std::thread::sleep(Duration::from_millis(500));
        cluster.restart(2);
        let again = children[1].stdout.take().expect("piped");
        follow(again, acked, None);
    });
    // Every child wrote its rounds; stop them all and let the replicas
    // finish through relays in this process, from their stored cursors.
    for child in &mut children {
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    cluster.wait_ready();
    let transport = NatsTransport::new().expect("transport");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| open_node(&dirs[i].path().join("db"), &format!("r{i}")))
        .collect();
    // (A child may have been killed before the stream acknowledged any of
    // its writes, e.g. one started while a NATS node was down: its outbox
    // cursor is then 0 and its writes go now.)
    for (i, node) in nodes.iter_mut().enumerate() {
        relay(
            node,
            &transport,
            child_options(&format!("r{i}"), options(&cluster)),
        );
    }
    let docs: Vec<String> = SHARED
        .iter()
        .map(|d| d.to_string())
        .chain((0..3).map(|r| format!("own-r{r}")))
        .collect();
    // The documents every replica loads converge on all three; the others'
    // own documents on the replicas that load them.
    let (everywhere, elsewhere): (Vec<String>, Vec<String>) = docs
        .iter()
        .cloned()
        .partition(|d| child_loads(PARTITIONED, d));
    wait_converged(&nodes, &everywhere);
    let loading: Vec<&Node> = (0..3)
        .filter(|i| format!("r{i}") != PARTITIONED)
        .map(|i| &nodes[i])
        .collect();
    wait_until("the other documents never converged", 90, || {
        sets(&loading[0].reactor, &elsewhere) == sets(&loading[1].reactor, &elsewhere)
    });
    // Every write a child reported is on every replica that loads its
    // document, and none elsewhere.
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("r{i}");
        let held: BTreeSet<(String, String)> = docs
            .iter()
            .flat_map(|doc| {
                stream_ops(node.reactor.store(), doc, &Scope::global())
                    .into_iter()
                    .map(move |op| (doc.clone(), op.action.id.to_string()))
            })
            .collect();
        let acked = acked.lock().unwrap();
        let missing: Vec<_> = acked
            .iter()
            .filter(|(doc, _)| child_loads(&name, doc))
            .filter(|write| !held.contains(write))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: acknowledged writes missing: {missing:?}"
        );
        assert!(
            held.iter().all(|(doc, _)| child_loads(&name, doc)),
            "{name} loaded a document of a partition it does not serve"
        );
    }
    for node in &mut nodes {
        node.relay
            .take()
            .expect("running")
            .stop()
            .expect("stopped cleanly");
    }
}

/// `reactordb sync --nats` in two OS processes: what one database holds
/// reaches the other through the cluster, with the live line of peer
/// sync; a wrong token ends the command with a message saying so.
#[cfg(feature = "cli")]
#[test]
fn the_cli_relays_two_databases_through_the_cluster() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    {
        let a = open(da.path(), 2);
        create_counter(&a, "doc");
        for n in 0..5 {
            written(
                &a.execute(id("doc"), main(), vec![increment(&format!("a{n}"))])
                    .expect("submit"),
            );
        }
    }
    let urls = cluster.urls().join(",");
    let run = |dir: &std::path::Path, token: &str| {
        spawn_following(
            std::process::Command::new(env!("CARGO_BIN_EXE_reactordb")).args([
                "--db",
                dir.to_str().expect("utf-8"),
                "sync",
                "--nats",
                &urls,
                "--token",
                token,
            ]),
        )
    };
    let wait_for = |lines: &std::sync::mpsc::Receiver<String>, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no such line in time"),
            }
        }
    };
    let (mut a, a_lines) = run(da.path(), TOKEN);
    let (mut b, b_lines) = run(db.path(), TOKEN);
    // The creation and five increments (the `document` scope's header
    // operations included: at least six).
    wait_for(&a_lines, &|l| {
        l.starts_with("nats:REACTORDB: connected") && l.contains("sent 6")
    });
    let line = wait_for(&b_lines, &|l| {
        l.starts_with("nats:REACTORDB: connected") && l.contains("received 6,")
    });
    assert!(line.contains("dead letters 0"), "{line}");
    assert!(line.contains("sent 0,"), "b echoed what it loaded: {line}");
    for child in [&mut a, &mut b] {
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let b = open(db.path(), 2);
    assert_eq!(count(&b, "doc"), 5);
    drop(b);

    let (mut refused, _) = run(db.path(), "wrong");
    let status = refused.wait().expect("exits");
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("refused"), "{stderr}");
}

/// Spawns `command` with its output piped; returns the child and its
/// standard output's lines, as a thread reads them.
fn spawn_following(
    command: &mut std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn reactordb");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// A client of the test's own: its runtime, and a JetStream context on it.
fn test_client(cluster: &Cluster) -> (tokio::runtime::Runtime, async_nats::jetstream::Context) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = runtime
        .block_on(
            async_nats::ConnectOptions::new()
                .token(TOKEN.into())
                .connect(cluster.urls()[0].as_str()),
        )
        .expect("connect");
    (runtime, async_nats::jetstream::new(client))
}

/// Deletes a stream.
fn delete_stream(cluster: &Cluster, stream: &str) {
    let (runtime, js) = test_client(cluster);
    runtime.block_on(js.delete_stream(stream)).expect("deleted");
}

/// How many messages `stream` holds now.
fn stream_messages(cluster: &Cluster, stream: &str) -> u64 {
    let (runtime, js) = test_client(cluster);
    runtime.block_on(async {
        let mut stream = js.get_stream(stream).await.expect("the stream");
        stream.info().await.expect("its info").state.messages
    })
}

/// Executes `INCREMENT`s on `doc`, one job each, awaited until written,
/// their action ids `{tag}{n}` for each `n` of `range`.
fn write_increments(reactor: &Reactor, doc: &str, tag: &str, range: std::ops::Range<usize>) {
    for n in range {
        let job = reactor.execute(id(doc), main(), vec![increment(&format!("{tag}{n}"))]);
        written(&job.expect("submit"));
    }
}

/// Waits until `reactor` holds `n` distinct operations in `doc`'s
/// `global` stream.
fn wait_count(reactor: &Reactor, doc: &str, n: usize) {
    wait_until(&format!("{doc}: never {n} operations"), 60, || {
        count(reactor, doc) == n
    });
}

#[test]
fn a_stream_deleted_and_created_again_gets_everything_again() {
    let (_one, cluster, transport) = start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut a = open_node(dirs[0].path(), "a");
    let mut b = open_node(dirs[1].path(), "b");
    relay(&mut a, &transport, options(&cluster));
    relay(&mut b, &transport, options(&cluster));
    create_counter(&a.reactor, "doc");
    write_increments(&a.reactor, "doc", "a", 0..5);
    wait_count(&b.reactor, "doc", 5);
    stop_all([&mut a, &mut b]);
    // The stream is gone (an operator deleted it, or the relays now point
    // at another cluster): its successor must be filled again, by a's
    // relay, from a history its cursors had counted as published.
    delete_stream(&cluster, "REACTORDB");
    // b comes back first and fills the new stream past a's old inbox
    // cursor: only the stream's identity tells a that its cursors count
    // in another stream (a's cursor is not beyond the new stream's end).
    relay(&mut b, &transport, options(&cluster));
    write_increments(&b.reactor, "doc", "b", 0..10);
    let token = ConsistencyToken(b.reactor.store().last_ordinal());
    b.sync
        .wait_synced("nats:REACTORDB", token, Duration::from_secs(30))
        .expect("published");
    relay(&mut a, &transport, options(&cluster));
    let mut c = open_node(dirs[2].path(), "c");
    relay(&mut c, &transport, options(&cluster));
    // a publishes its history again (c gets it) and reads the new stream
    // from its start (a gets all of b's).
    wait_count(&c.reactor, "doc", 15);
    wait_count(&a.reactor, "doc", 15);
    stop_all([&mut a, &mut b, &mut c]);
}

#[test]
fn widening_the_relays_filter_publishes_what_it_held_back() {
    let (_one, cluster, transport) = start();
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut a = open_node(da.path(), "a");
    let mut b = open_node(db.path(), "b");
    let only_one = reactordb::RemoteFilter::all().documents([id("one")]);
    a.sync
        .add_remote(
            "nats:REACTORDB",
            reactordb::RemoteOptions::new().filter(only_one),
        )
        .expect("a narrow filter");
    relay(&mut a, &transport, options(&cluster));
    relay(&mut b, &transport, options(&cluster));
    for doc in ["one", "two"] {
        create_counter(&a.reactor, doc);
        let job = a
            .reactor
            .execute(id(doc), main(), vec![increment(&format!("{doc}-1"))]);
        written(&job.expect("submit"));
    }
    wait_count(&b.reactor, "one", 1);
    let token = ConsistencyToken(a.reactor.store().last_ordinal());
    a.sync
        .wait_synced("nats:REACTORDB", token, Duration::from_secs(30))
        .expect("published");
    assert!(
        stream_ops(b.reactor.store(), "two", &Scope::document()).is_empty(),
        "the filter held two back"
    );
    a.sync
        .add_remote("nats:REACTORDB", reactordb::RemoteOptions::new())
        .expect("widened");
    wait_count(&b.reactor, "two", 1);
    stop_all([&mut a, &mut b]);
}

/// An action in `scope` whose input is its id (the log model appends it).
fn in_scope(aid: &str, scope: Scope, ts: u64) -> reactordb::Action {
    reactordb::Action::new(
        reactordb::ActionId::new(aid).expect("valid"),
        reactordb::ActionType::new("APPEND").expect("valid"),
        scope,
        ts,
        aid.as_bytes().to_vec(),
    )
}

/// Whether a job landed; an undo with nothing to undo (and the like) is
/// an answer too, anything else fails the test.
fn landed(job: reactordb::Result<reactordb::JobHandle>) -> bool {
    match job.expect("submit").wait_written(WAIT).expect("in time") {
        reactordb::JobStatus::Failed { error, .. } => {
            assert!(
                matches!(
                    *error,
                    Error::NothingToUndo { .. }
                        | Error::NotUndoable { .. }
                        | Error::DocumentNotFound { .. }
                ),
                "{error:?}"
            );
            false
        }
        _ => true,
    }
}

/// The relay's property over seeded random scenarios: three reactors
/// appending, undoing and redoing on shared log documents (clocks skewed,
/// so timestamps tie and interleave), writing `local` operations, while
/// relays stop and start, reactors close and reopen, and NATS nodes are
/// killed and restarted, end with the same set per stream, each
/// replica's effective history the naive model's history of that set,
/// the same states, `local` operations home, every chain clean and no
/// dead letter. CI runs two seeds; `REACTORDB_NATS_SCENARIOS=20 cargo test
/// --test nats_relay scenarios -- --nocapture` runs more.
#[test]
fn relayed_replicas_converge_on_the_naive_models_history_across_random_scenarios() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let scenarios: u64 = common::env_or("REACTORDB_NATS_SCENARIOS", 2);
    let mut cluster = Cluster::start();
    let transport = NatsTransport::new().expect("transport");
    for seed in 1..=scenarios {
        // Each scenario on a stream of its own.
        let stream = format!("SCENARIO{seed}");
        let opts = |cluster: &Cluster| {
            options(cluster)
                .stream(stream.clone())
                .subject_prefix(format!("scenario{seed}"))
                .audit_interval(Some(Duration::from_millis(200)))
        };
        let remote = format!("nats:{stream}");
        let mut rng = common::Rng::seeded(seed);
        const N: usize = 3;
        let docs = ["log0", "log1", "log2"];
        let dirs: Vec<_> = (0..N).map(|_| tempfile::tempdir().expect("dir")).collect();
        let mut nodes: Vec<Node> = (0..N)
            .map(|i| open_node(dirs[i].path(), &format!("r{i}")))
            .collect();
        for node in &mut nodes {
            relay(node, &transport, opts(&cluster));
        }
        for (k, doc) in docs.iter().enumerate() {
            written(
                &nodes[k % N]
                    .reactor
                    .create(id(doc), create_input(LogModel::document_type()))
                    .expect("submit"),
            );
        }
        let skews: Vec<u64> = (0..N).map(|_| rng.below(3) * 2).collect();
        let mut time = 100u64;
        let mut down: Option<usize> = None;
        let mut appended = Vec::new();
        for step in 0..(30 + rng.below(20)) {
            time += rng.below(2);
            let r = rng.below(N as u64) as usize;
            let doc = docs[rng.below(docs.len() as u64) as usize];
            let ts = time - skews[r];
            let aid = format!("s{seed}-{step}-r{r}");
            let created = !stream_ops(nodes[r].reactor.store(), doc, &Scope::document()).is_empty();
            let reactor = nodes[r].reactor.clone();
            match rng.below(100) {
                0..=44 if created => {
                    let job =
                        reactor.execute(id(doc), main(), vec![in_scope(&aid, Scope::global(), ts)]);
                    if landed(job) {
                        appended.push((doc, aid));
                    }
                }
                45..=54 if created => {
                    landed(reactor.undo(id(doc), main(), Scope::global()));
                }
                55..=59 if created => {
                    landed(reactor.redo(id(doc), main(), Scope::global()));
                }
                60..=66 if created => {
                    let local = format!("local-r{r}-{seed}-{step}");
                    landed(reactor.execute(
                        id(doc),
                        main(),
                        vec![in_scope(&local, Scope::local(), ts)],
                    ));
                }
                67..=74 => {
                    // A relay stops and starts again from its cursors.
                    if let Some(running) = nodes[r].relay.take() {
                        running.stop().expect("stopped cleanly");
                    }
                    relay(&mut nodes[r], &transport, opts(&cluster));
                }
                75..=79 => {
                    // A reactor closes and opens again.
                    drop(reactor);
                    let old = nodes.remove(r);
                    if let Some(running) = old.relay {
                        running.stop().expect("stopped cleanly");
                    }
                    drop(old.sync);
                    assert_eq!(Arc::strong_count(&old.reactor), 1, "the relay let it go");
                    drop(old.reactor);
                    let mut again = open_node(dirs[r].path(), &format!("r{r}"));
                    relay(&mut again, &transport, opts(&cluster));
                    nodes.insert(r, again);
                }
                80..=84 => match down.take() {
                    // A NATS node dies, or the dead one comes back.
                    Some(node) => cluster.restart(node),
                    None => {
                        let node = rng.below(3) as usize;
                        cluster.kill(node);
                        down = Some(node);
                    }
                },
                _ => std::thread::sleep(Duration::from_millis(rng.below(30))),
            }
        }
        if let Some(node) = down {
            cluster.restart(node);
        }
        cluster.wait_ready();
        let all: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let first = sets(&nodes[0].reactor, &all);
            if nodes[1..].iter().all(|n| sets(&n.reactor, &all) == first) {
                break;
            }
            if Instant::now() > deadline {
                for (i, node) in nodes.iter().enumerate() {
                    let sizes: Vec<usize> = sets(&node.reactor, &all)
                        .values()
                        .map(BTreeMap::len)
                        .collect();
                    eprintln!("replica {i}: {sizes:?} {:?}", node.sync.remotes());
                }
                panic!("seed {seed}: the replicas never held one set");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (doc, aid) in &appended {
            assert!(
                stream_ops(nodes[0].reactor.store(), doc, &Scope::global())
                    .iter()
                    .any(|o| o.action.id.as_str() == aid),
                "seed {seed}: {aid} written on {doc} is missing"
            );
        }
        let syncs: Vec<&SyncManager> = nodes.iter().map(|n| &*n.sync).collect();
        common::docs::assert_audit_agrees(&syncs, seed, |unit, op| {
            if op.action.action_type.as_str() == "CREATE_DOCUMENT" {
                let doc = docs.iter().position(|d| *d == unit.document_id.as_str());
                return doc.map(|k| k % N);
            }
            let (_, replica) = op.action.id.as_str().rsplit_once("-r")?;
            replica.parse().ok()
        });
        // And as published: every relay's records match every replica's,
        // one per peer and stream.
        let streams = nodes[0].sync.audit().expect("audit").len();
        // (A cluster busy electing a leader may fail an audit: the wait
        // asks again; past the deadline it shows what the audits said.)
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let reports: Vec<_> = nodes
                .iter()
                .map(|n| transport.audit(&n.sync, &opts(&cluster)))
                .collect();
            let clean = reports.iter().all(|r| {
                r.as_ref().is_ok_and(|report| {
                    report.is_clean()
                        && report.peers.len() == N - 1
                        && report.entries.len() == (N - 1) * streams
                        && report.entries.iter().all(|e| !e.peer_silent)
                })
            });
            if clean {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "seed {seed}: every audit clean ({streams} streams): {reports:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        for (i, node) in nodes.iter().enumerate() {
            let reactor = &node.reactor;
            for doc in docs {
                let raw = stream_ops(reactor.store(), doc, &Scope::global());
                let effective: Vec<String> = common::docs::effective(&raw)
                    .iter()
                    .map(|o| o.action.id.to_string())
                    .collect();
                assert_eq!(
                    effective,
                    common::history::naive_history(&raw),
                    "seed {seed}: replica {i} {doc}: effective(raw) != history(set)"
                );
                assert_eq!(
                    state(reactor, doc),
                    state(&nodes[0].reactor, doc),
                    "seed {seed}: replica {i} {doc} state"
                );
            }
            common::docs::assert_local_home_and_chains(reactor.store(), &docs, i, seed);
            let status = node.sync.remotes().expect("remotes");
            let relay_status = status
                .iter()
                .find(|s| s.name == remote)
                .expect("the relay's remote");
            assert_eq!(relay_status.dead_letters, 0, "seed {seed}: replica {i}");
        }
        for node in &mut nodes {
            node.relay
                .take()
                .expect("running")
                .stop()
                .expect("stopped cleanly");
        }
        println!("nats scenario {seed}: converged");
    }
}

/// The doc's `global` stream in `report`'s findings: (peer name, standing).
fn global_findings(report: &AuditReport) -> BTreeSet<(String, Standing)> {
    report
        .findings()
        .filter(|e| e.unit.document_id.as_str() == "doc" && e.unit.scope == Scope::global())
        .map(|e| (e.peer.1.clone(), e.standing))
        .collect()
}

#[test]
fn a_reactor_away_past_the_retention_bootstraps_from_a_peer_by_itself() {
    let (_one, cluster, transport) = start();
    let short = || {
        on_stream(&cluster, "SHORTAUTO")
            // Long enough that a's own consumer, loaded by the whole
            // suite, never falls behind it (it would stop a's mark).
            .max_age(Some(Duration::from_secs(3)))
            .audit_interval(Some(Duration::from_millis(100)))
    };
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut a = open_node(da.path(), "a");
    let mut b = open_node(db.path(), "b");
    relay(&mut a, &transport, short());
    let a_id = a.sync.node_id();
    // a's relay is up (its bucket made, its mark written) before it writes.
    // (A new cluster may time out the first requests while it elects.)
    wait_until("a's relay marked", 60, || {
        transport
            .audit(&b.sync, &short())
            .is_ok_and(|report| report.marks.contains_key(&a_id))
    });
    create_counter(&a.reactor, "doc");
    write_increments(&a.reactor, "doc", "a", 0..2);
    let last = a.reactor.store().last_ordinal();
    a.sync
        .wait_synced(
            "nats:SHORTAUTO",
            ConsistencyToken(last),
            Duration::from_secs(30),
        )
        .expect("published");
    // What a published expires before b first reads the stream.
    wait_until("the stream kept a's messages", 30, || {
        stream_messages(&cluster, "SHORTAUTO") == 0
    });
    // a's session with b first passes another document only: b knows a
    // (its hello came) but gets none of doc.
    let narrow = reactordb::RemoteFilter::all().documents([id("other")]);
    a.sync
        .add_remote("b", reactordb::RemoteOptions::new().filter(narrow))
        .expect("remote");
    b.sync
        .add_remote("a", reactordb::RemoteOptions::new())
        .expect("remote");
    relay(&mut b, &transport, short().bootstrap_from("a"));
    // a keeps writing while b waits, so the stream's first message moves
    // on meanwhile: b must read on from what a vouches for, not from where
    // the stream began when it started waiting.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (reactor, writing) = (a.reactor.clone(), writing.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while writing.load(std::sync::atomic::Ordering::Acquire) {
                let job = reactor.execute(id("doc"), main(), vec![increment(&format!("w{n}"))]);
                written(&job.expect("submit"));
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        })
    };
    let status = |node: &Node| {
        node.sync
            .remotes()
            .expect("remotes")
            .into_iter()
            .find(|r| r.name == "nats:SHORTAUTO")
            .expect("the relay's remote")
    };
    // Without a's session b waits, loading nothing and saying why.
    let says = |node: &Node, what: &str| {
        node.sync
            .remotes()
            .expect("remotes")
            .into_iter()
            .any(|r| r.last_error.as_deref().is_some_and(|e| e.contains(what)))
    };
    wait_until("b did not say it waits for a", 30, || {
        says(&b, "bootstrapping from a: it has not connected yet")
    });
    assert!(!b.relay.as_ref().expect("running").is_finished());
    assert_eq!(status(&b).inbox_cursor, 0);
    let (x, y) = reactordb::in_process_pair();
    let sessions = (
        a.sync.attach("b", x).expect("attach"),
        b.sync.attach("a", y).expect("attach"),
    );
    // Connected, but a's records show b behind on doc: b still waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !says(&b, "behind its records") {
        let now = status(&b);
        assert!(
            Instant::now() < deadline,
            "b did not say it is behind a's records: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        status(&b).inbox_cursor,
        0,
        "b read on while behind a's records"
    );
    // The messages there were when b began to wait expire meanwhile.
    std::thread::sleep(Duration::from_millis(3500));
    // a's session gives b the history; b reads on from the stream.
    a.sync
        .add_remote("b", reactordb::RemoteOptions::new())
        .expect("widen");
    wait_until("b never bootstrapped", 60, || status(&b).inbox_cursor > 0);
    writing.store(false, std::sync::atomic::Ordering::Release);
    let written_meanwhile = writer.join().expect("the writer");
    drop(sessions);
    written(
        &a.reactor
            .execute(id("doc"), main(), vec![increment("after")])
            .expect("submit"),
    );
    wait_until("the relay did not read on after the bootstrap", 30, || {
        count(&b.reactor, "doc") == 2 + written_meanwhile + 1
    });
    assert!(
        !b.relay.as_ref().expect("running").is_finished(),
        "b's relay ended: {:?}",
        status(&b)
    );
    stop_all([&mut a, &mut b]);
}

#[test]
fn audit_is_clean_on_converged_replicas_and_names_a_stream_behind_or_diverged() {
    let (_one, cluster, transport) = start();
    let opts = || on_stream(&cluster, "AUDITED").audit_interval(Some(Duration::from_millis(100)));
    let audit = |node: &Node| transport.audit(&node.sync, &opts()).expect("audit");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut a = open_node(dirs[0].path(), "a");
    let mut b = open_node(dirs[1].path(), "b");
    let mut c = open_node(dirs[2].path(), "c");
    for node in [&mut a, &mut b, &mut c] {
        relay(node, &transport, opts());
    }
    create_counter(&a.reactor, "doc");
    write_increments(&a.reactor, "doc", "a", 0..5);
    wait_count(&b.reactor, "doc", 5);
    write_increments(&b.reactor, "doc", "b", 0..3);
    let docs = ["doc".to_string()];
    let mut nodes = [a, b, c];
    wait_converged(&nodes, &docs);
    // Clean: each replica's record of every stream matches both peers'.
    wait_until("every audit clean", 30, || {
        nodes.iter().all(|n| {
            let report = audit(n);
            report.is_clean() && report.peers.len() == 2 && global_findings(&report).is_empty()
        })
    });
    let report = audit(&nodes[0]);
    assert!(
        report
            .entries
            .iter()
            .any(|e| e.unit.document_id.as_str() == "doc" && e.peer.1 == "c"),
        "{report:?}"
    );

    // Behind: c stops relaying while a writes on.
    stop_all([&mut nodes[2]]);
    write_increments(&nodes[0].reactor, "doc", "a", 5..8);
    wait_count(&nodes[1].reactor, "doc", 11);
    let peer_behind = BTreeSet::from([("c".to_string(), Standing::Ahead)]);
    wait_until("a sees c behind on doc", 30, || {
        global_findings(&audit(&nodes[0])) == peer_behind
    });
    // While c's mark is fresh that fails a's audit; once c has been quiet
    // for three of its intervals and 5 s it is silent: still listed, no
    // longer failing (a node that left must not fail the audit for ever).
    let report = audit(&nodes[0]);
    let c_silent = |r: &AuditReport| r.findings().all(|e| e.peer.1 == "c" && e.peer_silent);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let c_mark = report
        .marks
        .values()
        .find(|m| m.name == "c")
        .expect("c's mark");
    if now_ms.saturating_sub(c_mark.published_utc_ms) < 4_000 {
        assert!(!report.is_clean() && !c_silent(&report), "{report:?}");
    }
    wait_until("c never went silent", 30, || {
        let report = audit(&nodes[0]);
        c_silent(&report) && report.is_clean() && global_findings(&report) == peer_behind
    });
    let behind = BTreeSet::from([
        ("a".to_string(), Standing::Behind),
        ("b".to_string(), Standing::Behind),
    ]);
    wait_until("c sees itself behind a and b on doc", 30, || {
        global_findings(&audit(&nodes[2])) == behind
    });
    // The same from the CLI, on c's database closed.
    let [a, b, c] = nodes;
    drop(c);
    let run_audit = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_reactordb"))
            .args(["--db", dir.to_str().expect("utf-8"), "audit", "--nats"])
            .arg(cluster.urls().join(","))
            .args(["--token", TOKEN, "--stream", "AUDITED"])
            .output()
            .expect("run reactordb audit")
    };
    let out = run_audit(dirs[2].path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("behind: doc/global/main against a ("),
        "{stdout}"
    );
    assert!(stdout.contains("ours 8 operations, theirs 11"), "{stdout}");
    // Back, it catches up and the audit is clean again.
    let mut c = open_node(dirs[2].path(), "c");
    relay(&mut c, &transport, opts());
    let nodes = [a, b, c];
    wait_converged(&nodes, &docs);
    wait_until("c clean again", 30, || audit(&nodes[2]).is_clean());

    // Diverged: a restored from a backup taken before its last operation
    // executes that action again with another content: a holds as many of
    // its own operations as b and c hold of a's, under another history.
    let backup = tempfile::tempdir().expect("dir");
    let restored = backup.path().join("a");
    nodes[0].reactor.store().backup(&restored).expect("backup");
    written(
        &nodes[0]
            .reactor
            .execute(id("doc"), main(), vec![increment("a8")])
            .expect("submit"),
    );
    wait_count(&nodes[1].reactor, "doc", 12);
    wait_count(&nodes[2].reactor, "doc", 12);
    let [a, mut b, mut c] = nodes;
    drop(a);
    let a = open_node(&restored, "a");
    written(
        &a.reactor
            .execute(
                id("doc"),
                main(),
                vec![increment_by("a8", Scope::global(), 2)],
            )
            .expect("submit"),
    );
    let diverged = BTreeSet::from([
        ("b".to_string(), Standing::Diverged),
        ("c".to_string(), Standing::Diverged),
    ]);
    wait_until("a's audit names doc diverged", 30, || {
        global_findings(&audit(&a)) == diverged
    });
    drop(a);
    let out = run_audit(&restored);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("diverged: doc/global/main against b ("),
        "{stdout}"
    );
    stop_all([&mut b, &mut c]);
}

#[test]
fn relays_authenticate_with_a_user_and_password_over_tls() {
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let certs = tempfile::tempdir().expect("dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let (ca, key) = (certs.path().join("ca.pem"), certs.path().join("key.pem"));
    std::fs::write(&ca, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let cluster = Cluster::start_with(&Access::user_password_tls(
        "relay",
        "s3cret",
        ca.clone(),
        key,
    ));
    let transport = NatsTransport::new().expect("transport");
    let secure = |password: &str| {
        NatsOptions::new(cluster.urls())
            .user_password("relay", password)
            .ca_file(&ca)
            .stream("SECURE")
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut a = open_node(dirs[0].path(), "a");
    let mut b = open_node(dirs[1].path(), "b");
    relay(&mut a, &transport, secure("s3cret"));
    relay(&mut b, &transport, secure("s3cret"));
    create_counter(&a.reactor, "doc");
    write_increments(&a.reactor, "doc", "a", 0..3);
    wait_count(&b.reactor, "doc", 3);
    stop_all([&mut a, &mut b]);

    let c = open_node(dirs[2].path(), "c");
    // A wrong password is refused, over TLS too.
    match transport.relay(c.sync.clone(), secure("wrong")) {
        Err(Error::SyncRefused { reason }) => assert!(reason.contains("credentials"), "{reason}"),
        other => panic!("a wrong password must be refused: {:?}", other.map(|_| ())),
    }
    // A client that does not trust the servers' authority gets nowhere.
    let untrusting = NatsOptions::new(cluster.urls())
        .user_password("relay", "s3cret")
        .stream("SECURE");
    match transport.relay(c.sync.clone(), untrusting) {
        Err(Error::Transport { reason }) => assert!(reason.contains("connecting"), "{reason}"),
        other => panic!(
            "an untrusted server must not be used: {:?}",
            other.map(|_| ())
        ),
    }
    drop(c);

    // The CLI takes the same: --user, --password, --ca.
    let (mut child, lines) = spawn_following(
        std::process::Command::new(env!("CARGO_BIN_EXE_reactordb"))
            .args([
                "--db",
                dirs[2].path().to_str().expect("utf-8"),
                "sync",
                "--nats",
            ])
            .arg(cluster.urls().join(","))
            .args(["--user", "relay", "--password", "s3cret", "--ca"])
            .arg(&ca)
            .args(["--stream", "SECURE"]),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // a's creation and three increments, and the document scope's
            // header operations: at least four.
            Ok(line)
                if line.starts_with("nats:SECURE: connected") && !line.contains("received 0,") =>
            {
                break
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let mut stderr = String::new();
                let _ = std::io::Read::read_to_string(
                    &mut child.stderr.take().expect("piped"),
                    &mut stderr,
                );
                panic!("the CLI relay received nothing over TLS: {stderr}")
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let c = open(dirs[2].path(), 2);
    assert_eq!(count(&c, "doc"), 3);
}

/// Four documents in four different partitions.
fn docs_in_distinct_partitions() -> [String; 4] {
    let mut seen = BTreeSet::new();
    let found: Vec<String> = (0..)
        .map(|n| format!("part-{n}"))
        .filter(|d| seen.insert(NatsOptions::partition_of(&id(d))))
        .take(4)
        .collect();
    [0, 1, 2, 3].map(|i| found[i].clone())
}

/// The stream's consumers: filter subject and deliveries so far, sorted.
fn consumer_deliveries(cluster: &Cluster, stream: &str) -> Vec<(String, u64)> {
    let (runtime, js) = test_client(cluster);
    runtime.block_on(async {
        use tokio_stream::StreamExt;
        let stream = js.get_stream(stream).await.expect("the stream");
        let mut infos = stream.consumers();
        let mut out = Vec::new();
        while let Some(info) = infos.next().await {
            let info = info.expect("a consumer");
            out.push((info.config.filter_subject, info.delivered.consumer_sequence));
        }
        out.sort();
        out
    })
}

/// The filter subjects of the stream's consumers, sorted.
fn consumer_filters(cluster: &Cluster, stream: &str) -> Vec<String> {
    consumer_deliveries(cluster, stream)
        .into_iter()
        .map(|(filter, _)| filter)
        .collect()
}

#[test]
fn a_relay_of_some_partitions_loads_them_only_and_resumes_from_their_cursors() {
    let (_one, cluster, transport) = start();
    let [shared, elsewhere, idle, own] = docs_in_distinct_partitions();
    let (p_shared, p_idle) = (
        NatsOptions::partition_of(&id(&shared)),
        NatsOptions::partition_of(&id(&idle)),
    );
    let opts = || on_stream(&cluster, "PARTS").audit_interval(Some(Duration::from_millis(200)));
    let served = || opts().partitions([p_shared, p_idle]);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut a = open_node(dirs[0].path(), "a");
    let mut b = open_node(dirs[1].path(), "b");
    let mut c = open_node(dirs[2].path(), "c");
    relay(&mut a, &transport, opts());
    relay(&mut b, &transport, opts());
    relay(&mut c, &transport, served());
    create_counter(&a.reactor, &shared);
    create_counter(&a.reactor, &elsewhere);
    let write = |node: &Node, doc: &str, action: &str| {
        written(
            &node
                .reactor
                .execute(id(doc), main(), vec![increment(action)])
                .expect("submit"),
        );
    };
    wait_until("b holds the document a created", 30, || {
        !stream_ops(b.reactor.store(), &elsewhere, &Scope::document()).is_empty()
    });
    for n in 0..4 {
        write(&a, &shared, &format!("a{n}"));
        write(&b, &elsewhere, &format!("b{n}"));
    }
    wait_count(&c.reactor, &shared, 4);
    write_increments(&c.reactor, &shared, "c", 0..3);
    // c also writes a document of a partition it does not serve: what it
    // publishes is still what its filter passes, but b's writes to it
    // never come back to c.
    create_counter(&c.reactor, &own);
    write(&c, &own, "c-own");
    wait_count(&b.reactor, &own, 1);
    write(&b, &own, "b-own");
    let mut nodes = [a, b, c];
    wait_converged(&nodes, std::slice::from_ref(&shared));
    wait_converged(&nodes[..2], &[elsewhere.clone(), own.clone()]);
    assert_eq!(
        count(&nodes[2].reactor, &own),
        1,
        "c loaded b's write to {own}"
    );
    // The partition c does not serve never reached it.
    assert_eq!(count(&nodes[2].reactor, &elsewhere), 0);
    assert!(
        stream_ops(nodes[2].reactor.store(), &elsewhere, &Scope::document()).is_empty(),
        "c loaded a document of a partition it does not serve"
    );
    // Through a consumer per served partition, on its wildcard subject
    // (a and b: one each on the whole stream).
    let mut expected: Vec<String> = [p_shared, p_idle]
        .iter()
        .map(|p| format!("parts.ops.{p:02x}.>"))
        .chain(["parts.ops.>".to_string(), "parts.ops.>".to_string()])
        .collect();
    expected.sort();
    assert_eq!(consumer_filters(&cluster, "PARTS"), expected);
    // Each partition's cursor reaches the stream's end, the idle one's too.
    let end = || {
        let (runtime, js) = test_client(&cluster);
        runtime.block_on(async {
            let mut stream = js.get_stream("PARTS").await.expect("the stream");
            stream.info().await.expect("its info").state.last_sequence
        })
    };
    let inbox = |node: &Node| node.sync.remotes().expect("remotes")[0].inbox_cursor;
    let last = end();
    wait_until("c's partitions all at the stream's end", 30, || {
        inbox(&nodes[2]) == last
    });
    // Audits: c's records are of its partitions' streams only (its record
    // of the document it wrote elsewhere would show it behind b), so c's
    // audit and the others' are clean, and its mark says it cannot vouch
    // for the whole stream.
    wait_until("every audit clean", 30, || {
        let of_c = transport.audit(&nodes[2].sync, &served()).expect("audit");
        let of_a = transport.audit(&nodes[0].sync, &opts()).expect("audit");
        of_c.is_clean()
            && of_a.is_clean()
            && of_c.entries.len() == 4 // two peers, two streams (document, global)
            && of_c
                .entries
                .iter()
                .all(|e| e.unit.document_id.as_str() == shared.as_str())
            && of_a.marks.len() == 2
    });
    let of_a = transport.audit(&nodes[0].sync, &opts()).expect("audit");
    let marks: BTreeMap<String, bool> = of_a
        .marks
        .values()
        .map(|m| (m.name.clone(), m.relays_everything))
        .collect();
    assert_eq!(
        marks,
        BTreeMap::from([("b".to_string(), true), ("c".to_string(), false)])
    );

    // c away: the others write to both partitions; back, c resumes each
    // partition from its cursor: its consumer of the shared partition
    // delivers the three new messages only.
    stop_all([&mut nodes[2]]);
    for n in 4..7 {
        write(&nodes[0], &shared, &format!("a{n}"));
        write(&nodes[1], &elsewhere, &format!("b{n}"));
    }
    relay(&mut nodes[2], &transport, served());
    wait_count(&nodes[2].reactor, &shared, 10);
    wait_converged(&nodes, std::slice::from_ref(&shared));
    let deliveries: BTreeMap<String, u64> =
        consumer_deliveries(&cluster, "PARTS").into_iter().collect();
    assert_eq!(
        deliveries[&format!("parts.ops.{p_shared:02x}.>")],
        3,
        "{deliveries:?}"
    );
    assert_eq!(count(&nodes[2].reactor, &elsewhere), 0);
    // The idle partition's cursor moves on after the restart too.
    let last = end();
    wait_until("c's partitions at the stream's end again", 30, || {
        inbox(&nodes[2]) == last
    });

    // The CLI on c's database closed: over every partition c lacks what
    // b wrote (exit 2); over c's partitions it is clean (exit 0).
    stop_all([&mut nodes[2]]);
    let [a, b, c] = nodes;
    drop(c);
    let run_audit = |partitions: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_reactordb"))
            .args(["--db", dirs[2].path().to_str().expect("utf-8"), "audit"])
            .args(["--nats", &cluster.urls().join(",")])
            .args(["--token", TOKEN, "--stream", "PARTS"])
            .args(partitions)
            .output()
            .expect("run reactordb audit")
    };
    let out = run_audit(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(&format!("behind: {own}/global/main")),
        "{stdout}"
    );
    let served_hex = format!("{p_shared:02x},{p_idle:02x}");
    let out = run_audit(&["--partitions", &served_hex]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let out = run_audit(&["--partitions", "1g"]);
    assert_eq!(out.status.code(), Some(2), "a bad partition is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a partition"));
    // c relays the whole stream now: its partitions' consumers go, and it
    // loads what it had left out.
    let mut c = open_node(dirs[2].path(), "c");
    relay(&mut c, &transport, opts());
    let nodes = [a, b, c];
    wait_converged(&nodes, &[shared.clone(), elsewhere.clone(), own.clone()]);
    wait_until("only whole-stream consumers left", 30, || {
        consumer_filters(&cluster, "PARTS") == ["parts.ops.>"; 3]
    });
    let [mut a, mut b, mut c] = nodes;
    stop_all([&mut a, &mut b, &mut c]);
}

#[test]
fn a_relay_of_no_partition_is_refused() {
    let transport = NatsTransport::new().expect("transport");
    let dir = tempfile::tempdir().expect("dir");
    let node = open_node(dir.path(), "a");
    let refused = transport.relay(
        node.sync.clone(),
        NatsOptions::new(["nats://127.0.0.1:1"]).partitions([]),
    );
    assert!(
        matches!(
            refused,
            Err(Error::InvalidOptions {
                option: "partitions",
                ..
            })
        ),
        "{:?}",
        refused.err()
    );
}
