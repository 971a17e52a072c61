//! The NIC IO of both sides on the engine crate's user-space igb driver: data
//! datagrams DMAed by the NIC straight from (TX) or into (RX, header split) a BAR
//! span exported as a dma-buf and mapped in the NIC's IOAS; control messages and ARP
//! in host slots.
//!
//! Not in this build yet: the driver (`peerdma_engine::igb`) is not merged, so both
//! sides say so.

use std::net::SocketAddr;

use peerdma_host::Bdf;

use super::error::NicError;
use super::{NicReport, SendRequest, ServeRequest};
use crate::CopyError;

fn unavailable(nic: Bdf) -> CopyError {
    NicError::Unavailable {
        why: format!(
            "the NIC path through {nic} needs the engine crate's igb driver, which this build \
             does not have yet"
        ),
    }
    .into()
}

/// Sends through the NIC `nic` (see [`super::send`]).
pub(super) fn send(
    nic: Bdf,
    _req: &SendRequest,
    _progress: &mut dyn FnMut(u64, u64),
) -> Result<NicReport, CopyError> {
    Err(unavailable(nic))
}

/// Receives through the NIC `nic` (see [`super::serve`]).
pub(super) fn serve(
    nic: Bdf,
    _req: &ServeRequest,
    _on_listen: &mut dyn FnMut(SocketAddr),
) -> Result<NicReport, CopyError> {
    Err(unavailable(nic))
}
