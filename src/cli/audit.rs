//! `audit --nats`: compares the local replica with the audit records every
//! other relay published on the stream's bucket, and names each stream
//! where one side is behind or they diverged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use reactordb::{NatsOptions, NatsTransport, Standing, SyncManager, SyncOptions};

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// The exit code when the audit found a stream out of sync (1 is an error).
const FINDINGS: u8 = 2;

/// How to reach the cluster: shared by `sync --nats` and `audit`.
#[derive(clap::Args)]
pub(crate) struct NatsArgs {
    /// NATS servers, comma-separated (nats://host:port, or tls:// with
    /// --ca). --token, or --user and --password, authenticate.
    #[arg(long, value_delimiter = ',')]
    pub(crate) nats: Vec<String>,
    /// NATS user (with --password).
    #[arg(long, requires = "password", conflicts_with = "token")]
    user: Option<String>,
    /// NATS password (with --user).
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// The JetStream stream.
    #[arg(long, default_value = "REACTORDB")]
    stream: String,
    /// Copies of the stream the cluster keeps, when this creates it.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Load these partitions only (two hex digits each, comma-separated;
    /// default: all). `audit` then compares their streams only.
    #[arg(long, value_delimiter = ',', value_parser = parse_partition)]
    partitions: Vec<u8>,
}

/// A partition from its two hex digits.
fn parse_partition(hex: &str) -> Result<u8, String> {
    match u8::from_str_radix(hex, 16) {
        Ok(partition) if hex.len() == 2 => Ok(partition),
        _ => Err(format!(
            "`{hex}` is not a partition: two hex digits, 00 to ff"
        )),
    }
}

impl NatsArgs {
    /// The relay's options; `token` and `ca` are the command's own (`sync`
    /// shares them with --peer).
    pub(crate) fn options(&self, token: Option<&String>, ca: Option<&PathBuf>) -> NatsOptions {
        let mut options = NatsOptions::new(self.nats.clone())
            .stream(self.stream.clone())
            .replicas(self.replicas);
        if let Some(token) = token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_password(user.clone(), password.clone());
        }
        if let Some(ca) = ca {
            options = options.ca_file(ca.clone());
        }
        if !self.partitions.is_empty() {
            options = options.partitions(self.partitions.iter().copied());
        }
        options
    }
}

/// `audit`'s arguments.
#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The NATS server token.
    #[arg(long)]
    token: Option<String>,
    /// PEM of the authority that signed the servers' certificates.
    #[arg(long)]
    ca: Option<PathBuf>,
}

fn standing(standing: Standing) -> &'static str {
    match standing {
        Standing::InSync => "in sync",
        Standing::Behind => "behind",
        Standing::Ahead => "peer behind",
        Standing::EachBehind => "each behind",
        Standing::Diverged => "diverged",
        _ => "unknown",
    }
}

pub(crate) fn run(db: &Path, args: &AuditArgs) -> CliResult {
    if args.nats.nats.is_empty() {
        return Err("audit needs --nats URL[,URL…]".into());
    }
    let options = args.nats.options(args.token.as_ref(), args.ca.as_ref());
    let reactor = super::sync::open(db)?;
    let sync = Arc::new(SyncManager::open(reactor, SyncOptions::new())?);
    let report = NatsTransport::new()?.audit(&sync, &options)?;
    println!(
        "audit of {} ({}) against {} peer(s) on {}: {} comparison(s)",
        sync.name(),
        sync.node_id(),
        report.peers.len(),
        options.stream,
        report.entries.len()
    );
    for entry in report.findings() {
        let unit = &entry.unit;
        println!(
            "{}: {}/{}/{} against {} ({}): ours {} operations, theirs {} (their record {} s old)",
            standing(entry.standing),
            unit.document_id,
            unit.scope,
            unit.branch,
            entry.peer.1,
            entry.peer.0,
            entry.operations.0,
            entry.operations.1,
            entry.age_ms / 1000
        );
    }
    for key in &report.unreadable {
        println!("unreadable record: {key}");
    }
    if report.is_clean() {
        println!("clean");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(FINDINGS))
    }
}
