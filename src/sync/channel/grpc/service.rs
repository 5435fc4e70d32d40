//! The server side: the `Sync` service, written by hand (what `tonic-build`
//! would generate for one bidirectional streaming method and one unary
//! one). Each accepted stream becomes a [`GrpcChannel`] handed to
//! `SyncManager::accept`; a `Backup` call checkpoints the database this
//! process owns into the configured backup directory.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

use super::bridge::{self, GrpcChannel};
use super::codec::FrameCodec;
use super::{BACKUP_PATH, MAX_MESSAGE, PATH};
use crate::sync::SyncManager;

/// The service: a manager to accept sessions into, and the token clients
/// must show.
#[derive(Clone)]
pub(super) struct SyncService {
    manager: Arc<SyncManager>,
    token: Arc<str>,
    backup_dir: Option<Arc<std::path::Path>>,
    /// One backup at a time: the check that a name is free and the
    /// checkpoint that takes it happen under it.
    backing_up: Arc<parking_lot::Mutex<()>>,
}

impl SyncService {
    pub(super) fn new(
        manager: Arc<SyncManager>,
        token: String,
        backup_dir: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            manager,
            token: token.into(),
            backup_dir: backup_dir.map(Into::into),
            backing_up: Arc::default(),
        }
    }

    /// Admits a request that shows the token, refuses any other.
    fn admit(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compare in constant time: the token is a secret.
        let admitted = presented
            .is_some_and(|p| blake3::hash(p.as_bytes()) == blake3::hash(self.token.as_bytes()));
        if admitted {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "wrong or missing sync token (pass the server's --token)",
            ))
        }
    }
}

/// Whether `name` may name a backup: one path component of letters,
/// digits, `-`, `_` and `.`, not starting with `.` (so never `..`), at most
/// 128 bytes, and not ending in `.tmp` (RocksDB stages a checkpoint in
/// `NAME.tmp` and clears whatever is there first).
fn backup_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.ends_with(".tmp")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

struct BackupCall(SyncService);

impl UnaryService<Vec<u8>> for BackupCall {
    type Response = Vec<u8>;
    type Future = BoxFuture<Response<Vec<u8>>, Status>;

    fn call(&mut self, request: Request<Vec<u8>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            service.admit(request.metadata())?;
            let Some(dir) = service.backup_dir.clone() else {
                return Err(Status::failed_precondition(
                    "this server takes no backups (serve it with a backup directory)",
                ));
            };
            let name = String::from_utf8(request.into_inner())
                .ok()
                .filter(|name| backup_name_ok(name))
                .ok_or_else(|| {
                    Status::invalid_argument(
                        "a backup name is one path component of letters, digits, '-', '_', '.'",
                    )
                })?;
            let target = dir.join(&name);
            let staging = dir.join(format!("{name}.tmp"));
            let store = service.manager.reactor().store().clone();
            let (written, lock) = (target.clone(), Arc::clone(&service.backing_up));
            tokio::task::spawn_blocking(move || {
                let _one_at_a_time = lock.lock();
                if written.exists() || staging.exists() {
                    return Err(Status::already_exists(format!("backup {name} exists")));
                }
                store
                    .backup(&written)
                    .map_err(|e| Status::internal(format!("the backup failed: {e}")))
            })
            .await
            .map_err(|_| Status::internal("the backup task failed"))??;
            tracing::info!(path = %target.display(), "backup written on request");
            Ok(Response::new(target.display().to_string().into_bytes()))
        })
    }
}

impl NamedService for SyncService {
    const NAME: &'static str = "reactordb.sync.Sync";
}

/// Outbound frames of one session, as the response stream.
type Outbound =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Vec<u8>, Status>> + Send + 'static>>;

struct Session(SyncService);

impl StreamingService<Vec<u8>> for Session {
    type Response = Vec<u8>;
    type ResponseStream = Outbound;
    type Future = BoxFuture<Response<Outbound>, Status>;

    fn call(&mut self, request: Request<Streaming<Vec<u8>>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            service.admit(request.metadata())?;
            let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(bridge::QUEUE);
            let (in_tx, in_rx) = flume::bounded(bridge::QUEUE);
            tokio::spawn(bridge::pump_inbound(request.into_inner(), in_tx));
            let channel = GrpcChannel {
                outgoing: out_tx,
                incoming: in_rx,
            };
            // The session runs on a thread of its own; the handle is
            // detached: the session ends when the stream does.
            let manager = service.manager.clone();
            tokio::task::spawn_blocking(move || {
                let session = manager.accept(channel);
                if let Err(e) = session.join() {
                    tracing::warn!(error = %e, "sync session ended");
                }
            });
            let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx).map(Ok);
            Ok(Response::new(Box::pin(stream) as Outbound))
        })
    }
}

impl<B> Service<http::Request<B>> for SyncService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let grpc = || {
            Grpc::new(FrameCodec)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE)
        };
        match request.uri().path() {
            PATH => {
                let session = Session(self.clone());
                Box::pin(async move { Ok(grpc().streaming(session, request).await) })
            }
            BACKUP_PATH => {
                let call = BackupCall(self.clone());
                Box::pin(async move { Ok(grpc().unary(call, request).await) })
            }
            other => {
                let status = Status::unimplemented(format!("no method {other}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
