//! `serve`, `sync` and `sync status`: a database syncing with peers over
//! gRPC, with a live line of what moved.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use reactordb::{
    DialOptions, Durability, GrpcTransport, ModelRegistry, Reactor, RemoteOptions, RemoteStatus,
    ServeOptions, SyncManager, SyncOptions,
};

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// `serve`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen, e.g. 127.0.0.1:7700 (port 0 picks one; the first
    /// line printed names it).
    #[arg(long)]
    listen: SocketAddr,
    /// Clients must present this token.
    #[arg(long)]
    token: String,
    /// PEM certificate chain: serve TLS (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Take backups on request (`reactordb backup NAME --server URL`),
    /// each in a new directory under this one.
    #[arg(long)]
    backup_dir: Option<PathBuf>,
}

/// `backup --server`'s arguments: ask a running server for a backup.
#[derive(clap::Args)]
pub(crate) struct RemoteBackupArgs {
    /// The server, e.g. http://127.0.0.1:7700 (https:// with --ca). The
    /// backup's PATH is then a name under the server's --backup-dir.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// The server's token.
    #[arg(long, requires = "server")]
    token: Option<String>,
    /// PEM of the CA that signed the server's certificate (TLS).
    #[arg(long, requires = "server")]
    ca: Option<PathBuf>,
    /// The name on the server's certificate (default: localhost).
    #[arg(long, default_value = "localhost")]
    domain: String,
}

/// `sync`'s arguments.
#[derive(clap::Args)]
pub(crate) struct SyncArgs {
    #[command(subcommand)]
    status: Option<SyncCommand>,
    /// The server, e.g. http://127.0.0.1:7700 (https:// with --ca).
    #[arg(long)]
    peer: Option<String>,
    /// The server's token.
    #[arg(long)]
    token: Option<String>,
    /// Our name for the server (default: its address).
    #[arg(long)]
    remote: Option<String>,
    /// PEM of the authority that signed the server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The name on the server's certificate (default: localhost).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Relay through a NATS JetStream cluster instead of a peer (--nats
    /// URL[,URL…]; --token, or --user and --password, authenticate).
    #[cfg(feature = "nats")]
    #[command(flatten)]
    nats: super::audit::NatsArgs,
}

#[derive(clap::Subcommand)]
enum SyncCommand {
    /// Prints every remote: cursors, lag, dead letters, last error.
    Status,
}

pub(crate) fn open(db: &Path) -> Result<Arc<Reactor>, Box<dyn std::error::Error>> {
    Ok(Arc::new(
        Reactor::builder(db)
            .durability(Durability::Buffered)
            .registry(ModelRegistry::with_examples())
            .open()?,
    ))
}

fn line(remote: &RemoteStatus) -> String {
    format!(
        "{}: {}, sent {}, received {}, lag {}, dead letters {}{}",
        remote.name,
        if remote.connected {
            "connected"
        } else {
            "disconnected"
        },
        remote.sent_operations,
        remote.received_operations,
        remote.lag,
        remote.dead_letters,
        remote
            .last_error
            .as_deref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    )
}

/// Prints a line per remote whenever it changes, until `done` says stop.
fn live(sync: &SyncManager, mut done: impl FnMut() -> bool) -> Result<(), reactordb::Error> {
    let mut last = Vec::new();
    while !done() {
        let lines: Vec<String> = sync.remotes()?.iter().map(line).collect();
        if lines != last {
            for l in &lines {
                println!("{l}");
            }
            last = lines;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

pub(crate) fn serve(db: &Path, args: &ServeArgs) -> CliResult {
    let reactor = open(db)?;
    let sync = Arc::new(SyncManager::open(
        reactor,
        SyncOptions::new().accept_new_remotes(true),
    )?);
    let mut options = ServeOptions::token(args.token.clone());
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        options = options.tls(std::fs::read(cert)?, std::fs::read(key)?);
    }
    if let Some(dir) = &args.backup_dir {
        std::fs::create_dir_all(dir)?;
        options = options.backup_dir(dir.clone());
    }
    let transport = GrpcTransport::new()?;
    let server = transport.serve(sync.clone(), args.listen, options)?;
    println!("listening on {} as {}", server.local_addr(), sync.name());
    live(&sync, || false)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn sync(db: &Path, args: &SyncArgs) -> CliResult {
    if args.status.is_some() {
        return status(db);
    }
    #[cfg(feature = "nats")]
    if !args.nats.nats.is_empty() {
        if args.peer.is_some() {
            return Err("sync takes --peer or --nats, not both".into());
        }
        return sync_nats(db, args);
    }
    let (Some(peer), Some(token)) = (&args.peer, &args.token) else {
        return Err("sync needs --peer and --token (or --nats)".into());
    };
    let reactor = open(db)?;
    let sync = Arc::new(SyncManager::open(reactor, SyncOptions::new())?);
    let remote = args.remote.clone().unwrap_or_else(|| {
        peer.split("://")
            .nth(1)
            .unwrap_or(peer)
            .trim_end_matches('/')
            .to_owned()
    });
    if !sync.remotes()?.iter().any(|r| r.name == remote) {
        sync.add_remote(&remote, RemoteOptions::new())?;
    }
    let mut options = DialOptions::token(token.clone());
    if let Some(ca) = &args.ca {
        options = options.tls(std::fs::read(ca)?, args.domain.clone());
    }
    let transport = GrpcTransport::new()?;
    let session = transport.keep_synced(sync.clone(), &remote, peer, options)?;
    println!("syncing {} with {remote} at {peer}", sync.name());
    live(&sync, || session.is_finished())?;
    session.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// `sync --nats`: relays through the cluster until interrupted, with the
/// same live line as peer sync.
#[cfg(feature = "nats")]
fn sync_nats(db: &Path, args: &SyncArgs) -> CliResult {
    let options = args.nats.options(args.token.as_ref(), args.ca.as_ref());
    let reactor = open(db)?;
    let sync = Arc::new(SyncManager::open(reactor, SyncOptions::new())?);
    let transport = reactordb::NatsTransport::new()?;
    let remote = options.remote_name();
    let relay = transport.relay(sync.clone(), options)?;
    println!(
        "syncing {} through {remote} at {}",
        sync.name(),
        args.nats.nats.join(",")
    );
    live(&sync, || relay.is_finished())?;
    relay.stop()?;
    Ok(ExitCode::SUCCESS)
}

fn status(db: &Path) -> CliResult {
    let reactor = open(db)?;
    let sync = SyncManager::open(reactor, SyncOptions::new())?;
    println!("this node: {}", sync.name());
    for remote in sync.remotes()? {
        println!(
            "{} (outbox cursor {}, inbox cursor {})",
            line(&remote),
            remote.outbox_cursor,
            remote.inbox_cursor
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup NAME --server URL`: the server that owns its database writes the
/// backup under its `--backup-dir`.
pub(crate) fn remote_backup(name: &std::path::Path, args: &RemoteBackupArgs) -> CliResult {
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        return Err("backup --server needs --token".into());
    };
    let name = name
        .to_str()
        .ok_or("a backup name must be UTF-8 (a name under the server's --backup-dir)")?;
    let mut options = DialOptions::token(token.clone());
    if let Some(ca) = &args.ca {
        options = options.tls(std::fs::read(ca)?, args.domain.clone());
    }
    let path = GrpcTransport::new()?.backup(server, &options, name)?;
    println!("backup written by the server to {}", path.display());
    Ok(ExitCode::SUCCESS)
}
