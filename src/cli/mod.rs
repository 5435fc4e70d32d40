//! Subcommands of the `reactordb` binary that need more than a screen.

#[cfg(all(feature = "grpc", feature = "nats"))]
pub(crate) mod audit;
pub(crate) mod demo;
pub(crate) mod malloc;
pub(crate) mod memory_trace;
#[cfg(feature = "nats")]
pub(crate) mod nats_anchor;
#[cfg(feature = "nats")]
pub(crate) mod nats_bench;
pub(crate) mod scale_bench;
pub(crate) mod service_bench;
#[cfg(feature = "grpc")]
pub(crate) mod sync;
#[cfg(feature = "grpc")]
pub(crate) mod sync_bench;
pub(crate) mod workloads;
