//! CPU access to a BAR through the VFIO region mmap: a [`MappedRegion`] owns
//! the mapping and unmaps it on drop.
//!
//! The mapping keeps the device file open (as the kernel's VMA does): while
//! one exists, dropping the `Device` does not close the device, so its
//! dma-bufs are not revoked for good until the mapping goes too.

use std::os::fd::AsFd;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rustix::mm::{MapFlags, ProtFlags};

use crate::device::{Device, DeviceInner};
use crate::error::{Error, Result};
use crate::sigbus::SigbusGuard;
use peerdma_host::RegionIndex;

/// A mapped span of a VFIO region (usually a BAR); unmapped on drop.
#[derive(Debug)]
pub struct MappedRegion {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    region: RegionIndex,
    offset: u64,
    device: Arc<DeviceInner>,
    /// Set by [`MappedRegion::guard_against_revoke`].
    guard: Option<SigbusGuard>,
}

// SAFETY: the mapping is device memory shared with the kernel, not tied to the
// thread that created it; every access through this type is a volatile
// read/write of a plain integer, which any thread may do. Nothing in the type
// is thread-affine.
unsafe impl Send for MappedRegion {}
// SAFETY: shared references only allow volatile loads/stores of integers;
// concurrent MMIO from several threads is the caller's protocol, not a
// memory-safety question.
unsafe impl Sync for MappedRegion {}

/// An integer width the mapping can be accessed with.
pub trait MmioValue: Copy + sealed::Sealed {}
impl MmioValue for u8 {}
impl MmioValue for u16 {}
impl MmioValue for u32 {}
impl MmioValue for u64 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

impl MappedRegion {
    /// Takes ownership of a shared mapping `ptr..ptr + map_len` (a region mmap of the
    /// device fd, or an mmap of one of its dma-bufs) of which `len` bytes are usable.
    pub(crate) fn from_mapping(
        ptr: NonNull<u8>,
        len: usize,
        map_len: usize,
        region: RegionIndex,
        offset: u64,
        device: Arc<DeviceInner>,
    ) -> MappedRegion {
        MappedRegion {
            ptr,
            len,
            map_len,
            region,
            offset,
            device,
            guard: None,
        }
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length asked for, in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: zero-length maps are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Region index.
    pub fn region(&self) -> u32 {
        self.region.get()
    }

    /// Offset of the mapping inside the region.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn check<T>(&self, offset: usize) -> Result<*mut T> {
        let width = size_of::<T>();
        let inside = offset.checked_add(width).is_some_and(|end| end <= self.len);
        if !inside || offset & (width - 1) != 0 {
            return Err(Error::MmioAccess {
                bdf: self.device.bdf,
                region: self.region,
                offset: offset as u64,
                width,
                len: self.len,
            });
        }
        // SAFETY: offset + width <= len <= the mapped length, so the pointer
        // stays inside the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(offset) }.cast())
    }

    /// Volatile read of a naturally aligned integer at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::MmioAccess`] when the access leaves the mapping or is not
    /// naturally aligned.
    pub fn read<T: MmioValue>(&self, offset: usize) -> Result<T> {
        let p = self.check::<T>(offset)?;
        // SAFETY: `check` proved the access is inside the live mapping and
        // naturally aligned; T is a plain integer, valid for any bits.
        Ok(unsafe { ptr::read_volatile(p) })
    }

    /// Volatile write of a naturally aligned integer at `offset`.
    ///
    /// # Errors
    ///
    /// [`Error::MmioAccess`] when the access leaves the mapping or is not
    /// naturally aligned.
    pub fn write<T: MmioValue>(&self, offset: usize, value: T) -> Result<()> {
        let p = self.check::<T>(offset)?;
        // SAFETY: as in `read`; the mapping was made writable or the kernel
        // faults the access (SIGBUS/SIGSEGV is the region's contract, not UB in
        // this process's memory).
        unsafe { ptr::write_volatile(p, value) };
        Ok(())
    }

    fn span_error(&self, offset: usize, span: usize, why: &'static str) -> Error {
        Error::MmioSpan {
            bdf: self.device.bdf,
            region: self.region,
            offset: offset as u64,
            span,
            len: self.len,
            why,
        }
    }

    /// Makes accesses survive a revoke. vfio-pci zaps a BAR's user mappings when it
    /// revokes (decode off, reset, D3: `vfio_pci_zap_and_down_write_memory_lock`), and
    /// the next access raises SIGBUS, which would end the process. Once guarded, such
    /// an access lands instead on anonymous memory that a process-wide SIGBUS handler
    /// maps over the whole mapping, and [`MappedRegion::revoked_under_access`] turns
    /// true: the mapping no longer reaches the BAR (map the region again once the device
    /// is live). A SIGBUS anywhere else keeps its default action. At most 8 mappings
    /// are guarded at once per process. Guarding twice is a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::SigbusGuard`] when 8 mappings are already guarded or the handler
    /// cannot be installed.
    pub fn guard_against_revoke(&mut self) -> Result<()> {
        if self.guard.is_none() {
            let guard = SigbusGuard::new(self.ptr.as_ptr(), self.map_len).map_err(|why| {
                Error::SigbusGuard {
                    bdf: self.device.bdf,
                    region: self.region,
                    why,
                }
            })?;
            self.guard = Some(guard);
        }
        Ok(())
    }

    /// Whether an access of a guarded mapping faulted because the BAR was revoked
    /// (the mapping is now anonymous memory, not the BAR); false when unguarded.
    pub fn revoked_under_access(&self) -> bool {
        self.guard.as_ref().is_some_and(SigbusGuard::faulted)
    }

    /// The span `offset..offset + len` as a pointer into the mapping.
    fn span(&self, offset: usize, len: usize) -> Result<*mut u8> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.span_error(offset, len, "leaves the end"));
        }
        // SAFETY: offset + len <= len of the mapping, so the pointer stays inside it.
        Ok(unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`, the way MMIO wants bulk
    /// data moved: aligned 16-byte loads where both sides are 16-byte aligned, else
    /// 8-byte or byte volatile accesses (never merged or split by the compiler). For
    /// registers with a required access width use [`MappedRegion::read`].
    ///
    /// A revoked BAR raises SIGBUS on access; callers that must survive a revoke
    /// call [`MappedRegion::guard_against_revoke`] first and check
    /// [`MappedRegion::revoked_under_access`] after each access.
    ///
    /// # Errors
    ///
    /// [`Error::MmioSpan`] when the span leaves the mapping.
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let src = self.span(offset, buf.len())?;
        // SAFETY: `span` proved [offset, offset + len) lies in the live mapping; `buf`
        // is a distinct, writable slice of the same length.
        unsafe { crate::mmio_copy::copy(buf.as_mut_ptr(), src, buf.len()) };
        Ok(())
    }

    /// Copies `data` to `offset`, with non-temporal 16-byte stores where both sides
    /// are 16-byte aligned (whole lines reach the device, no read-modify-write) and a
    /// store fence at the end, else 8-byte or byte volatile stores. For registers use
    /// [`MappedRegion::write`].
    ///
    /// # Errors
    ///
    /// [`Error::MmioSpan`] when the span leaves the mapping.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        let dst = self.span(offset, data.len())?;
        // SAFETY: `span` proved the span lies in the live mapping; `data` is a distinct
        // slice of the same length. The mapping was made writable or the kernel faults
        // the access (the region's contract, not UB in this process's memory).
        unsafe { crate::mmio_copy::copy(dst, data.as_ptr(), data.len()) };
        Ok(())
    }

    /// Copies `len` bytes from `offset` in this mapping to `dst_offset` in `dst`,
    /// CPU to device to device with no bounce buffer, accesses as in
    /// [`MappedRegion::write_bytes`].
    ///
    /// # Errors
    ///
    /// [`Error::MmioSpan`] when either span leaves its mapping, or when both are
    /// the same mapping (the spans could overlap).
    pub fn copy_to(
        &self,
        offset: usize,
        dst: &MappedRegion,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        let src = self.span(offset, len)?;
        let to = dst.span(dst_offset, len)?;
        if std::ptr::eq(self, dst) {
            return Err(self.span_error(
                dst_offset,
                len,
                "overlaps itself: the same mapping is both ends",
            ));
        }
        // SAFETY: both spans lie in their live mappings; two distinct MappedRegions are
        // two distinct mmaps, which do not overlap in this address space.
        unsafe { crate::mmio_copy::copy(to, src, len) };
        Ok(())
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        // The guard goes first: no SIGBUS may be pointed at an unmapped range.
        drop(self.guard.take());
        // SAFETY: ptr/map_len are exactly what mmap returned and nothing else
        // unmaps them; no reference into the mapping outlives `self`. An error
        // cannot be reported from drop and would leave only address space.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.map_len) };
    }
}

impl Device {
    /// Maps the whole region `index` (a BAR with the mmap flag and no sparse
    /// areas).
    ///
    /// # Errors
    ///
    /// As [`Device::map_region_range`] over the whole region.
    pub fn map_region(&self, index: impl Into<RegionIndex>) -> Result<MappedRegion> {
        let index = index.into();
        let info = self.region_info(index)?;
        self.map_region_range(index, 0, info.size)
    }

    /// Maps `len` bytes of region `index` at `offset` (page aligned), which must
    /// lie inside the region and, if it lists sparse areas, inside one.
    ///
    /// # Errors
    ///
    /// What [`Device::region_info`] returns; [`Error::RegionNotMappable`] when
    /// the region has no mmap flag, the length is 0, the offset is not page
    /// aligned, or the span leaves the region or its sparse areas;
    /// [`Error::Mmap`] with the errno when `mmap` fails.
    pub fn map_region_range(
        &self,
        index: impl Into<RegionIndex>,
        offset: u64,
        len: u64,
    ) -> Result<MappedRegion> {
        let index = index.into();
        let bdf = self.bdf();
        let info = self.region_info(index)?;
        let not = |reason| Error::RegionNotMappable {
            bdf,
            region: index,
            reason,
        };
        if !info.flags.mmap() {
            return Err(not("region info lacks VFIO_REGION_INFO_FLAG_MMAP"));
        }
        if len == 0 {
            return Err(not("a mapping needs a non-zero length"));
        }
        if offset & (self.page_size() - 1) != 0 {
            return Err(not("the offset is not page aligned"));
        }
        if !info.mappable(offset, len) {
            return Err(not(
                "the span is outside the region or its sparse mmap areas",
            ));
        }
        let len_usize =
            usize::try_from(len).map_err(|_| not("the span does not fit the address space"))?;
        let map_len = len_usize.div_ceil(self.page_size() as usize) * self.page_size() as usize;
        let mut prot = ProtFlags::empty();
        if info.flags.read() {
            prot |= ProtFlags::READ;
        }
        if info.flags.write() {
            prot |= ProtFlags::WRITE;
        }
        let file_offset = info
            .offset
            .checked_add(offset)
            .ok_or(not("region offset overflows"))?;
        // SAFETY: a fresh shared mapping at an address the kernel picks (null
        // hint), so it aliases no Rust object; the fd is the device fd, which
        // the returned MappedRegion keeps open through its Arc.
        let ptr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                map_len,
                prot,
                MapFlags::SHARED,
                self.inner.fd.as_fd(),
                file_offset,
            )
        }
        .map_err(|errno| Error::Mmap {
            bdf,
            region: index,
            offset,
            len,
            errno,
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Mmap {
            bdf,
            region: index,
            offset,
            len,
            errno: rustix::io::Errno::FAULT,
        })?;
        Ok(MappedRegion::from_mapping(
            ptr,
            len_usize,
            map_len,
            index,
            offset,
            Arc::clone(&self.inner),
        ))
    }
}
