//! The `reactordb` command line: `demo`, `bench`, `verify`, `inspect`,
//! `export`, `import`, `backup`, `serve` and `sync` on a database directory. Errors reach
//! the user as one line and a non-zero exit; logs go to standard error
//! through `tracing`, filtered by `RUST_LOG` (quiet by default).

mod cli;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use cli::workloads::{self, WorkloadConfig, WorkloadReport};
use reactordb::{
    Branch, DocumentId, Durability, ExportLine, OperationFilter, OperationStore, Paging, Revision,
    Scope, StoreOptions, SyncUnit,
};

#[derive(Parser)]
#[command(
    name = "reactordb",
    version,
    about = "An embedded document reactor on RocksDB"
)]
struct Cli {
    /// The database directory.
    #[arg(long, global = true, default_value = "reactordb-data")]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a realistic mixed workload on a fresh database at --db and
    /// prints a summary and one document as JSON.
    Demo {
        /// Replace --db if it already holds a reactordb database.
        #[arg(long)]
        fresh: bool,
    },
    /// Runs the standard workloads on a fresh database in a temporary
    /// directory: W1 many-docs, W2 hot-doc, W3 contention.
    Bench(BenchArgs),
    /// Re-checks every hash chain, view snapshot, merge history and the
    /// view's metadata; exits non-zero naming the first broken one.
    Verify {
        /// Drop the view's data (headers, indexes, snapshots, checkpoint)
        /// and fold it again from the operations, then verify. Operations
        /// are never repaired.
        #[arg(long)]
        repair_view: bool,
    },
    /// Lists documents (paged; `--type` filters), shows a document's
    /// streams or, with `--json`, the document itself, or a stream's
    /// operations (`--scope`).
    Inspect(InspectArgs),
    /// Writes a document (every stream, every operation) as JSON lines.
    Export {
        /// The document.
        document: String,
    },
    /// Reads JSON lines written by `export` (from standard input) and writes
    /// the operations as they are: the chain heads come out identical.
    Import,
    /// Writes a consistent online copy of the database to PATH.
    Backup {
        /// Where the copy goes (must not exist); with --server, a name
        /// under the server's --backup-dir.
        path: PathBuf,
        #[cfg(feature = "grpc")]
        #[command(flatten)]
        remote: cli::sync::RemoteBackupArgs,
    },
    /// Serves sync over gRPC: peers running `sync` connect here. Runs until
    /// interrupted, printing a line per peer as it changes.
    #[cfg(feature = "grpc")]
    Serve(cli::sync::ServeArgs),
    /// Syncs with a server (`--peer URL --token T`), or through a NATS
    /// JetStream cluster (`--nats URL[,URL…]`), until interrupted, printing
    /// sent / received / lag as they change; `sync status` prints every
    /// remote's cursors.
    #[cfg(feature = "grpc")]
    Sync(cli::sync::SyncArgs),
    /// Compares this database with the audit records other reactors'
    /// relays published on the NATS stream's bucket (`--nats URL[,URL…]`)
    /// and names each stream where one side is behind or they diverged.
    /// Exits 0 when clean, 2 with findings. Run it on a database no
    /// process holds.
    #[cfg(all(feature = "grpc", feature = "nats"))]
    Audit(cli::audit::AuditArgs),
}

#[derive(clap::Args)]
struct InspectArgs {
    /// A document: show its streams (or one stream's operations with
    /// `--scope`, or the document with `--json`). Without it: list
    /// documents.
    document: Option<String>,
    /// Show this scope's operations.
    #[arg(long)]
    scope: Option<String>,
    /// The branch.
    #[arg(long, default_value = "main")]
    branch: String,
    /// At most this many operations.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Start at this index (operations) or position (`--type`).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// List the live documents of this type instead.
    #[arg(long = "type")]
    document_type: Option<String>,
    /// Show the document itself as JSON: header, revisions, state per scope.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// WAL written, not fsynced (survives a process crash).
    Buffered,
    /// WAL fsynced before acknowledging (survives power loss).
    Synced,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    All,
    ManyDocs,
    HotDoc,
    Contention,
    /// `apply` of single operations against a raw RocksDB `WriteBatch` of
    /// the same bytes.
    Raw,
    /// Two reactors syncing: actions written on one until the other's view
    /// has them, over the in-process channel and over gRPC on loopback.
    #[cfg(feature = "grpc")]
    Sync,
    /// Three reactors relaying through a 3-node NATS JetStream cluster on
    /// loopback (needs `nats-server`): documents spread over them, until
    /// every replica's view has everything.
    #[cfg(feature = "nats")]
    Nats,
    /// W4, a closed-loop service: `--clients` threads, each owning one
    /// document, each action awaited until written, in both durability
    /// modes (`--durability` does not apply), beside the bare store driven
    /// the same way.
    Service,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Documents in W1.
    #[arg(long, default_value_t = 100)]
    docs: usize,
    /// Actions per document in W1.
    #[arg(long, default_value_t = 100)]
    actions: usize,
    /// Actions in W2 (one document, each awaited).
    #[arg(long, default_value_t = 2_000)]
    hot_actions: usize,
    /// Actions in W3 (8 submitters on one document).
    #[arg(long, default_value_t = 1_000)]
    contention_actions: usize,
    /// Operations in the raw-RocksDB baseline.
    #[arg(long, default_value_t = 20_000)]
    raw_ops: usize,
    /// Store durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Buffered)]
    durability: DurabilityArg,
    /// Reactor worker threads (default: 8 per CPU, at least 8).
    #[arg(long)]
    workers: Option<usize>,
    /// Which workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadArg::All)]
    workload: WorkloadArg,
    /// The sync workload's writer pace in actions/s (0: as fast as it
    /// can, for throughput; below that, for the delay at that load).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The sync and NATS workloads: open their reactors with
    /// `StoreOptions::low_priority_background` (flushes and compactions at
    /// the lowest CPU priority).
    #[arg(long)]
    low_priority_background: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Scale mode: W1 with `--scale-actions` actions per document at each
    /// of `--scale-docs` document counts, each step in its own process;
    /// prints each step's figures and its ratio to the first. Steps run
    /// with default reactor options (`--workers` does not apply); a step
    /// of fewer than 100,000 actions runs up to 9 times and reports its
    /// median run.
    #[arg(long)]
    scale: bool,
    /// Document counts of the scale mode's steps.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 100_000, 1_000_000])]
    scale_docs: Vec<usize>,
    /// Actions per document in the scale mode (one job each).
    #[arg(long, default_value_t = 5)]
    scale_actions: usize,
    /// Client counts of the service workload (W4).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64, 256])]
    clients: Vec<usize>,
    /// Seconds each service-workload configuration runs.
    #[arg(long, default_value_t = 3.0)]
    service_secs: f64,
    /// Runs one scale step of this many documents in --db and prints it
    /// as JSON (what `--scale` runs in a child process).
    #[arg(long, hide = true)]
    scale_step: Option<usize>,
    /// With --scale-step: every 5 s, a JSON line on stderr with the
    /// resident set, RocksDB's memory estimates and malloc's arenas.
    #[arg(long, hide = true, requires = "scale_step")]
    trace_memory: bool,
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    cli::malloc::fix_mmap_threshold();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    cli::malloc::start_trimmer();
    let result = match &cli.command {
        Command::Demo { fresh } => cli::demo::run(&cli.db, *fresh).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => bench(&cli.db, args),
        Command::Verify { repair_view } => verify(&cli.db, *repair_view),
        Command::Inspect(args) => inspect(&cli.db, args),
        Command::Export { document } => export(&cli.db, document),
        Command::Import => import(&cli.db),
        #[cfg(feature = "grpc")]
        Command::Backup { path, remote } if remote.server.is_some() => {
            cli::sync::remote_backup(path, remote)
        }
        Command::Backup { path, .. } => backup(&cli.db, path),
        #[cfg(feature = "grpc")]
        Command::Serve(args) => cli::sync::serve(&cli.db, args),
        #[cfg(feature = "grpc")]
        Command::Sync(args) => cli::sync::sync(&cli.db, args),
        #[cfg(all(feature = "grpc", feature = "nats"))]
        Command::Audit(args) => cli::audit::run(&cli.db, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reactordb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens an existing database as its writer; a missing one is an error,
/// not a new one, and one another process holds is named as such.
fn open_existing(db: &Path, doing: &str) -> Result<OperationStore, Box<dyn std::error::Error>> {
    if !db.join("CURRENT").exists() {
        return Err(format!("no database at {}", db.display()).into());
    }
    let options = StoreOptions::default().create_if_missing(false);
    OperationStore::open(db, options).map_err(|e| held_by_another(db, doing, e))
}

/// RocksDB's lock error, said plainly: what needs the writer needs the
/// process that holds the database.
fn held_by_another(db: &Path, doing: &str, e: reactordb::Error) -> Box<dyn std::error::Error> {
    if e.to_string().contains("lock") {
        format!(
            "{} is held by another process: {doing} needs the process that owns it{}; \
             verify, inspect and export can read a database in use",
            db.display(),
            if doing == "backup" {
                " (there: OperationStore::backup; or, if it serves sync with \
                 --backup-dir, `reactordb backup NAME --server URL --token T`)"
            } else {
                ""
            }
        )
        .into()
    } else {
        e.into()
    }
}

/// Opens an existing database to read it, even while another process
/// writes it: a RocksDB secondary instance, whose own files live in a
/// temporary directory dropped with it. Writes nothing to the database.
fn open_reader(
    db: &Path,
) -> Result<(tempfile::TempDir, OperationStore), Box<dyn std::error::Error>> {
    if !db.join("CURRENT").exists() {
        return Err(format!("no database at {}", db.display()).into());
    }
    let secondary = tempfile::tempdir()?;
    let store = OperationStore::open_secondary(db, secondary.path(), StoreOptions::default())?;
    // The directory first: declared first by the caller, it drops last,
    // after the instance that writes its log there has closed.
    Ok((secondary, store))
}

fn verify(db: &Path, repair_view: bool) -> CliResult {
    // Only a repair writes; a check reads, even a database in use.
    let (_secondary, store) = if repair_view {
        (None, open_existing(db, "verify --repair-view")?)
    } else {
        let (secondary, store) = open_reader(db)?;
        (Some(secondary), store)
    };
    // The chains first: a view cannot be rebuilt from damaged operations,
    // and its rebuild would stop at the damage with a bare `Corrupt`
    // instead of the finding named below.
    let chains = store.verify_all()?;
    if let Some(broken) = chains.first_broken {
        println!(
            "BROKEN chain: {} at index {} ({:?})",
            broken.unit, broken.index, broken.fault
        );
        return Ok(ExitCode::from(2));
    }
    if repair_view {
        reactordb::rebuild_view(&store)?;
        // Opening a view folds its data again, from ordinal 1 (models are
        // needed only for the snapshots of their scopes).
        let bus = reactordb::EventBus::new();
        let view = reactordb::DocumentView::open(
            store.clone(),
            &bus,
            reactordb::ModelRegistry::with_examples(),
            reactordb::ViewOptions::default(),
        )?;
        drop(view);
        println!("view rebuilt from the operations");
    }
    let snapshots = reactordb::verify_snapshots(&store)?;
    if let Some((unit, revision)) = snapshots.first_broken {
        println!("BROKEN snapshot: {unit} at revision {revision}");
        return Ok(ExitCode::from(2));
    }
    let histories = reactordb::verify_histories(&store)?;
    if let Some(unit) = histories.first_diverged {
        println!("BROKEN history: {unit} (its raw log is not the merge of its operations)");
        return Ok(ExitCode::from(2));
    }
    let view = reactordb::verify_view(&store)?;
    if let Some((fault, place)) = view.first_fault {
        println!("BROKEN view data: {fault:?} at {place} (run verify --repair-view)");
        return Ok(ExitCode::from(2));
    }
    println!(
        "clean: {} streams, {} operations, {} snapshots",
        chains.streams_checked, chains.operations_checked, snapshots.snapshots_checked
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(db: &Path, args: &InspectArgs) -> CliResult {
    let (_secondary, store) = open_reader(db)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if args.document_type.is_some() || args.json {
        return inspect_view(store, args, &mut out);
    }
    let Some(document) = &args.document else {
        // Every document (with its type and stream count), paged: the
        // streams are visited one at a time and only the page's documents
        // kept, so a store of millions lists in flat memory.
        let (from, limit) = (args.from as usize, args.limit.max(1));
        let mut documents: Vec<(String, String, usize)> = Vec::with_capacity(limit + 1);
        let mut seen = 0usize;
        let mut last: Option<String> = None;
        store.visit_streams(|s| {
            if last.as_deref() != Some(s.unit.document_id.as_str()) {
                last = Some(s.unit.document_id.to_string());
                seen += 1;
                if seen > from + limit {
                    return false; // one past the page: there is more
                }
                if seen > from {
                    documents.push((
                        s.unit.document_id.to_string(),
                        s.document_type.to_string(),
                        0,
                    ));
                }
            }
            if let Some((_, _, streams)) = documents.last_mut().filter(|_| seen > from) {
                *streams += 1;
            }
            true
        })?;
        for (id, document_type, streams) in &documents {
            writeln!(out, "{id}\t{document_type}\t{streams} streams")?;
        }
        if seen > from + limit {
            writeln!(out, "# more: --from {}", from + limit)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let document = DocumentId::new(document.as_str())?;
    let streams = store.streams(&document)?;
    if streams.is_empty() {
        return Err(format!("unknown document {document}").into());
    }
    match &args.scope {
        None => {
            for s in streams {
                writeln!(
                    out,
                    "{}\t{}\trevision {}\thead {}",
                    s.unit, s.document_type, s.revision, s.head_hash
                )?;
            }
        }
        Some(scope) => {
            let unit = SyncUnit::new(
                document,
                Scope::new(scope.as_str())?,
                Branch::new(args.branch.as_str())?,
            );
            let page = store.get_since(
                &unit,
                Revision(args.from),
                &OperationFilter::default(),
                Paging::first(args.limit.max(1)),
            )?;
            for op in page.items {
                writeln!(out, "{}", serde_json::to_string(&op)?)?;
            }
            if let Some(next) = page.next_cursor {
                writeln!(out, "# more: --from {}", next.0)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The view-backed parts of `inspect`: documents by type, a document as
/// JSON (states rendered by the example models where they know the type).
fn inspect_view(store: OperationStore, args: &InspectArgs, out: &mut impl Write) -> CliResult {
    let registry = reactordb::ModelRegistry::with_examples();
    let view = reactordb::DocumentView::open_read_only(
        store.clone(),
        registry.clone(),
        reactordb::ViewOptions::default(),
    )?;
    if let Some(document_type) = &args.document_type {
        let document_type = reactordb::DocumentType::new(document_type.as_str())?;
        let paging = Paging::after(reactordb::Cursor(args.from), args.limit.max(1));
        let page = view.find_by_type(&document_type, paging)?;
        for id in page.items {
            writeln!(out, "{id}")?;
        }
        if let Some(next) = page.next_cursor {
            writeln!(out, "# more: --from {}", next.0)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(document) = &args.document else {
        return Err("--json needs a document".into());
    };
    let id = DocumentId::new(document.as_str())?;
    let filter = reactordb::ViewFilter::on(Branch::new(args.branch.as_str())?);
    let doc = match view.get(&id, &filter, None) {
        Err(reactordb::Error::DocumentNotFound { .. }) => {
            return Err(format!("unknown document {id}").into())
        }
        other => other?,
    };
    let model = registry.get(&doc.header.document_type, doc.header.model_version);
    let mut scopes = serde_json::Map::new();
    for (scope, state) in &doc.scopes {
        let rendered = if *scope == Scope::document() {
            serde_json::from_slice(&state.state).ok()
        } else {
            model.as_ref().and_then(|m| m.state_to_json(&state.state))
        };
        scopes.insert(
            scope.to_string(),
            serde_json::json!({
                "revision": state.revision.get(),
                "state_hash": state.state_hash.to_string(),
                "state": rendered.unwrap_or_else(|| serde_json::Value::from(format!("{} bytes", state.state.len()))),
            }),
        );
    }
    let rendered = serde_json::json!({ "header": doc.header, "scopes": scopes });
    writeln!(out, "{}", serde_json::to_string_pretty(&rendered)?)?;
    Ok(ExitCode::SUCCESS)
}

fn export(db: &Path, document: &str) -> CliResult {
    let (_secondary, store) = open_reader(db)?;
    let document = DocumentId::new(document)?;
    let streams = store.streams(&document)?;
    if streams.is_empty() {
        return Err(format!("unknown document {document}").into());
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    for s in streams {
        let ops = store.get_since(
            &s.unit,
            Revision(0),
            &OperationFilter::default(),
            Paging::all(),
        )?;
        for operation in ops.items {
            let line = ExportLine {
                document_id: s.unit.document_id.clone(),
                document_type: s.document_type.clone(),
                scope: s.unit.scope.clone(),
                branch: s.unit.branch.clone(),
                operation,
            };
            writeln!(out, "{}", line.to_json())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn import(db: &Path) -> CliResult {
    let store = OperationStore::open(db, StoreOptions::default())
        .map_err(|e| held_by_another(db, "import", e))?;
    let mut imported = 0u64;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = ExportLine::parse(&line)
            .map_err(|e| format!("line {}: not an export line: {e}", n + 1))?;
        entry
            .apply_to(&store)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        imported += 1;
    }
    println!("imported {imported} operations");
    Ok(ExitCode::SUCCESS)
}

fn backup(db: &Path, path: &Path) -> CliResult {
    if path.exists() {
        return Err(format!("{} already exists", path.display()).into());
    }
    let store = open_existing(db, "backup")?;
    store.backup(path)?;
    println!("backup written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn bench(db: &Path, args: &BenchArgs) -> CliResult {
    let workers = args.workers.unwrap_or_else(reactordb::default_workers);
    let durability = match args.durability {
        DurabilityArg::Buffered => Durability::Buffered,
        DurabilityArg::Synced => Durability::Synced,
    };
    #[cfg(feature = "grpc")]
    let setup = cli::sync_bench::Setup {
        durability,
        workers,
        low_priority_background: args.low_priority_background,
    };
    let config = |docs, actions| WorkloadConfig {
        docs,
        actions,
        durability,
        workers,
    };
    type Run = fn(&Path, &WorkloadConfig) -> reactordb::Result<WorkloadReport>;
    let plan: Vec<(WorkloadArg, Run, WorkloadConfig)> = vec![
        (
            WorkloadArg::ManyDocs,
            workloads::many_docs,
            config(args.docs, args.actions),
        ),
        (
            WorkloadArg::HotDoc,
            workloads::hot_doc,
            config(1, args.hot_actions),
        ),
        (
            WorkloadArg::Contention,
            workloads::contention,
            config(1, args.contention_actions),
        ),
    ];
    if let Some(docs) = args.scale_step {
        cli::scale_bench::run_step(db, docs, args.scale_actions, durability, args.trace_memory)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.scale && args.workload != WorkloadArg::All {
        return Err("--scale runs W1 at each step; it takes no --workload".into());
    }
    if args.workload == WorkloadArg::Service {
        cli::service_bench::run(&args.clients, args.service_secs, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.scale {
        cli::scale_bench::run(&args.scale_docs, args.scale_actions, durability, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    #[cfg(feature = "grpc")]
    if args.workload == WorkloadArg::Sync {
        if !args.json {
            println!(
                "{:<12} {:>8} {:>10} {:>10} {:>12} {:>13} {:>13} {:>15} {:>8}",
                "channel",
                "ops",
                "wall_ms",
                "write_ms",
                "ops/s",
                "p50_delay_ms",
                "p99_delay_ms",
                "p99_written_ms",
                "untimed"
            );
        }
        for r in cli::sync_bench::run(args.docs, args.actions, args.rate, setup)? {
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{:<12} {:>8} {:>10.0} {:>10.0} {:>12.0} {:>13.2} {:>13.2} {:>15.2} {:>8}",
                    r.channel,
                    r.ops,
                    r.wall_ms,
                    r.write_ms,
                    r.ops_per_s,
                    r.p50_delay_ms,
                    r.p99_delay_ms,
                    r.p99_written_delay_ms,
                    r.untimed
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    #[cfg(feature = "nats")]
    if args.workload == WorkloadArg::Nats {
        // Unpaced, the anchor follows: the same cluster moving as many
        // messages with no reactor (the ceiling throughput is held to).
        let anchor = args.rate == 0;
        let r = cli::nats_bench::run(args.docs, args.actions, args.rate, setup, anchor)?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:>8} {:>10} {:>12} {:>13} {:>13} {:>8} {:>14} {:>9}",
                "ops",
                "wall_ms",
                "ops/s",
                "p50_delay_ms",
                "p99_delay_ms",
                "untimed",
                "anchor_msgs/s",
                "ratio"
            );
            let ratio = match anchor {
                true => format!("{:.2}", r.ops_per_s / r.anchor_msgs_per_s),
                false => "-".into(),
            };
            println!(
                "{:>8} {:>10.0} {:>12.0} {:>13.2} {:>13.2} {:>8} {:>14.0} {:>9}",
                r.ops,
                r.wall_ms,
                r.ops_per_s,
                r.p50_delay_ms,
                r.p99_delay_ms,
                r.untimed,
                r.anchor_msgs_per_s,
                ratio
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        println!(
            "{:<12} {:>6} {:>8} {:>10} {:>12} {:>9} {:>9} {:>12} {:>8} {:>12} {:>9} {:>9} {:>9}",
            "workload",
            "docs",
            "ops",
            "wall_ms",
            "ops/s",
            "p50_ms",
            "p99_ms",
            "reads/s",
            "rss_mb",
            "p99_tail_ms",
            "app/write",
            "exec_hit",
            "view_hit"
        );
    }
    let print = |r: &WorkloadReport| -> Result<(), Box<dyn std::error::Error>> {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!(
                "{:<12} {:>6} {:>8} {:>10.0} {:>12.0} {:>9.3} {:>9.3} {:>12.0} {:>8.1} {:>12.3} {:>9.1} {:>9.2} {:>9.2}",
                r.workload,
                r.docs,
                r.ops,
                r.wall_ms,
                r.ops_per_s,
                r.p50_ms,
                r.p99_ms,
                r.reads_per_s,
                r.rss_mb,
                r.p99_tail_ms,
                r.appends_per_write,
                r.executor_hit_rate,
                r.view_hit_rate
            );
            if r.jobs_failed + r.fsyncs > 0 || r.executor_hit_rate > 0.0 {
                println!(
                    "{:<12} metrics: {} failed jobs, {} fsyncs ({:.1} appends each), \
                     view lag {} ordinals, {} jobs queued, job p99 under {:.3} ms",
                    "",
                    r.jobs_failed,
                    r.fsyncs,
                    r.appends_per_fsync,
                    r.view_lag,
                    r.queued_jobs,
                    r.metrics_p99_bound_ms
                );
            }
        }
        Ok(())
    };
    for (which, run, config) in plan {
        if args.workload != WorkloadArg::All && args.workload != which {
            continue;
        }
        let dir = tempfile::tempdir()?;
        print(&run(dir.path(), &config)?)?;
    }
    if matches!(args.workload, WorkloadArg::All | WorkloadArg::Raw) {
        let dir = tempfile::tempdir()?;
        for r in workloads::store_vs_raw(dir.path(), args.raw_ops, durability)
            .map_err(|e| e.to_string())?
        {
            print(&r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
