//! A submission/completion queue pair in user memory mapped into the controller's IOAS
//! (Base spec "Queue Mechanism"): entries written at the SQ tail and announced through the
//! tail doorbell, completions found at the CQ head by their phase tag and released
//! through the head doorbell. No interrupts: completions are polled.

use std::ptr;
use std::sync::atomic::{fence, Ordering};

use peerdma_uapi::nvme::{nvme_cqe, nvme_sqe, NVME_CQE_PHASE};

use super::backing::{DmaBuffer, DmaMemory, RegisterIo};
use super::error::NvmeError;
use super::regs::Registers;
use peerdma_importer::iommufd::Access;

/// A queue pair: SQ and CQ `qid`, `entries` deep each.
#[derive(Debug)]
pub struct QueuePair<D: DmaBuffer> {
    qid: u16,
    entries: u32,
    sq: D,
    cq: D,
    sq_tail: u32,
    cq_head: u32,
    phase: bool,
    /// Entries written since the last doorbell.
    unannounced: u32,
}

impl<D: DmaBuffer> QueuePair<D> {
    /// Allocates both rings from `memory` (for VFIO: mapped at guarded IOVAs of the
    /// IOAS), the SQ readable by the controller, the CQ writable.
    ///
    /// # Errors
    ///
    /// The importer's errors when the memory cannot be allocated or mapped.
    pub fn new<M: DmaMemory<Buffer = D>>(
        memory: &M,
        qid: u16,
        entries: u32,
    ) -> peerdma_importer::iommufd::Result<QueuePair<D>> {
        let sq_len = entries as usize * size_of::<nvme_sqe>();
        let cq_len = entries as usize * size_of::<nvme_cqe>();
        let sq = memory.alloc(sq_len, Access::Read)?;
        let cq = memory.alloc(cq_len, Access::Write)?;
        Ok(QueuePair {
            qid,
            entries,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            unannounced: 0,
        })
    }

    /// The queue id.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Entries per ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The SQ's IOVA.
    pub fn sq_iova(&self) -> u64 {
        self.sq.iova()
    }

    /// The CQ's IOVA.
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova()
    }

    /// Back to the state of a freshly created queue (after a controller reset): both
    /// rings zeroed, tail and head at 0, expecting phase 1.
    pub fn reset(&mut self) {
        self.sq.buffer().fill(0);
        self.cq.buffer().fill(0);
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
        self.unannounced = 0;
    }

    /// Writes `sqe` at the tail without ringing the doorbell ([`announce`](Self::announce)
    /// does). The caller keeps at most `entries - 1` commands outstanding.
    pub fn push(&mut self, sqe: &nvme_sqe) {
        let at = self.sq_tail as usize * size_of::<nvme_sqe>();
        debug_assert!(at + size_of::<nvme_sqe>() <= self.sq.buffer().len());
        // SAFETY: sq_tail < entries and the buffer holds entries * 64 bytes (rounded up
        // to pages), so the entry lies inside it; the buffer is page aligned, so the
        // 8-byte-aligned entry is aligned. Only this queue writes the SQ.
        unsafe { ptr::write_volatile(self.sq.buffer().as_ptr().add(at).cast::<nvme_sqe>(), *sqe) };
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        self.unannounced += 1;
    }

    /// Rings the SQ tail doorbell if entries were pushed since the last time.
    pub fn announce<R: RegisterIo>(&mut self, regs: &Registers<R>) -> Result<(), NvmeError> {
        if self.unannounced == 0 {
            return Ok(());
        }
        // The entries must be in memory before the controller is told to fetch them.
        fence(Ordering::SeqCst);
        regs.ring_sq(self.qid, self.sq_tail)?;
        self.unannounced = 0;
        Ok(())
    }

    /// The next completion, if the controller has posted one; its slot is released
    /// (head doorbell rung) before returning.
    pub fn poll<R: RegisterIo>(
        &mut self,
        regs: &Registers<R>,
    ) -> Result<Option<nvme_cqe>, NvmeError> {
        let at = self.cq_head as usize * size_of::<nvme_cqe>();
        let base = self.cq.buffer().as_ptr();
        // SAFETY: cq_head < entries and the buffer holds entries * 16 bytes, page
        // aligned: the status word (offset 14) and the entry are inside and aligned.
        // The controller writes the ring; volatile reads see its writes.
        let status = unsafe { ptr::read_volatile(base.add(at + 14).cast::<u16>()) };
        if (status & NVME_CQE_PHASE != 0) != self.phase {
            return Ok(None);
        }
        // Read the rest of the entry only after its phase tag said it is new.
        fence(Ordering::Acquire);
        // SAFETY: as above, for the whole 16-byte entry.
        let cqe = unsafe { ptr::read_volatile(base.add(at).cast::<nvme_cqe>()) };
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        regs.ring_cq(self.qid, self.cq_head)?;
        Ok(Some(cqe))
    }
}
