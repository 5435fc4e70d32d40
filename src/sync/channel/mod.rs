//! Channels: how a session's frames travel. One trait; an in-process pair,
//! a seeded fault-injecting wrapper, and (feature `grpc`) gRPC over TCP.
//! A channel moves opaque frames and says when it is gone; everything
//! about their meaning (checksums, order, resends) is the session's.

mod faulty;
#[cfg(feature = "grpc")]
pub(crate) mod grpc;
mod memory;

use std::time::Duration;

pub use faulty::{FaultPlan, FaultyChannel};
pub use memory::{in_process_pair, InProcessChannel};

/// The other end is gone: the session ends and may be started again on a
/// new channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sync channel is closed")]
pub struct ChannelClosed;

/// A bidirectional, frame-oriented connection to one peer. Frames may be
/// lost, duplicated, reordered or damaged by a channel: sessions are built
/// for it. `Send`, so a session runs it on its own thread.
pub trait Channel: Send {
    /// Sends one frame.
    fn send(&mut self, frame: Vec<u8>) -> Result<(), ChannelClosed>;
    /// Waits up to `timeout` for the next frame (`Ok(None)`: none came).
    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, ChannelClosed>;
}

impl<C: Channel + ?Sized> Channel for Box<C> {
    fn send(&mut self, frame: Vec<u8>) -> Result<(), ChannelClosed> {
        (**self).send(frame)
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, ChannelClosed> {
        (**self).recv(timeout)
    }
}
