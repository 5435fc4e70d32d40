//! The gRPC transport (feature `grpc`): one bidirectional stream per
//! session, `/reactordb.sync.Sync/Session`, each message one session frame.
//! A token in the `authorization` metadata admits a peer; TLS (rustls on
//! the ring provider) when a certificate is given. The tokio runtime lives
//! here, inside the transport: the engine's API stays synchronous (an async
//! caller wraps these calls in `spawn_blocking`).

mod bridge;
mod codec;
mod service;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

pub use bridge::GrpcChannel;

use super::super::SyncManager;
use crate::error::{Error, Result};

const PATH: &str = "/reactordb.sync.Sync/Session";
/// The unary method that asks a server to back up its database.
const BACKUP_PATH: &str = "/reactordb.sync.Sync/Backup";
/// The largest message either side accepts: a frame's largest payload and
/// its header and checksum.
const MAX_MESSAGE: usize = crate::sync::wire::MAX_PAYLOAD + 64;

fn transport_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Transport {
        reason: format!("{what}: {e}"),
    }
}

/// How a client reaches a server.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct DialOptions {
    /// The server's token.
    pub token: String,
    /// PEM of the certificate authority that signed the server's
    /// certificate (with an `https://` URL).
    pub ca_pem: Option<Vec<u8>>,
    /// The name the server's certificate is for (default: the URL's host).
    pub domain: Option<String>,
}

impl DialOptions {
    /// Plain connection with this token.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            ..Self::default()
        }
    }
    /// TLS, trusting this certificate authority for this name.
    pub fn tls(mut self, ca_pem: Vec<u8>, domain: impl Into<String>) -> Self {
        self.ca_pem = Some(ca_pem);
        self.domain = Some(domain.into());
        self
    }
}

/// How a server admits clients.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Clients must present this token.
    pub token: String,
    /// PEM of the server's certificate chain and private key: TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Where clients may ask for backups ([`GrpcTransport::backup`]): each
    /// is a checkpoint in a new directory under this one. `None`: the
    /// server takes none.
    pub backup_dir: Option<std::path::PathBuf>,
}

impl ServeOptions {
    /// Plain connections, this token.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            tls: None,
            backup_dir: None,
        }
    }

    /// Takes backups on request, each in a new directory under `dir`.
    pub fn backup_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.backup_dir = Some(dir.into());
        self
    }
    /// TLS with this certificate chain and key (PEM).
    pub fn tls(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls = Some((cert_pem, key_pem));
        self
    }
}

/// The gRPC transport: owns the runtime its connections run on. Cheap to
/// share (`Arc`); dropping it stops its servers and connections.
pub struct GrpcTransport {
    runtime: tokio::runtime::Runtime,
}

impl GrpcTransport {
    /// A transport with a small runtime of its own.
    pub fn new() -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("reactordb-grpc")
            .enable_all()
            .build()
            .map_err(|e| transport_error("starting its runtime", e))?;
        Ok(Arc::new(Self { runtime }))
    }

    /// Serves sync sessions for `manager` on `listen` (port 0 picks a free
    /// port; see [`GrpcServer::local_addr`]). Each client's session is
    /// `manager.accept`ed: its remote is the one its hello names.
    pub fn serve(
        &self,
        manager: Arc<SyncManager>,
        listen: SocketAddr,
        options: ServeOptions,
    ) -> Result<GrpcServer> {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .map_err(|e| transport_error(&format!("listening on {listen}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| transport_error("reading the listening address", e))?;
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key)) = &options.tls {
            builder = builder
                .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
                .map_err(|e| transport_error("the server's TLS configuration", e))?;
        }
        let service = service::SyncService::new(manager, options.token, options.backup_dir);
        let (stop, stopped) = oneshot::channel::<()>();
        // Frames are small and a session waits on each ack: Nagle's
        // algorithm would hold them for the peer's delayed ACK (tens of
        // ms). Serving our own listener, tonic leaves the socket as is.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |accepted| {
                accepted.inspect(|stream| {
                    let _ = stream.set_nodelay(true);
                })
            },
        );
        let router = builder.add_service(service);
        let task = self.runtime.spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(GrpcServer {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Opens one session stream to the server at `url` (`http://host:port`,
    /// or `https://` with [`DialOptions::tls`]). A refused token is
    /// [`Error::SyncRefused`].
    pub fn dial(&self, url: &str, options: &DialOptions) -> Result<GrpcChannel> {
        self.runtime.block_on(dial(url, options))
    }

    /// Asks the server at `url` to back up its database (a RocksDB
    /// checkpoint, taken by the process that owns it) into a new directory
    /// `name` under its [`ServeOptions::backup_dir`]; returns that
    /// directory's path on the server's machine. `name` is one path
    /// component of letters, digits, `-`, `_` and `.` (not starting with
    /// `.`), and must not exist yet. A wrong token is
    /// [`Error::SyncRefused`]; a server without a backup directory, a bad
    /// or taken name, or a failed checkpoint is [`Error::Transport`] with
    /// the server's reason.
    pub fn backup(
        &self,
        url: &str,
        options: &DialOptions,
        name: &str,
    ) -> Result<std::path::PathBuf> {
        self.runtime.block_on(async {
            let mut grpc = connect(url, options).await?;
            let mut request = tonic::Request::new(name.as_bytes().to_vec());
            request
                .metadata_mut()
                .insert("authorization", bearer(&options.token)?);
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(BACKUP_PATH);
            let response = grpc
                .unary(request, path, codec::FrameCodec)
                .await
                .map_err(|status| refusal(url, "asking for a backup", status))?;
            String::from_utf8(response.into_inner())
                .map(std::path::PathBuf::from)
                .map_err(|_| transport_error("reading the backup's path", "not UTF-8"))
        })
    }

    /// Keeps a session with the known remote `remote` of `manager` running
    /// over connections to `url`, reconnecting with backoff (100 ms doubling
    /// to 5 s) whenever one ends, until the handle is dropped or the peer
    /// refuses (a wrong token, another protocol): that ends it with the
    /// refusal.
    pub fn keep_synced(
        self: &Arc<Self>,
        manager: Arc<SyncManager>,
        remote: &str,
        url: &str,
        options: DialOptions,
    ) -> Result<Reconnecting> {
        manager.remote_exists(remote)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (transport, remote, url) = (self.clone(), remote.to_owned(), url.to_owned());
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("reactordb-sync-dial".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(100);
                while !stopping.load(Ordering::Acquire) {
                    match transport.dial(&url, &options) {
                        Ok(channel) => {
                            backoff = Duration::from_millis(100);
                            let session = manager.attach(&remote, channel)?;
                            while !session.is_finished() && !stopping.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            match session.stop() {
                                Err(e @ Error::SyncRefused { .. }) => return Err(e),
                                Err(e) => tracing::warn!(%remote, error = %e, "sync session ended"),
                                Ok(()) => {}
                            }
                        }
                        Err(e @ Error::SyncRefused { .. }) => return Err(e),
                        Err(e) => tracing::debug!(%url, error = %e, "sync dial failed"),
                    }
                    let mut slept = Duration::ZERO;
                    while slept < backoff && !stopping.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(20));
                        slept += Duration::from_millis(20);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Ok(())
            })
            .map_err(|e| transport_error("spawning the reconnect thread", e))?;
        Ok(Reconnecting {
            stop,
            thread: Some(thread),
        })
    }
}

/// A connection to the server at `url`, ready for calls.
async fn connect(
    url: &str,
    options: &DialOptions,
) -> Result<tonic::client::Grpc<tonic::transport::Channel>> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| transport_error(&format!("the address {url}"), e))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10));
    if let Some(ca) = &options.ca_pem {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(domain) = &options.domain {
            tls = tls.domain_name(domain.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| transport_error("the client's TLS configuration", e))?;
    }
    let connection = endpoint
        .connect()
        .await
        .map_err(|e| transport_error(&format!("connecting to {url}"), source_chain(&e)))?;
    let mut grpc = tonic::client::Grpc::new(connection)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| transport_error(&format!("connecting to {url}"), e))?;
    Ok(grpc)
}

/// The `authorization` metadata for `token`.
fn bearer(token: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::InvalidOptions {
            option: "token",
            reason: "must be printable ASCII",
        })
}

/// What a failed call means: a refused token, or the server's reason.
fn refusal(url: &str, doing: &str, status: tonic::Status) -> Error {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Error::SyncRefused {
            reason: format!("the server refused us: {}", status.message()),
        },
        _ => Error::Transport {
            reason: format!("{doing} at {url}: {}", status.message()),
        },
    }
}

async fn dial(url: &str, options: &DialOptions) -> Result<GrpcChannel> {
    let mut grpc = connect(url, options).await?;
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(bridge::QUEUE);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(out_rx));
    request
        .metadata_mut()
        .insert("authorization", bearer(&options.token)?);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(PATH);
    let response = grpc
        .streaming(request, path, codec::FrameCodec)
        .await
        .map_err(|status| refusal(url, "opening a session", status))?;
    let (in_tx, in_rx) = flume::bounded(bridge::QUEUE);
    tokio::spawn(bridge::pump_inbound(response.into_inner(), in_tx));
    Ok(GrpcChannel {
        outgoing: out_tx,
        incoming: in_rx,
    })
}

/// An error with its causes, for a human.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A running server. Dropping it stops it.
pub struct GrpcServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
}

impl GrpcServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A session kept running by [`GrpcTransport::keep_synced`]. Dropping it
/// stops it.
pub struct Reconnecting {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Reconnecting {
    /// Whether it has ended (refused, or stopped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops reconnecting and returns how it ended: `Err` when the peer
    /// refused.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(Error::WorkerPanicked)),
            None => Ok(()),
        }
    }
}

impl Drop for Reconnecting {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
