//! Sync over gRPC on 127.0.0.1 (real sockets): a server accepting a
//! client it has never heard of, both editing one document, converging; a
//! wrong token refused with a clear error; TLS with a certificate this test
//! generates, and a client that does not trust it refused.
#![cfg(feature = "grpc")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::docs::stream_ops;
use common::reactor::*;
use reactordb::{
    DialOptions, Error, GrpcTransport, Reactor, RemoteOptions, Scope, ServeOptions, SyncManager,
    SyncOptions,
};

fn node(dir: &std::path::Path, options: SyncOptions) -> (Arc<Reactor>, Arc<SyncManager>) {
    let reactor = Arc::new(open(dir, 2));
    let sync = Arc::new(SyncManager::open(reactor.clone(), options).expect("sync"));
    (reactor, sync)
}

fn ids(reactor: &Reactor, scope: &Scope) -> Vec<String> {
    let mut ids: Vec<String> = stream_ops(reactor.store(), "doc", scope)
        .iter()
        .map(|o| o.action.id.to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn append(reactor: &Reactor, aid: &str, ts: u64) {
    written(
        &reactor
            .execute(id("doc"), main(), vec![action(aid, "APPEND", aid, ts)])
            .expect("submit"),
    );
}

fn converge(a: &Reactor, b: &Reactor) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(a, &Scope::global()) != ids(b, &Scope::global())
        || ids(a, &Scope::document()) != ids(b, &Scope::document())
    {
        assert!(Instant::now() < deadline, "never converged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_reactors_sync_over_grpc_and_a_wrong_token_is_refused() {
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, sa) = node(
        da.path(),
        SyncOptions::new().name("a").accept_new_remotes(true),
    );
    let (b, sb) = node(db.path(), SyncOptions::new().name("b"));
    let transport = GrpcTransport::new().expect("transport");
    let server = transport
        .serve(
            sa.clone(),
            "127.0.0.1:0".parse().expect("addr"),
            ServeOptions::token("s3cret"),
        )
        .expect("serve");
    let url = format!("http://{}", server.local_addr());

    // This server takes no backups: asking is refused, with its reason.
    let no_backups = transport
        .backup(&url, &DialOptions::token("s3cret"), "snap")
        .err();
    assert!(
        matches!(&no_backups, Some(Error::Transport { reason }) if reason.contains("no backups")),
        "{no_backups:?}"
    );

    let refused = transport.dial(&url, &DialOptions::token("wrong")).err();
    assert!(
        matches!(&refused, Some(Error::SyncRefused { reason }) if reason.contains("token")),
        "{refused:?}"
    );

    a.create(id("doc"), create_input(LogModel::document_type()))
        .expect("submit")
        .written(WAIT)
        .expect("created");
    append(&a, "a1", 10);
    sb.add_remote("a", RemoteOptions::new()).expect("remote");
    let _client = transport
        .keep_synced(sb.clone(), "a", &url, DialOptions::token("s3cret"))
        .expect("dial");
    converge(&a, &b);
    append(&b, "b1", 11);
    append(&a, "a2", 12);
    converge(&a, &b);
    assert_eq!(ids(&b, &Scope::global()), ["a1", "a2", "b1"]);
    let remotes = sa.remotes().expect("remotes");
    assert_eq!(remotes.len(), 1);
    assert_eq!(remotes[0].name, "b", "the server learned its client's name");
}

#[test]
fn tls_with_a_generated_certificate_and_an_untrusting_client_refused() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let (cert, key) = (
        certified.cert.pem().into_bytes(),
        certified.signing_key.serialize_pem().into_bytes(),
    );
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, sa) = node(
        da.path(),
        SyncOptions::new().name("a").accept_new_remotes(true),
    );
    let (b, sb) = node(db.path(), SyncOptions::new().name("b"));
    let transport = GrpcTransport::new().expect("transport");
    let server = transport
        .serve(
            sa.clone(),
            "127.0.0.1:0".parse().expect("addr"),
            ServeOptions::token("t").tls(cert.clone(), key),
        )
        .expect("serve");
    let url = format!("https://{}", server.local_addr());

    // A client trusting another authority does not get through.
    let other =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let untrusting = DialOptions::token("t").tls(other.cert.pem().into_bytes(), "localhost");
    assert!(transport.dial(&url, &untrusting).is_err());
    // Plain text to a TLS server does not either.
    let plain = format!("http://{}", server.local_addr());
    assert!(transport.dial(&plain, &DialOptions::token("t")).is_err());

    a.create(id("doc"), create_input(LogModel::document_type()))
        .expect("submit")
        .written(WAIT)
        .expect("created");
    append(&a, "a1", 10);
    sb.add_remote("a", RemoteOptions::new()).expect("remote");
    let _client = transport
        .keep_synced(
            sb.clone(),
            "a",
            &url,
            DialOptions::token("t").tls(cert, "localhost"),
        )
        .expect("dial");
    converge(&a, &b);
    assert_eq!(ids(&b, &Scope::global()), ["a1"]);
}

#[test]
fn concurrent_backups_of_one_name_take_it_once() {
    let (dir, backups) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, sa) = node(dir.path(), SyncOptions::new().name("a"));
    written(
        &a.create(id("doc"), create_input(LogModel::document_type()))
            .expect("submit"),
    );
    append(&a, "x1", 1);
    let transport = GrpcTransport::new().expect("transport");
    let server = transport
        .serve(
            sa.clone(),
            "127.0.0.1:0".parse().expect("addr"),
            ServeOptions::token("s3cret").backup_dir(backups.path()),
        )
        .expect("serve");
    let url = format!("http://{}", server.local_addr());
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..4)
            .map(|_| s.spawn(|| transport.backup(&url, &DialOptions::token("s3cret"), "same")))
            .collect();
        asks.into_iter()
            .map(|a| a.join().expect("no panic"))
            .collect()
    });
    let taken: Vec<_> = outcomes.iter().filter(|o| o.is_ok()).collect();
    assert_eq!(taken.len(), 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert!(
            matches!(refused, Error::Transport { reason } if reason.contains("exists")),
            "{refused:?}"
        );
    }
    let copy = reactordb::OperationStore::open_read_only(
        backups.path().join("same"),
        reactordb::StoreOptions::default(),
    )
    .expect("the backup opens");
    assert!(copy.verify_all().expect("verify").is_clean());
    assert_eq!(copy.last_ordinal(), a.store().last_ordinal());
}
