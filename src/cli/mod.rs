//! Subcommands of the `reactordb` binary that need more than a screen.

pub(crate) mod demo;
#[cfg(feature = "grpc")]
pub(crate) mod sync;
#[cfg(feature = "grpc")]
pub(crate) mod sync_bench;
