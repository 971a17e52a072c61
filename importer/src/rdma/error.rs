//! Why an RDMA step failed: each error names the device, address, status or
//! errno at fault and the fix.

use std::net::SocketAddr;

use rustix::io::Errno;

use super::completion::{Operation, WcStatus};
use peerdma_host::importers::{RdmaDriver, RDMA_ACCEPTANCE};

/// An RDMA failure.
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// A verbs or RDMA CM call failed.
    #[error("{call} failed: {errno}; fix: {fix}")]
    Call {
        /// The C function.
        call: &'static str,
        /// Its errno.
        errno: Errno,
        /// What to do.
        fix: &'static str,
    },
    /// RDMA CM found no RDMA device with a route to the address.
    #[error(
        "cannot reach {addr} over RDMA: {why}; fix: check that an RDMA device (an RDMA NIC, \
         or rxe on the netdev: `rdma link add rxe0 type rxe netdev IF`) has an IP address on \
         the route to {addr}, and that the peer is listening"
    )]
    Unreachable {
        /// The peer.
        addr: SocketAddr,
        /// What RDMA CM reported.
        why: String,
    },
    /// The peer answered with a reject.
    #[error(
        "{addr} refused the RDMA connection (reject status {status}{}); fix: {}",
        reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
        match status {
            // A consumer reject: the receiver's program refused, with its reason.
            28 => format!("as the receiver at {addr} says; check what it printed"),
            _ => format!("start the server on {addr} first, or check what it printed"),
        }
    )]
    Rejected {
        /// The peer.
        addr: SocketAddr,
        /// The CM reject status (IB reject reason; 28: a consumer reject,
        /// 8: no listener on that port).
        status: i32,
        /// The peer's reason, from the reject's private data.
        reason: Option<String>,
    },
    /// The connection ended before the exchange finished.
    #[error(
        "the peer {peer} went away {during} ({event}); the stream stopped; fix: see the \
         peer's output, then run again"
    )]
    PeerGone {
        /// The peer.
        peer: String,
        /// At which point ("mid-stream after 0x... bytes", ...).
        during: String,
        /// The CM event or completion that showed it.
        event: String,
    },
    /// Nothing happened within the time limit.
    #[error("timed out after {seconds} s waiting for {what}; fix: {fix}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        seconds: u64,
        /// What to check.
        fix: &'static str,
    },
    /// A CM event other than the one expected.
    #[error("RDMA CM reported {got} (status {status}) while waiting for {expected}")]
    UnexpectedEvent {
        /// The event awaited.
        expected: &'static str,
        /// The event that came (`rdma_event_str`).
        got: String,
        /// Its status.
        status: i32,
    },
    /// A work request completed with an error status.
    #[error(
        "{op} on {device} QP {qp_num} completed with {status}: {}{}; fix: {}",
        status.cause(),
        if *local_dmabuf && status.may_be_local_revoke() {
            "; the local MR is a dma-buf MR: its exporter revoked it (memory decode off, \
             reset) and the kernel invalidated the MR's mapping"
        } else {
            ""
        },
        fix_for(*status, *local_dmabuf)
    )]
    Completion {
        /// The operation.
        op: Operation,
        /// The status.
        status: WcStatus,
        /// The provider's vendor error.
        vendor_err: u32,
        /// The RDMA device.
        device: String,
        /// The local QP.
        qp_num: u32,
        /// Whether the local MR was a dma-buf MR (a revoke can explain the status).
        local_dmabuf: bool,
    },
    /// `ibv_reg_dmabuf_mr` failed.
    #[error(
        "{device} ({driver}) could not register the dma-buf as an MR: {errno}; {why}; {table}; \
         fix: {fix}",
        table = RDMA_ACCEPTANCE
    )]
    DmabufRefused {
        /// The RDMA device.
        device: String,
        /// Its driver.
        driver: RdmaDriver,
        /// The errno of `ibv_reg_dmabuf_mr`.
        errno: Errno,
        /// What that driver does with dma-bufs.
        why: String,
        /// What to do.
        fix: &'static str,
    },
    /// A range outside a memory region.
    #[error("{what} {offset:#x}+{len:#x} is outside the {mr_len:#x}-byte MR; fix: {fix}")]
    OutOfRange {
        /// Which side.
        what: &'static str,
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The MR's length.
        mr_len: u64,
        /// What to do.
        fix: &'static str,
    },
    /// The peer's private data or message was not this library's format.
    #[error("the peer sent {what} that this version does not understand; fix: run the same peerdma version on both sides")]
    Protocol {
        /// What arrived.
        what: String,
    },
    /// Two QPs of one stream resolved to different RDMA devices.
    #[error("the connections to {addr} resolved to different RDMA devices ({first} and {other}); fix: give the peer's address on one device")]
    DeviceMismatch {
        /// The peer.
        addr: SocketAddr,
        /// The first connection's device.
        first: String,
        /// The other's.
        other: String,
    },
}

fn fix_for(status: WcStatus, local_dmabuf: bool) -> &'static str {
    match status {
        WcStatus::REM_ACCESS_ERR => "use the rkey, address and length the peer advertised for its MR, registered with remote access",
        WcStatus::RETRY_EXC_ERR => "check that the peer is still running and reachable, then run again",
        WcStatus::WR_FLUSH_ERR => "look for the first error before this one (the QP had already failed)",
        s if s.may_be_local_revoke() && local_dmabuf => "once the exporter has restored the BAR (decode on, reset done), register the dma-buf again and rerun",
        WcStatus::LOC_PROT_ERR | WcStatus::LOC_ACCESS_ERR => "post only ranges inside a registered MR with the access the operation needs",
        _ => "see the status's cause; rerun after fixing the peer or the request",
    }
}

/// The errno of the last failed libc-style call.
pub(crate) fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

/// A result of this module.
pub type Result<T, E = RdmaError> = std::result::Result<T, E>;
