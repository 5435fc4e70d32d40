//! A [`Channel`] over one gRPC stream: the session's thread sends and
//! receives through bounded queues; tasks on the transport's runtime move
//! frames between the queues and the stream.

use std::time::Duration;

use tokio::sync::mpsc;

use super::super::{Channel, ChannelClosed};

/// Frames queued toward the network per stream: a slow peer makes the
/// session's `send` wait, never grow a queue.
pub(super) const QUEUE: usize = 64;

/// One end of a gRPC stream, as a session sees it.
pub struct GrpcChannel {
    pub(super) outgoing: mpsc::Sender<Vec<u8>>,
    pub(super) incoming: flume::Receiver<Vec<u8>>,
}

impl Channel for GrpcChannel {
    fn send(&mut self, frame: Vec<u8>) -> Result<(), ChannelClosed> {
        self.outgoing
            .blocking_send(frame)
            .map_err(|_| ChannelClosed)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, ChannelClosed> {
        match self.incoming.recv_timeout(timeout) {
            Ok(frame) => Ok(Some(frame)),
            Err(flume::RecvTimeoutError::Timeout) => Ok(None),
            Err(flume::RecvTimeoutError::Disconnected) => Err(ChannelClosed),
        }
    }
}

/// Feeds frames of an inbound gRPC stream to `tx` until either side ends.
pub(super) async fn pump_inbound(
    mut inbound: tonic::Streaming<Vec<u8>>,
    tx: flume::Sender<Vec<u8>>,
) {
    while let Ok(Some(frame)) = inbound.message().await {
        if tx.send_async(frame).await.is_err() {
            break;
        }
    }
}
