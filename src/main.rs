//! The `reactordb` command line. This release has `bench`; `demo`,
//! `inspect`, `verify`, `export`/`import` and `backup` come with the CLI
//! issue.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use reactordb::workloads::{self, WorkloadConfig, WorkloadReport};
use reactordb::Durability;

#[derive(Parser)]
#[command(
    name = "reactordb",
    version,
    about = "An embedded document reactor on RocksDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the standard workloads on a fresh database in a temporary
    /// directory: W1 many-docs, W2 hot-doc, W3 contention.
    Bench(BenchArgs),
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
    /// Store durability.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Buffered)]
    durability: DurabilityArg,
    /// Reactor worker threads (default: 8 per CPU, at least 8).
    #[arg(long)]
    workers: Option<usize>,
    /// Which workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadArg::All)]
    workload: WorkloadArg,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reactordb: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let workers = args.workers.unwrap_or_else(reactordb::default_workers);
    let durability = match args.durability {
        DurabilityArg::Buffered => Durability::Buffered,
        DurabilityArg::Synced => Durability::Synced,
    };
    let config = |docs, actions| WorkloadConfig {
        docs,
        actions,
        durability,
        workers,
    };
    type Run = fn(&std::path::Path, &WorkloadConfig) -> reactordb::Result<WorkloadReport>;
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
    if !args.json {
        println!(
            "{:<12} {:>6} {:>8} {:>10} {:>12} {:>9} {:>9} {:>12} {:>8}",
            "workload", "docs", "ops", "wall_ms", "ops/s", "p50_ms", "p99_ms", "reads/s", "rss_mb"
        );
    }
    for (which, run, config) in plan {
        if args.workload != WorkloadArg::All && args.workload != which {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let r = run(dir.path(), &config)?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{:<12} {:>6} {:>8} {:>10.0} {:>12.0} {:>9.3} {:>9.3} {:>12.0} {:>8.1}",
                r.workload,
                r.docs,
                r.ops,
                r.wall_ms,
                r.ops_per_s,
                r.p50_ms,
                r.p99_ms,
                r.reads_per_s,
                r.rss_mb
            );
        }
    }
    Ok(())
}
