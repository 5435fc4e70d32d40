//! `reactordb demo`: a realistic mixed workload on a fresh database, with
//! progress bars, a summary table and one document rendered as JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use reactordb::{
    Action, ActionType, Branch, ConsistencyToken, CounterModel, CreateDocumentInput, DocumentId,
    Durability, JobHandle, JobStatus, ModelRegistry, OperationWithContext, Ordinal, Paging,
    Reactor, Scope, TodoAction, TodoModel, Typed, ViewFilter,
};

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(120);
const COUNTERS: usize = 200;
const TODOS: usize = 50;
const INCREMENTS: usize = 40;

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(what.to_owned());
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn written(job: &JobHandle) -> DemoResult<ConsistencyToken> {
    match job.wait_written(WAIT)? {
        JobStatus::WriteReady { token } | JobStatus::ReadReady { token } => Ok(token),
        other => Err(format!("demo job {} failed: {other:?}", job.id()).into()),
    }
}

fn action(
    reactor: &Reactor,
    kind: &str,
    scope: Scope,
    ts: u64,
    input: Vec<u8>,
) -> DemoResult<Action> {
    Ok(Action::new(
        reactor.new_action_id(),
        ActionType::new(kind)?,
        scope,
        ts,
        input,
    ))
}

fn create(reactor: &Reactor, id: &DocumentId, input: CreateDocumentInput) -> DemoResult<JobHandle> {
    Ok(reactor.create(id.clone(), input)?)
}

fn input(
    document_type: reactordb::DocumentType,
    name: String,
    slug: Option<String>,
) -> CreateDocumentInput {
    let mut input = CreateDocumentInput::new(document_type, 1, name);
    input.slug = slug;
    input
}

fn disk_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Prepares `db` for the demo: it must not exist, or be empty, or (with
/// `fresh`) be a reactordb database, which is removed.
fn prepare(db: &Path, fresh: bool) -> DemoResult<()> {
    if !db.exists() || std::fs::read_dir(db)?.next().is_none() {
        return Ok(());
    }
    if !fresh {
        return Err(format!(
            "{} exists; pass --fresh to replace it, or --db to use another directory",
            db.display()
        )
        .into());
    }
    if !db.join("CURRENT").exists() {
        return Err(format!(
            "{} is not a reactordb database; not removing it",
            db.display()
        )
        .into());
    }
    std::fs::remove_dir_all(db)?;
    Ok(())
}

pub(crate) fn run(db: &Path, fresh: bool) -> DemoResult<()> {
    prepare(db, fresh)?;
    let started = Instant::now();
    let reactor = Reactor::builder(db)
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .open()?;
    tracing::info!(path = %db.display(), "demo database opened");

    // 1. Documents.
    let counters: Vec<DocumentId> = (0..COUNTERS)
        .map(|i| DocumentId::new(format!("counter-{i:03}")))
        .collect::<Result<_, _>>()?;
    let todos: Vec<DocumentId> = (0..TODOS)
        .map(|i| DocumentId::new(format!("todo-{i:02}")))
        .collect::<Result<_, _>>()?;
    let progress = bar((COUNTERS + TODOS) as u64, "create");
    let mut jobs = Vec::new();
    for (i, id) in counters.iter().enumerate() {
        jobs.push(create(
            &reactor,
            id,
            input(CounterModel::document_type(), format!("counter {i}"), None),
        )?);
    }
    for (i, id) in todos.iter().enumerate() {
        jobs.push(create(
            &reactor,
            id,
            input(
                TodoModel::document_type(),
                format!("list {i}"),
                Some(format!("list-{i}")),
            ),
        )?);
    }
    for job in &jobs {
        written(job)?;
        progress.inc(1);
    }
    progress.finish();

    // 2. Actions: increments in two scopes, todo items, relationships.
    let write_start = Instant::now();
    let mut submitted: Vec<(Instant, JobHandle)> = Vec::new();
    let mut ts = 1_700_000_000_000u64;
    for round in 0..INCREMENTS {
        for id in &counters {
            ts += 1;
            let scope = if round % 8 == 7 {
                Scope::local()
            } else {
                Scope::global()
            };
            let a = action(&reactor, "INCREMENT", scope, ts, Vec::new())?;
            submitted.push((
                Instant::now(),
                reactor.execute(id.clone(), Branch::main(), vec![a])?,
            ));
        }
    }
    for (i, id) in todos.iter().enumerate() {
        for item in 0..10 {
            ts += 1;
            let add = TodoAction::Add {
                id: format!("item-{item}"),
                title: format!("task {item} of list {i}"),
            };
            let a = action(
                &reactor,
                add.action_type().as_str(),
                Scope::global(),
                ts,
                Typed::<TodoModel>::encode_input(&add),
            )?;
            submitted.push((
                Instant::now(),
                reactor.execute(id.clone(), Branch::main(), vec![a])?,
            ));
        }
        let toggle = TodoAction::Toggle {
            id: "item-0".into(),
        };
        let a = action(
            &reactor,
            toggle.action_type().as_str(),
            Scope::global(),
            ts,
            Typed::<TodoModel>::encode_input(&toggle),
        )?;
        submitted.push((
            Instant::now(),
            reactor.execute(id.clone(), Branch::main(), vec![a])?,
        ));
        submitted.push((
            Instant::now(),
            reactor.add_relationship(id.clone(), counters[i].clone(), "tracks")?,
        ));
    }
    let progress = bar(submitted.len() as u64, "actions");
    let mut latencies = Vec::with_capacity(submitted.len());
    let mut last = ConsistencyToken(Ordinal(0));
    for (at, job) in &submitted {
        last = last.max(written(job)?);
        latencies.push(at.elapsed().as_secs_f64() * 1e3);
        progress.inc(1);
    }
    progress.finish();
    let write_secs = write_start.elapsed().as_secs_f64();
    reactor.view().wait_for(last)?;

    // 3. Undo and redo on one counter: +5, undo it, redo it.
    let undo_doc = &counters[0];
    ts += 1;
    let plus_five = action(&reactor, "INCREMENT", Scope::global(), ts, b"5".to_vec())?;
    written(&reactor.execute(undo_doc.clone(), Branch::main(), vec![plus_five])?)?;
    let after_plus = counter(&reactor, undo_doc)?;
    written(&reactor.undo(undo_doc.clone(), Branch::main(), Scope::global())?)?;
    let after_undo = counter(&reactor, undo_doc)?;
    written(&reactor.redo(undo_doc.clone(), Branch::main(), Scope::global())?)?;
    let after_redo = counter(&reactor, undo_doc)?;

    // 4. A deleted document.
    let deleted = &counters[COUNTERS - 1];
    let token = written(&reactor.delete_document(deleted.clone(), Branch::main())?)?;
    let deleted_read = reactor
        .view()
        .get(deleted, &ViewFilter::default(), Some(token));

    // 5. A concurrent conflict: a second replica edits the same list while
    //    this one does; they exchange operations and converge.
    let peer_dir = tempfile::tempdir()?;
    let peer = Reactor::builder(peer_dir.path())
        .durability(Durability::Buffered)
        .registry(ModelRegistry::with_examples())
        .open()?;
    let shared = &todos[0];
    let genesis = feed(&reactor, shared, &Scope::document())?;
    written(&peer.load(shared.clone(), Branch::main(), genesis)?)?;
    let before_local = feed(&reactor, shared, &Scope::global())?;
    written(&peer.load(shared.clone(), Branch::main(), before_local)?)?;
    for (n, (replica, name)) in [(&reactor, "here"), (&peer, "peer")]
        .into_iter()
        .enumerate()
    {
        for k in 0..3u64 {
            let add = TodoAction::Add {
                id: format!("{name}-{k}"),
                title: format!("added {name}"),
            };
            let a = action(
                replica,
                add.action_type().as_str(),
                Scope::global(),
                ts + 10 + k * 2 + n as u64,
                Typed::<TodoModel>::encode_input(&add),
            )?;
            written(&replica.execute(shared.clone(), Branch::main(), vec![a])?)?;
        }
    }
    let here_ops = feed(&reactor, shared, &Scope::global())?;
    let peer_ops = feed(&peer, shared, &Scope::global())?;
    let t_here = written(&reactor.load(shared.clone(), Branch::main(), peer_ops)?)?;
    let t_peer = written(&peer.load(shared.clone(), Branch::main(), here_ops)?)?;
    let here = reactor
        .view()
        .get(shared, &ViewFilter::default(), Some(t_here))?;
    let there = peer
        .view()
        .get(shared, &ViewFilter::default(), Some(t_peer))?;
    let here_hash = here.scopes.get(&Scope::global()).map(|s| s.state_hash);
    let there_hash = there.scopes.get(&Scope::global()).map(|s| s.state_hash);
    drop(peer);

    // 6. Reads through the view.
    let everyone: Vec<&DocumentId> = counters
        .iter()
        .chain(todos.iter())
        .filter(|id| *id != deleted)
        .collect();
    let read_start = Instant::now();
    let mut reads = 0u64;
    while read_start.elapsed() < Duration::from_millis(500) {
        for id in &everyone {
            reactor.view().get(id, &ViewFilter::default(), None)?;
            reads += 1;
        }
    }
    let reads_per_s = reads as f64 / read_start.elapsed().as_secs_f64();
    let report = reactor.store().verify_all()?;
    let operations = reactor.store().last_ordinal().get();
    let shown = reactor
        .view()
        .get_by_slug("list-0", &ViewFilter::default(), None)?;
    reactor.shutdown();
    drop(reactor);

    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!();
    println!("{:<34} {:>14}", "documents", COUNTERS + TODOS);
    println!("{:<34} {:>14}", "operations", operations);
    println!(
        "{:<34} {:>14.0}",
        "actions/s (write phase)",
        submitted.len() as f64 / write_secs
    );
    println!("{:<34} {:>14.0}", "view reads/s", reads_per_s);
    println!(
        "{:<34} {:>14.3}",
        "job latency p50 ms (submit→written)",
        pct(0.5)
    );
    println!(
        "{:<34} {:>14.3}",
        "job latency p99 ms (submit→written)",
        pct(0.99)
    );
    println!(
        "{:<34} {:>14.1}",
        "disk MiB",
        disk_bytes(db) as f64 / (1 << 20) as f64
    );
    println!(
        "{:<34} {:>14}",
        "undo/redo (counter-000)",
        format!(
            "{}→{}→{}",
            after_plus.unwrap_or_default(),
            after_undo.unwrap_or_default(),
            after_redo.unwrap_or_default()
        )
    );
    println!(
        "{:<34} {:>14}",
        "deleted document read",
        if matches!(deleted_read, Err(reactordb::Error::DocumentDeleted { .. })) {
            "DocumentDeleted"
        } else {
            "UNEXPECTED"
        }
    );
    println!(
        "{:<34} {:>14}",
        "replicas converged",
        if here_hash.is_some() && here_hash == there_hash {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "{:<34} {:>14}",
        "hash chains",
        if report.is_clean() {
            "verified"
        } else {
            "BROKEN"
        }
    );
    println!("{:<34} {:>14.1}", "wall s", started.elapsed().as_secs_f64());
    println!();
    println!(
        "{} (slug list-0) as JSON (`reactordb inspect {} --json`):",
        shown.header.id, shown.header.id
    );
    let state = shown
        .state(&Scope::global())
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(s).ok());
    println!(
        "{}",
        serde_json::to_string_pretty(
            &serde_json::json!({ "header": shown.header, "global": state })
        )?
    );
    if !report.is_clean() || here_hash != there_hash {
        return Err("the demo found an inconsistency".into());
    }
    Ok(())
}

fn counter(reactor: &Reactor, id: &DocumentId) -> DemoResult<Option<i64>> {
    let doc = reactor.view().get(
        id,
        &ViewFilter::default(),
        Some(ConsistencyToken(reactor.store().last_ordinal())),
    )?;
    Ok(doc.state(&Scope::global()).and_then(CounterModel::value))
}

fn feed(
    reactor: &Reactor,
    id: &DocumentId,
    scope: &Scope,
) -> DemoResult<Vec<OperationWithContext>> {
    Ok(reactor
        .store()
        .get_since_ordinal(Ordinal(1), Paging::all())?
        .items
        .into_iter()
        .filter(|o| &o.context.document_id == id && &o.context.scope == scope)
        .collect())
}
