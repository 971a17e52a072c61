//! The io_uring itself: setup, the submission and completion rings and the SQE array
//! mapped from the ring fd, submission and completion, and the two buffer-table
//! registrations the engine needs. The engine's only module with `unsafe`: raw
//! `io_uring_*` syscalls (through `rustix`) and the memory shared with the kernel.

use std::ffi::c_void;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use peerdma_uapi::ahead::{
    io_uring_regbuf_desc, io_uring_rsrc_update2, IORING_RSRC_UPDATE_EXTENDED,
};
use rustix::io::Errno;
use rustix::io_uring::{
    io_uring_cqe, io_uring_enter, io_uring_params, io_uring_register, io_uring_rsrc_register,
    io_uring_setup, io_uring_sqe, IoringEnterFlags, IoringFeatureFlags, IoringRegisterOp,
    IoringRsrcFlags, IORING_OFF_CQ_RING, IORING_OFF_SQES, IORING_OFF_SQ_RING,
};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// One shared mapping of the ring fd, unmapped on drop.
struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of the ring fd at the kernel-defined `offset`.
    fn new(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping chosen by the kernel (no MAP_FIXED), so no
        // existing memory is replaced; `offset` is one of the IORING_OFF_* the kernel
        // defines for this fd.
        let ptr = unsafe {
            mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                offset,
            )
        }?;
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Mapping { ptr, len })
    }

    /// A pointer `off` bytes into the mapping.
    fn at<T>(&self, off: u32) -> *mut T {
        self.ptr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(off as usize)
            .cast()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned; nothing borrows the
        // mapping past the `Ring` that owns it.
        let _ = unsafe { munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// An io_uring with its rings mapped. Not shared between threads (no `Sync`); one
/// thread at a time submits and reaps.
pub(crate) struct Ring {
    // The mappings and the raw pointers into them stay valid as long as the mappings
    // (which hold their own reference on the ring file).
    _sq_ring: Mapping,
    _cq_ring: Option<Mapping>,
    sqes: Mapping,
    sq_head: *const AtomicU32,
    sq_tail: *const AtomicU32,
    sq_array: *mut u32,
    sq_mask: u32,
    sq_entries: u32,
    cq_head: *const AtomicU32,
    cq_tail: *const AtomicU32,
    cqes: *const io_uring_cqe,
    cq_mask: u32,
    /// SQEs pushed but not yet handed to the kernel.
    unsubmitted: u32,
    fd: OwnedFd,
}

// SAFETY: the ring memory is owned by this value alone and the ring was set up without
// IORING_SETUP_SINGLE_ISSUER, so it may be used from another thread once moved there.
unsafe impl Send for Ring {}

impl Ring {
    /// `io_uring_setup(entries)` and the mappings of its rings.
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let mut p = io_uring_params::default();
        // SAFETY: `p` is a valid, zeroed `io_uring_params` that the kernel fills in.
        let fd = unsafe { io_uring_setup(entries, &mut p) }?;
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * size_of::<u32>();
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<io_uring_cqe>();
        let single = p.features.contains(IoringFeatureFlags::SINGLE_MMAP);
        let sq_ring = Mapping::new(
            fd.as_fd(),
            IORING_OFF_SQ_RING,
            if single { sq_len.max(cq_len) } else { sq_len },
        )?;
        let cq_ring = if single {
            None
        } else {
            Some(Mapping::new(fd.as_fd(), IORING_OFF_CQ_RING, cq_len)?)
        };
        let sqes = Mapping::new(
            fd.as_fd(),
            IORING_OFF_SQES,
            p.sq_entries as usize * size_of::<io_uring_sqe>(),
        )?;
        let cq = cq_ring.as_ref().unwrap_or(&sq_ring);
        // SAFETY: the kernel's offsets point inside the mappings just made, at
        // naturally aligned u32 fields (the masks are read once here).
        let (sq_mask, cq_mask) = unsafe {
            (
                ptr::read_volatile(sq_ring.at::<u32>(p.sq_off.ring_mask)),
                ptr::read_volatile(cq.at::<u32>(p.cq_off.ring_mask)),
            )
        };
        Ok(Ring {
            sq_head: sq_ring.at(p.sq_off.head),
            sq_tail: sq_ring.at(p.sq_off.tail),
            sq_array: sq_ring.at(p.sq_off.array),
            sq_mask,
            sq_entries: p.sq_entries,
            cq_head: cq.at(p.cq_off.head),
            cq_tail: cq.at(p.cq_off.tail),
            cqes: cq.at(p.cq_off.cqes),
            cq_mask,
            _sq_ring: sq_ring,
            _cq_ring: cq_ring,
            sqes,
            unsubmitted: 0,
            fd,
        })
    }

    /// Queues one SQE; `false` when the submission ring is full.
    pub(crate) fn push(&mut self, sqe: &io_uring_sqe) -> bool {
        // SAFETY: head and tail are aligned u32s inside the SQ ring mapping; the kernel
        // writes the head, only this value writes the tail.
        let (head, tail) = unsafe {
            (
                (*self.sq_head).load(Ordering::Acquire),
                (*self.sq_tail).load(Ordering::Relaxed),
            )
        };
        if tail.wrapping_sub(head) >= self.sq_entries {
            return false;
        }
        let idx = tail & self.sq_mask;
        // SAFETY: `idx` < sq_entries, so the slot lies inside the SQE array and the
        // index array; the kernel does not read the slot before the tail moves past it
        // (the Release store below).
        unsafe {
            ptr::write(self.sqes.at::<io_uring_sqe>(0).add(idx as usize), *sqe);
            ptr::write(self.sq_array.add(idx as usize), idx);
            (*self.sq_tail).store(tail.wrapping_add(1), Ordering::Release);
        }
        self.unsubmitted += 1;
        true
    }

    /// Hands the queued SQEs to the kernel and waits until at least `wait` completions
    /// are ready. Retries on `EINTR`.
    pub(crate) fn submit_and_wait(&mut self, wait: u32) -> io::Result<()> {
        loop {
            let flags = if wait > 0 {
                IoringEnterFlags::GETEVENTS
            } else {
                IoringEnterFlags::empty()
            };
            // SAFETY: every queued SQE names a buffer slot registered on this ring and
            // an fd the engine keeps open until the completion is reaped.
            match unsafe { io_uring_enter(&self.fd, self.unsubmitted, wait, flags) } {
                Ok(n) => {
                    self.unsubmitted -= n.min(self.unsubmitted);
                    if self.unsubmitted == 0 {
                        return Ok(());
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// SQEs queued but not yet handed to the kernel (they will never complete).
    pub(crate) fn unsubmitted(&self) -> u32 {
        self.unsubmitted
    }

    /// The next completion (`user_data`, `res`), if one is ready.
    pub(crate) fn pop(&mut self) -> Option<(u64, i32)> {
        // SAFETY: head and tail are aligned u32s inside the CQ ring mapping; the kernel
        // writes the tail, only this value writes the head; the CQE at `head` is
        // complete once the tail (Acquire) has passed it.
        unsafe {
            let head = (*self.cq_head).load(Ordering::Relaxed);
            let tail = (*self.cq_tail).load(Ordering::Acquire);
            if head == tail {
                return None;
            }
            let cqe = self.cqes.add((head & self.cq_mask) as usize);
            let out = ((*cqe).user_data.u64_(), (*cqe).res);
            (*self.cq_head).store(head.wrapping_add(1), Ordering::Release);
            Some(out)
        }
    }

    /// `IORING_REGISTER_BUFFERS2` with `IORING_RSRC_REGISTER_SPARSE`: a table of `nr`
    /// empty buffer slots.
    pub(crate) fn register_sparse_buffers(&self, nr: u32) -> Result<(), Errno> {
        let mut rr = io_uring_rsrc_register::default();
        rr.nr = nr;
        rr.flags = IoringRsrcFlags::REGISTER_SPARSE;
        // SAFETY: `rr` is a valid argument of the size passed; the kernel only reads it.
        unsafe {
            io_uring_register(
                &self.fd,
                IoringRegisterOp::RegisterBuffers2,
                ptr::from_ref(&rr).cast(),
                size_of::<io_uring_rsrc_register>() as u32,
            )
        }
        .map(drop)
    }

    /// `IORING_REGISTER_BUFFERS_UPDATE` with `IORING_RSRC_UPDATE_EXTENDED` (the posted
    /// io_uring dma-buf series): installs `descs` from slot `offset` on. Returns how
    /// many slots the kernel updated.
    pub(crate) fn update_buffers_extended(
        &self,
        offset: u32,
        descs: &[io_uring_regbuf_desc],
    ) -> Result<u32, Errno> {
        let up = io_uring_rsrc_update2 {
            offset,
            flags: IORING_RSRC_UPDATE_EXTENDED,
            data: descs.as_ptr() as u64,
            tags: 0,
            nr: descs.len() as u32,
            resv2: 0,
        };
        // SAFETY: `up` is a valid argument of the size passed, its `data` points to
        // `nr` descriptors that outlive the call; the kernel only reads them (the fds
        // they name are borrowed by the caller for the call).
        unsafe {
            io_uring_register(
                &self.fd,
                IoringRegisterOp::RegisterBuffersUpdate,
                ptr::from_ref(&up).cast(),
                size_of::<io_uring_rsrc_update2>() as u32,
            )
        }
    }
}
