//! A connected RC queue pair with its completion queue: posting RDMA WRITE,
//! RDMA READ, SEND and receives, a bound on outstanding send work requests,
//! and completion polling that turns error statuses into named errors.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use super::cm::{event_name, Channel, IdGuard};
use super::completion::{Operation, WcStatus};
use super::error::{last_errno, RdmaError, Result};
use super::mr::{MemoryRegion, ProtectionDomain, RemoteMr};
use super::sys;

/// Sizes of a QP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpOptions {
    /// Send work requests (WRITE, READ, SEND) in flight at most.
    pub depth: u32,
    /// Receives that can be posted.
    pub recv_depth: u32,
    /// RDMA READs in flight, both as initiator and responder (at most 16 on
    /// rxe under emulation, where deeper reads were seen to hang).
    pub read_depth: u8,
}

impl Default for QpOptions {
    fn default() -> Self {
        QpOptions {
            depth: 64,
            recv_depth: 4,
            read_depth: 16,
        }
    }
}

/// A successful completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The caller's work request id.
    pub wr_id: u64,
    /// What completed.
    pub op: Operation,
    /// Bytes received (receives only).
    pub byte_len: u32,
    /// Send work requests this completion retires: itself and the unsignaled
    /// ones posted on this QP since the previous signaled one (1 for receives).
    pub covers: u32,
}

const OP_SHIFT: u32 = 61;
const DMABUF_BIT: u64 = 1 << 60;
const USER_MASK: u64 = DMABUF_BIT - 1;

fn tag(op: Operation, local_dmabuf: bool, wr_id: u64) -> u64 {
    let op = match op {
        Operation::Write => 0u64,
        Operation::Read => 1,
        Operation::Send => 2,
        Operation::Recv => 3,
    };
    (op << OP_SHIFT) | if local_dmabuf { DMABUF_BIT } else { 0 } | (wr_id & USER_MASK)
}

fn untag(v: u64) -> (Operation, bool, u64) {
    let op = match v >> OP_SHIFT {
        0 => Operation::Write,
        1 => Operation::Read,
        2 => Operation::Send,
        _ => Operation::Recv,
    };
    (op, v & DMABUF_BIT != 0, v & USER_MASK)
}

/// A connected RC QP (its CM id, its CQ, its PD).
pub struct QueuePair {
    guard: Option<IdGuard>,
    cq: NonNull<sys::ibv_cq>,
    pd: Arc<ProtectionDomain>,
    peer: String,
    depth: u32,
    outstanding: u32,
    /// Per signaled send work request in flight, how many it retires.
    batches: std::collections::VecDeque<u32>,
    /// Unsignaled send work requests since the last signaled one.
    unsignaled: u32,
    connected: bool,
    qp_created: bool,
}

// SAFETY: one owner at a time posts and polls; libibverbs allows it from any thread.
unsafe impl Send for QueuePair {}

impl QueuePair {
    pub(crate) fn create(
        guard: IdGuard,
        pd: &Arc<ProtectionDomain>,
        opts: &QpOptions,
        peer: String,
    ) -> Result<QueuePair> {
        let cqe = (opts.depth + opts.recv_depth + 4) as i32;
        // SAFETY: the PD's context is live (the PD holds it).
        let cq = unsafe {
            sys::ibv_create_cq(
                pd.context().as_ptr(),
                cqe,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(|| RdmaError::Call {
            call: "ibv_create_cq",
            errno: last_errno(),
            fix: "ask for a smaller depth",
        })?;
        let mut qp = QueuePair {
            guard: Some(guard),
            cq,
            pd: Arc::clone(pd),
            peer,
            depth: opts.depth.max(1),
            outstanding: 0,
            batches: std::collections::VecDeque::new(),
            unsignaled: 0,
            connected: false,
            qp_created: false,
        };
        let mut attr = sys::ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: cq.as_ptr(),
            recv_cq: cq.as_ptr(),
            srq: std::ptr::null_mut(),
            cap: sys::ibv_qp_cap {
                max_send_wr: opts.depth.max(1) + 1,
                max_recv_wr: opts.recv_depth.max(1),
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: sys::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: the id is live and bound to the PD's device; attr is valid.
        if unsafe { sys::rdma_create_qp(qp.id(), pd.raw(), &mut attr) } != 0 {
            return Err(RdmaError::Call {
                call: "rdma_create_qp",
                errno: last_errno(),
                fix: "ask for a smaller depth (the device's max_qp_wr limits it)",
            });
        }
        qp.qp_created = true;
        Ok(qp)
    }

    pub(crate) fn id(&self) -> *mut sys::rdma_cm_id {
        self.guard.as_ref().expect("live until drop").raw()
    }

    pub(crate) fn channel(&self) -> &Channel {
        &self.guard.as_ref().expect("live until drop").channel
    }

    pub(crate) fn set_connected(&mut self) {
        self.connected = true;
    }

    fn raw_qp(&self) -> *mut sys::ibv_qp {
        // SAFETY: the id is live and has a QP.
        unsafe { (*self.id()).qp }
    }

    /// The QP number.
    pub fn qp_num(&self) -> u32 {
        // SAFETY: the QP is live.
        unsafe { (*self.raw_qp()).qp_num }
    }

    /// The PD the QP was made on.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Send work requests posted and not yet completed.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Whether another send work request may be posted.
    pub fn has_room(&self) -> bool {
        self.outstanding < self.depth
    }

    /// How many more send work requests may be posted.
    pub fn room(&self) -> u32 {
        self.depth.saturating_sub(self.outstanding)
    }

    /// Unsignaled send work requests posted since the last signaled one.
    pub fn unsignaled(&self) -> u32 {
        self.unsignaled
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        op: Operation,
        local: &MemoryRegion,
        local_off: u64,
        len: u32,
        remote: Option<(&RemoteMr, u64)>,
        wr_id: u64,
        signaled: bool,
    ) -> Result<()> {
        local.check("the local range", local_off, u64::from(len))?;
        if let Some((r, off)) = remote {
            if off.checked_add(u64::from(len)).is_none_or(|e| e > r.len) {
                return Err(RdmaError::OutOfRange {
                    what: "the remote range",
                    offset: off,
                    len: u64::from(len),
                    mr_len: r.len,
                    fix: "stay inside the MR the peer advertised",
                });
            }
        }
        if !self.has_room() {
            return Err(RdmaError::Call {
                call: "ibv_post_send",
                errno: rustix::io::Errno::NOBUFS,
                fix: "poll completions before posting more (the QP's depth is reached)",
            });
        }
        let mut sge = sys::ibv_sge {
            addr: local.addr() + local_off,
            length: len,
            lkey: local.lkey(),
        };
        // SAFETY: ibv_send_wr is plain data; all-zero is valid.
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = tag(op, local.is_dmabuf(), wr_id);
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.send_flags = if signaled { sys::IBV_SEND_SIGNALED } else { 0 };
        wr.opcode = match op {
            Operation::Write => sys::IBV_WR_RDMA_WRITE,
            Operation::Read => sys::IBV_WR_RDMA_READ,
            _ => sys::IBV_WR_SEND,
        };
        if let Some((r, off)) = remote {
            wr.remote_addr = r.addr + off;
            wr.rkey = r.rkey;
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: the QP is live; wr and sge live through the call and name
        // a registered range (checked above).
        let rc = unsafe { sys::ibv_post_send(self.raw_qp(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(RdmaError::Call {
                call: "ibv_post_send",
                errno: rustix::io::Errno::from_raw_os_error(rc),
                fix: "check the QP's state (a failed QP takes no more work)",
            });
        }
        self.outstanding += 1;
        if signaled {
            self.batches.push_back(self.unsignaled + 1);
            self.unsignaled = 0;
        } else {
            self.unsignaled += 1;
        }
        Ok(())
    }

    /// Posts an RDMA WRITE or READ that completes silently unless `signaled`
    /// (completion moderation: a signaled one retires the unsignaled ones
    /// posted before it on this QP). The last one posted must be signaled,
    /// and so must one before the QP's depth is reached, or the QP stalls.
    ///
    /// # Errors
    ///
    /// As [`post_write`](Self::post_write).
    #[allow(clippy::too_many_arguments)]
    pub fn post_moderated(
        &mut self,
        op: Operation,
        local: &MemoryRegion,
        local_off: u64,
        remote: &RemoteMr,
        remote_off: u64,
        len: u32,
        wr_id: u64,
        signaled: bool,
    ) -> Result<()> {
        let op = match op {
            Operation::Read => Operation::Read,
            _ => Operation::Write,
        };
        self.post(
            op,
            local,
            local_off,
            len,
            Some((remote, remote_off)),
            wr_id,
            signaled,
        )
    }

    /// Posts an RDMA WRITE of `len` bytes from `local` at `local_off` into
    /// the peer's `remote` MR at `remote_off`.
    ///
    /// # Errors
    ///
    /// [`RdmaError::OutOfRange`] for a range outside either MR (checked
    /// locally; the wrong rkey is only found by the peer);
    /// [`RdmaError::Call`] when the QP is full or has failed.
    pub fn post_write(
        &mut self,
        local: &MemoryRegion,
        local_off: u64,
        remote: &RemoteMr,
        remote_off: u64,
        len: u32,
        wr_id: u64,
    ) -> Result<()> {
        self.post(
            Operation::Write,
            local,
            local_off,
            len,
            Some((remote, remote_off)),
            wr_id,
            true,
        )
    }

    /// Posts an RDMA WRITE without the local check of the remote range (to
    /// see what the peer's NIC answers to a bad range or rkey).
    ///
    /// # Errors
    ///
    /// As [`post_write`](Self::post_write), less the remote range check.
    pub fn post_write_unchecked(
        &mut self,
        local: &MemoryRegion,
        local_off: u64,
        remote: &RemoteMr,
        remote_off: u64,
        len: u32,
        wr_id: u64,
    ) -> Result<()> {
        let wide = RemoteMr {
            len: u64::MAX,
            ..*remote
        };
        self.post(
            Operation::Write,
            local,
            local_off,
            len,
            Some((&wide, remote_off)),
            wr_id,
            true,
        )
    }

    /// Posts an RDMA READ of `len` bytes from the peer's `remote` MR into
    /// `local` (which needs local write access).
    ///
    /// # Errors
    ///
    /// As [`post_write`](Self::post_write).
    pub fn post_read(
        &mut self,
        local: &MemoryRegion,
        local_off: u64,
        remote: &RemoteMr,
        remote_off: u64,
        len: u32,
        wr_id: u64,
    ) -> Result<()> {
        self.post(
            Operation::Read,
            local,
            local_off,
            len,
            Some((remote, remote_off)),
            wr_id,
            true,
        )
    }

    /// Posts a SEND of `len` bytes of `local` (a control message).
    ///
    /// # Errors
    ///
    /// As [`post_write`](Self::post_write).
    pub fn post_send(
        &mut self,
        local: &MemoryRegion,
        off: u64,
        len: u32,
        wr_id: u64,
    ) -> Result<()> {
        self.post(Operation::Send, local, off, len, None, wr_id, true)
    }

    /// Posts a receive of up to `len` bytes into `local` at `off`.
    ///
    /// # Errors
    ///
    /// [`RdmaError::OutOfRange`]; [`RdmaError::Call`] when the receive queue
    /// is full.
    pub fn post_recv(
        &mut self,
        local: &MemoryRegion,
        off: u64,
        len: u32,
        wr_id: u64,
    ) -> Result<()> {
        local.check("the receive buffer", off, u64::from(len))?;
        let mut sge = sys::ibv_sge {
            addr: local.addr() + off,
            length: len,
            lkey: local.lkey(),
        };
        let mut wr = sys::ibv_recv_wr {
            wr_id: tag(Operation::Recv, local.is_dmabuf(), wr_id),
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = std::ptr::null_mut();
        // SAFETY: the QP is live; wr and sge live through the call.
        let rc = unsafe { sys::ibv_post_recv(self.raw_qp(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(RdmaError::Call {
                call: "ibv_post_recv",
                errno: rustix::io::Errno::from_raw_os_error(rc),
                fix: "post fewer receives",
            });
        }
        Ok(())
    }

    /// Polls the CQ once, appending successful completions to `out`.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Completion`] for the first error completion, or
    /// [`RdmaError::PeerGone`] when the CM reports the peer disconnected
    /// (the error completions that follow a disconnect are its symptom).
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize> {
        let mut wcs = [sys::ibv_wc::default(); 16];
        // SAFETY: the CQ is live; wcs has room for 16 entries.
        let n = unsafe { sys::ibv_poll_cq(self.cq.as_ptr(), wcs.len() as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(RdmaError::Call {
                call: "ibv_poll_cq",
                errno: rustix::io::Errno::from_raw_os_error(-n),
                fix: "the device failed; check dmesg",
            });
        }
        let mut first_err = None;
        for wc in &wcs[..n as usize] {
            let (op, local_dmabuf, wr_id) = untag(wc.wr_id);
            let covers = if op == Operation::Recv {
                1
            } else {
                self.batches.pop_front().unwrap_or(1)
            };
            if op != Operation::Recv {
                self.outstanding = self.outstanding.saturating_sub(covers);
            }
            if wc.status == sys::IBV_WC_SUCCESS {
                out.push(Completion {
                    wr_id,
                    op,
                    byte_len: wc.byte_len,
                    covers,
                });
            } else if first_err.is_none() {
                first_err = Some(RdmaError::Completion {
                    op,
                    status: WcStatus(wc.status),
                    vendor_err: wc.vendor_err,
                    device: self.pd.device().to_string(),
                    qp_num: self.qp_num(),
                    local_dmabuf,
                });
            }
        }
        if let Some(e) = first_err {
            // A disconnect explains a flush or a retry error better than the status.
            if let RdmaError::Completion { status, .. } = &e {
                if matches!(*status, WcStatus::WR_FLUSH_ERR | WcStatus::RETRY_EXC_ERR) {
                    if let Some(gone) = self.disconnect_event(Duration::from_millis(200), &e)? {
                        return Err(gone);
                    }
                }
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    fn disconnect_event(
        &mut self,
        wait: Duration,
        symptom: &RdmaError,
    ) -> Result<Option<RdmaError>> {
        while let Some(ev) = self.channel().next(wait)? {
            if matches!(
                ev.kind,
                sys::RDMA_CM_EVENT_DISCONNECTED | sys::RDMA_CM_EVENT_DEVICE_REMOVAL
            ) {
                self.connected = false;
                let status = match symptom {
                    RdmaError::Completion { status, .. } => format!(", then {status}"),
                    _ => String::new(),
                };
                return Ok(Some(RdmaError::PeerGone {
                    peer: self.peer.clone(),
                    during: "mid-stream".into(),
                    event: format!("{}{status}", event_name(ev.kind)),
                }));
            }
        }
        Ok(None)
    }

    /// Checks, without waiting longer than `wait`, whether the peer
    /// disconnected.
    ///
    /// # Errors
    ///
    /// [`RdmaError::PeerGone`] when it did.
    pub fn check_peer(&mut self, wait: Duration) -> Result<()> {
        let symptom = RdmaError::Protocol {
            what: String::new(),
        };
        match self.disconnect_event(wait, &symptom)? {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Disconnects (the peer sees `RDMA_CM_EVENT_DISCONNECTED`).
    pub fn disconnect(&mut self) {
        if self.connected {
            // SAFETY: the id is live and connected.
            unsafe { sys::rdma_disconnect(self.id()) };
            self.connected = false;
        }
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        self.disconnect();
        if self.qp_created {
            // SAFETY: the QP was created on this id and nothing posts any more.
            unsafe { sys::rdma_destroy_qp(self.id()) };
        }
        // SAFETY: the QP that used the CQ is gone.
        unsafe { sys::ibv_destroy_cq(self.cq.as_ptr()) };
        // The id, then its channel.
        self.guard.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_request_ids_carry_the_operation_and_the_dmabuf_flag() {
        for op in [
            Operation::Write,
            Operation::Read,
            Operation::Send,
            Operation::Recv,
        ] {
            for d in [false, true] {
                assert_eq!(untag(tag(op, d, 12345)), (op, d, 12345));
            }
        }
        assert_eq!(untag(tag(Operation::Read, false, u64::MAX)).2, USER_MASK);
    }
}
