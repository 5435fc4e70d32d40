//! The server side: the `Sync` service, written by hand (what `tonic-build`
//! would generate for one bidirectional streaming method). Each accepted
//! stream becomes a [`GrpcChannel`] handed to `SyncManager::accept`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::bridge::{self, GrpcChannel};
use super::codec::FrameCodec;
use super::{MAX_MESSAGE, PATH};
use crate::sync::SyncManager;

/// The service: a manager to accept sessions into, and the token clients
/// must show.
#[derive(Clone)]
pub(super) struct SyncService {
    manager: Arc<SyncManager>,
    token: Arc<str>,
}

impl SyncService {
    pub(super) fn new(manager: Arc<SyncManager>, token: String) -> Self {
        Self {
            manager,
            token: token.into(),
        }
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
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // Compare in constant time: the token is a secret.
            let admitted = presented.is_some_and(|p| {
                blake3::hash(p.as_bytes()) == blake3::hash(service.token.as_bytes())
            });
            if !admitted {
                return Err(Status::unauthenticated(
                    "wrong or missing sync token (pass the server's --token)",
                ));
            }
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
        if request.uri().path() != PATH {
            let status = Status::unimplemented(format!("no method {}", request.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let session = Session(self.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(FrameCodec)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            Ok(grpc.streaming(session, request).await)
        })
    }
}
