//! RDMA through rdma-core (libibverbs and librdmacm): memory regions from
//! host memory or any dma-buf, RC queue pairs connected through RDMA CM,
//! and streams of RDMA WRITEs or READs between them.
//!
//! - [`ProtectionDomain`]: on the RDMA device that RDMA CM picked for an
//!   address (never "the first device");
//! - [`MemoryRegion`]: `ibv_reg_mr` of a host buffer, or `ibv_reg_dmabuf_mr`
//!   of a dma-buf it keeps open; a refused dma-buf names the device's driver
//!   and Linux 7.2's acceptance table (`peerdma_host::importers`, which also
//!   reads the driver from sysfs);
//! - [`Resolved`] → [`QueuePair`] (active side), [`Listener`] →
//!   [`ConnectRequest`] → [`QueuePair`] (passive side), with private data
//!   both ways;
//! - [`stream::write`] / [`stream::read`]: a span over one or more QPs with
//!   a bounded number of work requests in flight; error completions become
//!   [`RdmaError::Completion`] naming the status and its usual cause.
//!
//! Bindings: `sys` binds Debian's rdma-core by hand (the `sideway` crate
//! builds but has no connection private data or reject; see docs/rdma.md).

mod cm;
mod completion;
mod error;
mod mr;
mod qp;
pub mod stream;
// The event-type list is bound whole, used or not.
#[allow(dead_code)]
mod sys;

pub use cm::{deadline, ConnectRequest, Listener, Resolved, DEFAULT_TIMEOUT};
pub use completion::{Operation, WcStatus};
pub use error::{RdmaError, Result};
pub use mr::{Access, MemoryRegion, ProtectionDomain, RemoteMr};
pub use qp::{Completion, QpOptions, QueuePair};
pub use stream::{Span, StreamOptions};
