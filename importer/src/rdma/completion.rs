//! Work completions: the status names of `enum ibv_wc_status` and what
//! usually causes each, so an error completion explains itself.

use std::fmt;

/// The status of a work completion (`enum ibv_wc_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WcStatus(pub u32);

/// (name, usual cause) by status value, in `enum ibv_wc_status` order.
const STATUSES: &[(&str, &str)] = &[
    ("IBV_WC_SUCCESS", "the work request completed"),
    ("IBV_WC_LOC_LEN_ERR", "a local length error: the SGE is longer than the MR or the QP's message size limit, or an incoming SEND is larger than the posted receive buffer"),
    ("IBV_WC_LOC_QP_OP_ERR", "a local QP operation error: the work request is inconsistent with the QP (an opcode the QP type does not support, too many SGEs, inline data over the limit)"),
    ("IBV_WC_LOC_EEC_OP_ERR", "a local EE context error (RD QPs only)"),
    ("IBV_WC_LOC_PROT_ERR", "a local protection error: the local SGE is outside its MR, the lkey is wrong, or the MR's pages went away (a dma-buf MR whose exporter revoked it: memory decode off, reset)"),
    ("IBV_WC_WR_FLUSH_ERR", "flushed: the QP went to the error state (an earlier work request failed, or the connection was torn down) and this request never ran"),
    ("IBV_WC_MW_BIND_ERR", "a memory window bind failed"),
    ("IBV_WC_BAD_RESP_ERR", "the responder sent an unexpected transport response"),
    ("IBV_WC_LOC_ACCESS_ERR", "a local access error: the local MR lacks the access the operation needs (LOCAL_WRITE for a READ's destination or a receive buffer), or its mapping was invalidated (a revoked dma-buf MR)"),
    ("IBV_WC_REM_INV_REQ_ERR", "the responder found the request invalid: a message longer than the receive buffer, or an operation the remote QP does not allow"),
    ("IBV_WC_REM_ACCESS_ERR", "a remote access error: the rkey is wrong or stale, the remote range is outside the peer's MR, or the peer's MR lacks REMOTE_WRITE/REMOTE_READ access (or was invalidated by a revoke on the peer)"),
    ("IBV_WC_REM_OP_ERR", "the responder could not complete the operation (a remote local error: its receive buffer or MR failed)"),
    ("IBV_WC_RETRY_EXC_ERR", "transport retries exceeded: the peer stopped acknowledging (its process or host went away, the link is down, or the path drops packets)"),
    ("IBV_WC_RNR_RETRY_EXC_ERR", "receiver-not-ready retries exceeded: the peer had no receive posted for a SEND"),
    ("IBV_WC_LOC_RDD_VIOL_ERR", "a local RDD violation (RD QPs only)"),
    ("IBV_WC_REM_INV_RD_REQ_ERR", "the responder found an invalid RD request"),
    ("IBV_WC_REM_ABORT_ERR", "the responder aborted the operation"),
    ("IBV_WC_INV_EECN_ERR", "an invalid EE context number"),
    ("IBV_WC_INV_EEC_STATE_ERR", "an invalid EE context state"),
    ("IBV_WC_FATAL_ERR", "a fatal device error: the NIC or its driver failed"),
    ("IBV_WC_RESP_TIMEOUT_ERR", "the response timed out"),
    ("IBV_WC_GENERAL_ERR", "a general error the provider reports without detail (see vendor_err)"),
    ("IBV_WC_TM_ERR", "a tag-matching error"),
    ("IBV_WC_TM_RNDV_INCOMPLETE", "a tag-matching rendezvous did not complete"),
];

impl WcStatus {
    /// The success status.
    pub const SUCCESS: WcStatus = WcStatus(0);
    /// `IBV_WC_LOC_PROT_ERR`.
    pub const LOC_PROT_ERR: WcStatus = WcStatus(4);
    /// `IBV_WC_WR_FLUSH_ERR`.
    pub const WR_FLUSH_ERR: WcStatus = WcStatus(5);
    /// `IBV_WC_LOC_ACCESS_ERR`.
    pub const LOC_ACCESS_ERR: WcStatus = WcStatus(8);
    /// `IBV_WC_REM_ACCESS_ERR`.
    pub const REM_ACCESS_ERR: WcStatus = WcStatus(10);
    /// `IBV_WC_RETRY_EXC_ERR`.
    pub const RETRY_EXC_ERR: WcStatus = WcStatus(12);

    /// The C name, `IBV_WC_...`.
    pub fn name(self) -> String {
        STATUSES
            .get(self.0 as usize)
            .map_or_else(|| format!("ibv_wc_status {}", self.0), |s| s.0.to_string())
    }

    /// What usually causes it.
    pub fn cause(self) -> &'static str {
        STATUSES
            .get(self.0 as usize)
            .map_or("a status this library does not know", |s| s.1)
    }

    /// Whether the local MR's mapping may have been invalidated (what a
    /// revoked dma-buf MR reports).
    pub fn may_be_local_revoke(self) -> bool {
        matches!(self, WcStatus::LOC_PROT_ERR | WcStatus::LOC_ACCESS_ERR)
    }
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The operation a work request performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// RDMA WRITE into the peer's MR.
    Write,
    /// RDMA READ from the peer's MR.
    Read,
    /// A two-sided SEND (control messages).
    Send,
    /// A posted receive.
    Recv,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Write => "RDMA WRITE",
            Operation::Read => "RDMA READ",
            Operation::Send => "SEND",
            Operation::Recv => "receive",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_enum_order_of_verbs_h() {
        assert_eq!(STATUSES.len(), 24);
        assert_eq!(WcStatus::REM_ACCESS_ERR.name(), "IBV_WC_REM_ACCESS_ERR");
        assert_eq!(WcStatus::RETRY_EXC_ERR.name(), "IBV_WC_RETRY_EXC_ERR");
        assert_eq!(WcStatus::WR_FLUSH_ERR.name(), "IBV_WC_WR_FLUSH_ERR");
        assert_eq!(WcStatus(23).name(), "IBV_WC_TM_RNDV_INCOMPLETE");
        assert_eq!(WcStatus(99).name(), "ibv_wc_status 99");
        assert!(WcStatus::REM_ACCESS_ERR.cause().contains("rkey"));
    }
}
