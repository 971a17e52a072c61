//! User memory for the other side of a DMA: a [`UserBuffer`] (anonymous
//! pages) mapped in an IOAS with `IOMMU_IOAS_MAP` (the kernel's `user_va`) as a
//! [`UserMapping`], unmapped on drop.

use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use peerdma_uapi::iommufd::IOMMU_IOAS_MAP_FIXED_IOVA;
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::error::{map_fix, Error, Result};
use super::ioctl::{self, IommufdIoctl};
use super::iova::{release, reserve};
use super::{Ioas, IoasInner, Iova, Prot};

impl Ioas {
    /// Maps a [`UserBuffer`] (`IOMMU_IOAS_MAP`, which pins its pages) at
    /// `iova`; the mapping owns the buffer until [`UserMapping::unmap`].
    pub fn map_host(&self, buf: UserBuffer, iova: Iova, prot: Prot) -> Result<UserMapping> {
        let ioas = &self.inner;
        let len = buf.len() as u64;
        let at = reserve(ioas, iova, len)?;
        if let Err(errno) = ioctl::ioas_map(
            ioas.fd(),
            ioas.id,
            prot.flags() | IOMMU_IOAS_MAP_FIXED_IOVA,
            buf.as_ptr() as u64,
            len,
            at,
        ) {
            release(ioas, at);
            return Err(Error::Map {
                ioctl: IommufdIoctl::IoasMap,
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
            prot,
        })
    }
}

/// Page-aligned anonymous memory for the user side of a DMA. CPU access goes
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

    /// `len` bytes (rounded up to whole 2 MiB pages) of zeroed memory on 2 MiB huge
    /// pages (`MAP_HUGETLB | MAP_HUGE_2MB`), populated: physically contiguous per 2 MiB,
    /// so a mapping at a 2 MiB-aligned IOVA (what [`Iova::Guarded`] picks for 2 MiB and
    /// more) can use 2 MiB IOMMU pages where [`new`](Self::new)'s scattered 4 KiB pages
    /// need one IOMMU page, and one IOTLB entry, each.
    ///
    /// # Errors
    ///
    /// [`Error::UserBufferHuge`] when the kernel has too few free huge pages
    /// (`ENOMEM`; `/proc/sys/vm/nr_hugepages` reserves them) or none of 2 MiB.
    pub fn huge(len: usize) -> Result<Self> {
        const HUGE: usize = 2 << 20;
        let len = len.max(1).div_ceil(HUGE) * HUGE;
        // SAFETY: a fresh private anonymous mapping at an address the kernel
        // picks: it aliases nothing, and this value owns it until drop.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::POPULATE | MapFlags::HUGETLB | MapFlags::HUGE_2MB,
            )
        }
        .map_err(|errno| Error::UserBufferHuge {
            len: len as u64,
            errno,
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::UserBufferHuge {
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
    prot: Prot,
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

    /// What devices may do through the mapping.
    pub fn prot(&self) -> Prot {
        self.prot
    }

    /// The IOAS id.
    pub fn ioas_id(&self) -> u32 {
        self.ioas.id
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
        self.ioas.unmap(self.iova, len)?;
        release(&self.ioas, self.iova);
        Ok(self.buf.take().expect("buffer present"))
    }
}

impl Drop for UserMapping {
    fn drop(&mut self) {
        let Some(buf) = &self.buf else {
            return;
        };
        if self.ioas.unmap(self.iova, buf.len() as u64).is_ok() {
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
    fn huge_buffer_is_whole_2mib_pages_or_names_the_reservation() {
        // Hosts differ in reserved huge pages: with some, the buffer is whole 2 MiB pages
        // at a 2 MiB-aligned address; without, the error says how to reserve them.
        match UserBuffer::huge(100) {
            Ok(b) => {
                assert_eq!(b.len(), 2 << 20);
                assert_eq!(b.as_ptr() as usize % (2 << 20), 0);
                b.write(b.len() - 1, &[7]).unwrap();
            }
            Err(e) => {
                assert!(matches!(e, Error::UserBufferHuge { len, .. } if len == 2 << 20));
                assert!(e.to_string().contains("nr_hugepages"), "{e}");
                assert!(!e.to_string().contains("os error"), "{e}");
            }
        }
    }
}
