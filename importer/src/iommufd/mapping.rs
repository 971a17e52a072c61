//! Mappings in an IOAS: a dma-buf range (`IOMMU_IOAS_MAP_FILE`) or host memory
//! (`IOMMU_IOAS_MAP`), placed by the IOAS's allocator, unmapped on drop.

use std::borrow::Borrow;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use peerdma_exporter::{Device, DmaBuf, FdInfo, RevokeEvent, RevokeReason, RevokeState};
use peerdma_uapi::iommufd::{
    IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE,
};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::error::{map_fix, Error, Result};
use super::iova::{FixedProblem, IovaRange};
use super::{ioctl, Ioas, IoasInner};

/// The exporter name vfio-pci gives its dma-bufs (fdinfo `exp_name`).
const VFIO_EXP_NAME: &str = "vfio_pci_core";

/// Where a mapping goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iova {
    /// peerdma's guarded placement (not the kernel's own IOVA allocation):
    /// the lowest window with a guard gap on both sides, inside the usable
    /// ranges and under the DMA-mask limit, then mapped with
    /// `IOMMU_IOAS_MAP_FIXED_IOVA`.
    Guarded,
    /// Exactly here (aligned, inside the usable ranges and the limit, not
    /// overlapping another mapping). No guard is enforced around it.
    Fixed(u64),
}

/// What devices may do through a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Devices read (the source of a DMA).
    Read,
    /// Devices write (the destination of a DMA).
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// The `IOMMU_IOAS_MAP_*` flags.
    pub fn flags(self) -> u32 {
        match self {
            Access::Read => IOMMU_IOAS_MAP_READABLE,
            Access::Write => IOMMU_IOAS_MAP_WRITEABLE,
            Access::ReadWrite => IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        }
    }
}

/// Whether DMA through a dma-buf mapping reaches the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingState {
    /// Mapped, and no revoke seen since: DMA reaches the buffer.
    Live,
    /// The exporter revoked the buffer: the kernel tore the IOMMU mapping
    /// down, DMA to the IOVA faults. The reason, when known.
    Revoked(Option<RevokeReason>),
    /// The exporter restored the buffer, but the mapping is still dead (the
    /// kernel does not rebuild it): [`DmaBufMapping::remap`].
    NeedsRemap,
    /// Nothing is mapped at the IOVA (a remap failed); the IOVA stays reserved.
    Unmapped,
}

/// What this mapping knows of its exporter's revoke lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Live,
    Revoked(Option<RevokeReason>),
    Restored,
}

/// Reserves an IOVA window for `len` bytes in `ioas`.
fn reserve(ioas: &IoasInner, iova: Iova, len: u64) -> Result<u64> {
    if len == 0 {
        return Err(Error::ZeroLength);
    }
    let mut guard = ioas.state();
    let state = &mut *guard;
    let align = ioas.load_ranges(state)?;
    let ranges: &[IovaRange] = state.ranges.as_ref().map_or(&[], |(r, _)| r);
    let placement = ioas.placement;
    if len & (align - 1) != 0 {
        return Err(Error::IovaUnaligned {
            ioas: ioas.id,
            iova: match iova {
                Iova::Fixed(v) => v,
                Iova::Guarded => 0,
            },
            len,
            align,
        });
    }
    let at = match iova {
        Iova::Guarded => state
            .alloc
            .find(ranges, align, len, placement)
            .ok_or_else(|| Error::IovaExhausted {
                ioas: ioas.id,
                len,
                guard: placement.guard,
                limit: placement.limit,
                ranges: ranges.to_vec(),
            })?,
        Iova::Fixed(at) => {
            state
                .alloc
                .check_fixed(ranges, align, at, len, placement.limit)
                .map_err(|problem| match problem {
                    FixedProblem::Unaligned => Error::IovaUnaligned {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        align,
                    },
                    FixedProblem::OverLimit => Error::IovaOverLimit {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        limit: placement.limit,
                    },
                    FixedProblem::OutsideRanges => Error::IovaOutsideRanges {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        ranges: ranges.to_vec(),
                    },
                    FixedProblem::Overlaps(existing, existing_len) => Error::IovaOverlap {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        existing,
                        existing_len,
                    },
                })?;
            at
        }
    };
    state.alloc.insert(at, len);
    Ok(at)
}

/// Releases a reservation.
fn release(ioas: &IoasInner, iova: u64) {
    ioas.state().alloc.remove(iova);
}

/// `IOMMU_IOAS_UNMAP` of exactly one mapping.
fn unmap(ioas: &IoasInner, iova: u64, len: u64) -> Result<()> {
    ioctl::ioas_unmap(ioas.fd(), ioas.id, iova, len)
        .map(|_| ())
        .map_err(|errno| Error::Ioctl {
            ioctl: "IOMMU_IOAS_UNMAP",
            ioas: ioas.id,
            errno,
            fix: "nothing is mapped there any more, or a kernel user pins it",
        })
}

/// Turns a MAP_FILE errno into the error that explains it.
#[allow(clippy::too_many_arguments)]
fn map_file_error(
    ioas: &IoasInner,
    file: BorrowedFd<'_>,
    iova: u64,
    offset: u64,
    len: u64,
    errno: Errno,
    reason: Option<RevokeReason>,
    ranges: Option<usize>,
) -> Error {
    match errno {
        Errno::OPNOTSUPP => {
            let exporter = FdInfo::of(file).ok().and_then(|i| i.exp_name);
            if exporter.as_deref() == Some(VFIO_EXP_NAME) {
                Error::DmaBufMultiRange { ranges, errno }
            } else {
                Error::DmaBufForeign { exporter, errno }
            }
        }
        Errno::NODEV => Error::DmaBufRevoked {
            iova,
            reason,
            errno,
        },
        _ => Error::Map {
            ioctl: "IOMMU_IOAS_MAP_FILE",
            ioas: ioas.id,
            iova,
            len,
            offset,
            errno,
            fix: map_fix(errno),
        },
    }
}

/// A range of a dma-buf mapped in an IOAS (`IOMMU_IOAS_MAP_FILE`), unmapped on
/// drop. It holds the buffer handle it was given (`F`: `&DmaBuf`, `Arc<DmaBuf>`,
/// a `DmaBuf`, an `OwnedFd`...) so that it can [`remap`](Self::remap) the same
/// fd after a revoke, and it keeps the IOAS alive. Mapping issues exactly the
/// `IOMMU_IOAS_MAP_FILE` ioctl, unmapping exactly `IOMMU_IOAS_UNMAP`; nothing
/// else touches the kernel on that path.
#[derive(Debug)]
pub struct DmaBufMapping<F: AsFd> {
    ioas: Arc<IoasInner>,
    file: F,
    offset: u64,
    len: u64,
    iova: u64,
    access: Access,
    mapped: bool,
    seen: Seen,
    events: Option<Receiver<RevokeEvent>>,
    ranges: Option<usize>,
}

impl<F: AsFd> DmaBufMapping<F> {
    /// The buffer handle the mapping holds.
    pub fn buffer(&self) -> &F {
        &self.file
    }

    /// The IOVA devices use.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the mapping is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the mapped range in the dma-buf.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The access devices have.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The IOAS id.
    pub fn ioas_id(&self) -> u32 {
        self.ioas.id
    }

    /// Follows `exporter`'s revoke events from now on (what
    /// [`Ioas::map_vfio_dmabuf`] does before mapping), starting from its
    /// current state. Only changes made through this process's `Device` are
    /// seen; see [`Device::subscribe`].
    pub fn follow(&mut self, exporter: &Device) {
        self.events = Some(exporter.subscribe());
        if let Ok(RevokeState::Revoked(reason)) = exporter.revoke_state() {
            self.seen = Seen::Revoked(Some(reason));
        }
    }

    /// Whether DMA through the mapping reaches the buffer, after taking in
    /// the exporter's revoke events (without [`follow`](Self::follow)ing an
    /// exporter, revokes are not seen and a mapped buffer reads as live).
    pub fn state(&mut self) -> MappingState {
        if let Some(rx) = &self.events {
            for event in rx.try_iter() {
                self.seen = match (event, self.seen) {
                    (RevokeEvent::Revoked { reason, .. }, _) => Seen::Revoked(Some(reason)),
                    (RevokeEvent::Restored { .. }, Seen::Revoked(_)) => Seen::Restored,
                    (RevokeEvent::Restored { .. }, s) => s,
                };
            }
        }
        if !self.mapped {
            return MappingState::Unmapped;
        }
        match self.seen {
            Seen::Live => MappingState::Live,
            Seen::Revoked(reason) => MappingState::Revoked(reason),
            Seen::Restored => MappingState::NeedsRemap,
        }
    }

    /// Unmaps and maps the same range of the same buffer again at the same
    /// IOVA, the way back after the exporter restores a revoked buffer. The
    /// IOVA stays reserved throughout; the IOAS and its other mappings are
    /// untouched. While the buffer is still revoked this fails with
    /// [`Error::DmaBufRevoked`] and the mapping is left
    /// [`Unmapped`](MappingState::Unmapped) (call again later).
    pub fn remap(&mut self) -> Result<()> {
        let reason = match self.state() {
            MappingState::Revoked(reason) => reason,
            _ => None,
        };
        if self.mapped {
            match unmap(&self.ioas, self.iova, self.len) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            self.mapped = false;
        }
        ioctl::ioas_map_file(
            self.ioas.fd(),
            self.ioas.id,
            self.access.flags() | IOMMU_IOAS_MAP_FIXED_IOVA,
            self.file.as_fd(),
            self.offset,
            self.len,
            self.iova,
        )
        .map_err(|errno| {
            map_file_error(
                &self.ioas,
                self.file.as_fd(),
                self.iova,
                self.offset,
                self.len,
                errno,
                reason,
                self.ranges,
            )
        })?;
        self.mapped = true;
        self.seen = Seen::Live;
        Ok(())
    }

    /// [`remap`](Self::remap)s if the exporter restored the buffer since it
    /// was revoked, or a previous remap left it unmapped; returns whether it
    /// did.
    pub fn remap_if_needed(&mut self) -> Result<bool> {
        match self.state() {
            MappingState::NeedsRemap | MappingState::Unmapped => self.remap().map(|()| true),
            MappingState::Live | MappingState::Revoked(_) => Ok(false),
        }
    }

    /// Unmaps now, reporting failure (drop does the same silently).
    pub fn unmap(mut self) -> Result<()> {
        let result = if self.mapped {
            unmap(&self.ioas, self.iova, self.len)
        } else {
            Ok(())
        };
        self.mapped = false;
        if result.is_ok() {
            release(&self.ioas, self.iova);
        }
        // Drop skips what is done; on failure the IOVA stays reserved.
        self.len = 0;
        result
    }
}

impl<F: AsFd> Drop for DmaBufMapping<F> {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if self.mapped && unmap(&self.ioas, self.iova, self.len).is_err() {
            // Still mapped in the kernel: keep the window reserved.
            return;
        }
        release(&self.ioas, self.iova);
    }
}

impl Ioas {
    /// Maps `len` bytes at `offset` of the dma-buf `buf` (`IOMMU_IOAS_MAP_FILE`)
    /// at `iova`. The buffer must be a single-range vfio-pci dma-buf; `offset`
    /// and `len` page aligned and inside it.
    ///
    /// The mapping does not see revokes unless told to
    /// ([`DmaBufMapping::follow`]); [`Ioas::map_vfio_dmabuf`] does that.
    pub fn map_dmabuf<F: AsFd>(
        &self,
        buf: F,
        offset: u64,
        len: u64,
        iova: Iova,
        access: Access,
    ) -> Result<DmaBufMapping<F>> {
        self.map_file(buf, offset, len, iova, access, None, None, None)
    }

    /// Maps `len` bytes at `offset` of `buf`, a dma-buf that `exporter`
    /// exported, and follows `exporter`'s revoke events (subscribed before
    /// mapping, so none is missed). A multi-range buffer is refused before the
    /// kernel is asked, with the error the kernel would give.
    pub fn map_vfio_dmabuf<B: Borrow<DmaBuf> + AsFd>(
        &self,
        exporter: &Device,
        buf: B,
        offset: u64,
        len: u64,
        iova: Iova,
        access: Access,
    ) -> Result<DmaBufMapping<B>> {
        let dmabuf: &DmaBuf = buf.borrow();
        if dmabuf.bdf() != exporter.bdf() {
            return Err(Error::ExporterMismatch {
                buffer: dmabuf.bdf(),
                device: exporter.bdf(),
            });
        }
        let ranges = dmabuf.ranges().len();
        if ranges != 1 {
            return Err(Error::DmaBufMultiRange {
                ranges: Some(ranges),
                errno: Errno::OPNOTSUPP,
            });
        }
        let events = exporter.subscribe();
        let reason = match exporter.revoke_state() {
            Ok(RevokeState::Revoked(reason)) => Some(reason),
            _ => None,
        };
        self.map_file(
            buf,
            offset,
            len,
            iova,
            access,
            Some(events),
            reason,
            Some(ranges),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn map_file<F: AsFd>(
        &self,
        file: F,
        offset: u64,
        len: u64,
        iova: Iova,
        access: Access,
        events: Option<Receiver<RevokeEvent>>,
        reason: Option<RevokeReason>,
        ranges: Option<usize>,
    ) -> Result<DmaBufMapping<F>> {
        let ioas = &self.inner;
        let at = reserve(ioas, iova, len)?;
        if let Err(errno) = ioctl::ioas_map_file(
            ioas.fd(),
            ioas.id,
            access.flags() | IOMMU_IOAS_MAP_FIXED_IOVA,
            file.as_fd(),
            offset,
            len,
            at,
        ) {
            release(ioas, at);
            return Err(map_file_error(
                ioas,
                file.as_fd(),
                at,
                offset,
                len,
                errno,
                reason,
                ranges,
            ));
        }
        Ok(DmaBufMapping {
            ioas: Arc::clone(ioas),
            file,
            offset,
            len,
            iova: at,
            access,
            mapped: true,
            seen: match reason {
                Some(r) => Seen::Revoked(Some(r)),
                None => Seen::Live,
            },
            events,
            ranges,
        })
    }

    /// Maps a [`UserBuffer`] (`IOMMU_IOAS_MAP`, which pins its pages) at
    /// `iova`; the mapping owns the buffer until [`UserMapping::unmap`].
    pub fn map_host(&self, buf: UserBuffer, iova: Iova, access: Access) -> Result<UserMapping> {
        let ioas = &self.inner;
        let len = buf.len() as u64;
        let at = reserve(ioas, iova, len)?;
        if let Err(errno) = ioctl::ioas_map(
            ioas.fd(),
            ioas.id,
            access.flags() | IOMMU_IOAS_MAP_FIXED_IOVA,
            buf.as_ptr() as u64,
            len,
            at,
        ) {
            release(ioas, at);
            return Err(Error::Map {
                ioctl: "IOMMU_IOAS_MAP",
                ioas: ioas.id,
                iova: at,
                len,
                offset: 0,
                errno,
                fix: map_fix(errno),
            });
        }
        Ok(UserMapping {
            ioas: Arc::clone(ioas),
            buf: Some(buf),
            iova: at,
            access,
        })
    }
}

/// Page-aligned anonymous memory for the host side of a DMA. CPU access goes
/// through copies ([`read`](Self::read), [`write`](Self::write)), never
/// through references, because a device may write it at any time.
#[derive(Debug)]
pub struct UserBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain anonymous memory owned by this value; all access
// is through raw-pointer copies bounded by `len`, which any thread may do.
unsafe impl Send for UserBuffer {}
// SAFETY: shared access only copies bytes in and out through raw pointers;
// concurrent writers race on the bytes (as a device does), not on memory safety.
unsafe impl Sync for UserBuffer {}

impl UserBuffer {
    /// `len` bytes (rounded up to whole pages) of zeroed memory, populated.
    pub fn new(len: usize) -> Result<Self> {
        let page = rustix::param::page_size();
        let len = len.max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping at an address the kernel
        // picks: it aliases nothing, and this value owns it until drop.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::POPULATE,
            )
        }
        .map_err(|errno| Error::UserBuffer {
            len: len as u64,
            errno,
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::UserBuffer {
            len: len as u64,
            errno: Errno::FAULT,
        })?;
        Ok(UserBuffer { ptr, len })
    }

    /// Size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address (what `IOMMU_IOAS_MAP` pins).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            Ok(())
        } else {
            Err(Error::UserBufferBounds {
                offset: offset as u64,
                len: len as u64,
                size: self.len as u64,
            })
        }
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        // Order the copy after DMA completion the caller observed.
        fence(Ordering::SeqCst);
        // SAFETY: `check` keeps the source inside the mapping; `out` is a
        // distinct Rust buffer, so the ranges do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), out.len())
        };
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read`, with the roles of the two buffers swapped.
        unsafe {
            ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        // Make the bytes visible before the caller starts a DMA.
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Sets every byte to `byte`.
    pub fn fill(&self, byte: u8) {
        // SAFETY: the whole mapping, which this value owns.
        unsafe { ptr::write_bytes(self.ptr.as_ptr(), byte, self.len) };
        fence(Ordering::SeqCst);
    }

    /// A copy of the whole buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        // In bounds by construction.
        let _ = self.read(0, &mut v);
        v
    }
}

impl Drop for UserBuffer {
    fn drop(&mut self) {
        // SAFETY: ptr/len are what mmap returned; nothing else unmaps them and
        // no reference into the mapping exists. If an IOAS still pins the
        // pages, the kernel keeps them until it unmaps.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A [`UserBuffer`] mapped in an IOAS (`IOMMU_IOAS_MAP`); unmapped on drop.
#[derive(Debug)]
pub struct UserMapping {
    ioas: Arc<IoasInner>,
    buf: Option<UserBuffer>,
    iova: u64,
    access: Access,
}

impl UserMapping {
    /// The IOVA devices use.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.buffer().len() as u64
    }

    /// Whether the mapping is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The access devices have.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The buffer, for CPU access.
    pub fn buffer(&self) -> &UserBuffer {
        self.buf
            .as_ref()
            .expect("a UserMapping holds its buffer until unmapped")
    }

    /// Unmaps now and gives the buffer back.
    pub fn unmap(mut self) -> Result<UserBuffer> {
        let len = self.len();
        unmap(&self.ioas, self.iova, len)?;
        release(&self.ioas, self.iova);
        Ok(self.buf.take().expect("buffer present"))
    }
}

impl Drop for UserMapping {
    fn drop(&mut self) {
        let Some(buf) = &self.buf else {
            return;
        };
        if unmap(&self.ioas, self.iova, buf.len() as u64).is_ok() {
            release(&self.ioas, self.iova);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_buffer_rounds_to_pages_and_checks_bounds() {
        let page = rustix::param::page_size();
        let b = UserBuffer::new(100).unwrap();
        assert_eq!(b.len(), page);
        assert!(b.to_vec().iter().all(|&x| x == 0));
        b.write(10, &[1, 2, 3]).unwrap();
        let mut out = [0u8; 3];
        b.read(10, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
        assert!(matches!(
            b.write(page - 1, &[0, 0]),
            Err(Error::UserBufferBounds { .. })
        ));
        assert!(matches!(
            b.read(usize::MAX, &mut out),
            Err(Error::UserBufferBounds { .. })
        ));
        b.fill(0xab);
        assert!(b.to_vec().iter().all(|&x| x == 0xab));
    }

    #[test]
    fn access_flags() {
        assert_eq!(Access::Read.flags(), IOMMU_IOAS_MAP_READABLE);
        assert_eq!(Access::Write.flags(), IOMMU_IOAS_MAP_WRITEABLE);
        assert_eq!(
            Access::ReadWrite.flags(),
            IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
        );
    }
}
