//! The NVMe queues in user memory mapped into the controller's IOAS (Base spec
//! "Queue Mechanism"): a [`SubmissionQueue`] whose entries are written at its tail and
//! announced through the tail doorbell, and a [`CompletionQueue`] whose entries are
//! found at its head by their phase tag and released through the head doorbell;
//! [`Queue`] is one of each, as the spec's Admin Queue and I/O Queue are. No
//! interrupts: completions are polled.

use std::ptr;
use std::sync::atomic::{fence, Ordering};

use peerdma_importer::iommufd::{self, Prot};
use peerdma_uapi::nvme::{nvme_cqe, nvme_sqe, NVME_CQE_PHASE};

use super::backing::{DmaBuffer, DmaMemory, RegisterIo};
use super::error::NvmeError;
use super::regs::Registers;

/// A submission queue (SQ) `qid`, `entries` deep: 64-byte commands the controller
/// reads.
#[derive(Debug)]
pub struct SubmissionQueue<D: DmaBuffer> {
    qid: u16,
    entries: u32,
    ring: D,
    tail: u32,
    /// Entries written since the last doorbell.
    unannounced: u32,
}

impl<D: DmaBuffer> SubmissionQueue<D> {
    /// Allocates the ring from `memory` (for VFIO: mapped at a guarded IOVA of the
    /// IOAS), readable by the controller.
    ///
    /// # Errors
    ///
    /// The importer's errors when the memory cannot be allocated or mapped.
    pub fn new<M: DmaMemory<Buffer = D>>(
        memory: &M,
        qid: u16,
        entries: u32,
    ) -> iommufd::Result<SubmissionQueue<D>> {
        let ring = memory.alloc(entries as usize * size_of::<nvme_sqe>(), Prot::Read)?;
        Ok(SubmissionQueue {
            qid,
            entries,
            ring,
            tail: 0,
            unannounced: 0,
        })
    }

    /// Entries in the ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The ring's IOVA.
    pub fn iova(&self) -> u64 {
        self.ring.iova()
    }

    /// Back to the state of a fresh queue (after a controller reset): ring zeroed,
    /// tail at 0.
    pub fn reset(&mut self) {
        self.ring.buffer().fill(0);
        self.tail = 0;
        self.unannounced = 0;
    }

    /// Writes `sqe` at the tail without ringing the doorbell ([`announce`](Self::announce)
    /// does). The caller keeps at most `entries - 1` commands outstanding.
    pub fn push(&mut self, sqe: &nvme_sqe) {
        let at = self.tail as usize * size_of::<nvme_sqe>();
        debug_assert!(at + size_of::<nvme_sqe>() <= self.ring.buffer().len());
        // SAFETY: tail < entries and the buffer holds entries * 64 bytes (rounded up
        // to pages), so the entry lies inside it; the buffer is page aligned, so the
        // 8-byte-aligned entry is aligned. Only this queue writes the SQ.
        unsafe {
            ptr::write_volatile(self.ring.buffer().as_ptr().add(at).cast::<nvme_sqe>(), *sqe)
        };
        self.tail = (self.tail + 1) % self.entries;
        self.unannounced += 1;
    }

    /// Rings the tail doorbell if entries were pushed since the last time.
    ///
    /// # Errors
    ///
    /// [`NvmeError::Device`] when the doorbell write fails.
    pub fn announce<R: RegisterIo>(&mut self, regs: &Registers<R>) -> Result<(), NvmeError> {
        if self.unannounced == 0 {
            return Ok(());
        }
        // The entries must be in memory before the controller is told to fetch them.
        fence(Ordering::SeqCst);
        regs.ring_sq(self.qid, self.tail)?;
        self.unannounced = 0;
        Ok(())
    }
}

/// A completion queue (CQ) `qid`, `entries` deep: 16-byte completions the controller
/// writes, new ones told apart by their phase tag.
#[derive(Debug)]
pub struct CompletionQueue<D: DmaBuffer> {
    qid: u16,
    entries: u32,
    ring: D,
    head: u32,
    /// The phase tag a new entry carries (flips each time the head wraps).
    phase: bool,
}

impl<D: DmaBuffer> CompletionQueue<D> {
    /// Allocates the ring from `memory` (for VFIO: mapped at a guarded IOVA of the
    /// IOAS), writable by the controller.
    ///
    /// # Errors
    ///
    /// The importer's errors when the memory cannot be allocated or mapped.
    pub fn new<M: DmaMemory<Buffer = D>>(
        memory: &M,
        qid: u16,
        entries: u32,
    ) -> iommufd::Result<CompletionQueue<D>> {
        let ring = memory.alloc(entries as usize * size_of::<nvme_cqe>(), Prot::Write)?;
        Ok(CompletionQueue {
            qid,
            entries,
            ring,
            head: 0,
            phase: true,
        })
    }

    /// Entries in the ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The ring's IOVA.
    pub fn iova(&self) -> u64 {
        self.ring.iova()
    }

    /// Back to the state of a fresh queue (after a controller reset): ring zeroed,
    /// head at 0, expecting phase 1.
    pub fn reset(&mut self) {
        self.ring.buffer().fill(0);
        self.head = 0;
        self.phase = true;
    }

    /// The next completion, if the controller has posted one; its slot is released
    /// (head doorbell rung) before returning.
    ///
    /// # Errors
    ///
    /// [`NvmeError::Device`] when the doorbell write fails.
    pub fn poll<R: RegisterIo>(
        &mut self,
        regs: &Registers<R>,
    ) -> Result<Option<nvme_cqe>, NvmeError> {
        let at = self.head as usize * size_of::<nvme_cqe>();
        let base = self.ring.buffer().as_ptr();
        // SAFETY: head < entries and the buffer holds entries * 16 bytes, page
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
        self.head += 1;
        if self.head == self.entries {
            self.head = 0;
            self.phase = !self.phase;
        }
        regs.ring_cq(self.qid, self.head)?;
        Ok(Some(cqe))
    }
}

/// One submission queue and the completion queue its commands complete on, both `qid`
/// and `entries` deep: the Admin Queue (qid 0) or an I/O Queue.
#[derive(Debug)]
pub struct Queue<D: DmaBuffer> {
    /// Where commands go.
    pub sq: SubmissionQueue<D>,
    /// Where their completions come back.
    pub cq: CompletionQueue<D>,
}

impl<D: DmaBuffer> Queue<D> {
    /// Allocates both rings from `memory` ([`SubmissionQueue::new`],
    /// [`CompletionQueue::new`]).
    ///
    /// # Errors
    ///
    /// The importer's errors when the memory cannot be allocated or mapped.
    pub fn new<M: DmaMemory<Buffer = D>>(
        memory: &M,
        qid: u16,
        entries: u32,
    ) -> iommufd::Result<Queue<D>> {
        Ok(Queue {
            sq: SubmissionQueue::new(memory, qid, entries)?,
            cq: CompletionQueue::new(memory, qid, entries)?,
        })
    }

    /// Both rings back to the state of fresh queues (after a controller reset).
    pub fn reset(&mut self) {
        self.sq.reset();
        self.cq.reset();
    }
}
