//! The iommufd ioctls this module issues, as safe functions over the
//! `peerdma-uapi` argument structs. The only `unsafe` of the module besides
//! the host-buffer mmap. (The VFIO device ioctls that attach a device to an
//! IOAS are [`Device`](peerdma_exporter::Device) methods.)
//!
//! Every iommufd command reads and writes one fixed-size struct whose first
//! field is its size, and returns 0: rustix's `Updater` pattern, bound to its
//! opcode by the `peerdma_uapi::iommufd` aliases. Errors are plain [`Errno`]s;
//! callers name the ioctl and the objects involved.

use std::os::fd::BorrowedFd;

use peerdma_uapi::ioctl::ioctl;
use peerdma_uapi::iommufd::{
    iommu_destroy, iommu_ioas_alloc, iommu_ioas_iova_ranges, iommu_ioas_map, iommu_ioas_map_file,
    iommu_ioas_unmap, iommu_iova_range, IommuDestroy, IommuIoasAlloc, IommuIoasIovaRanges,
    IommuIoasMap, IommuIoasMapFile, IommuIoasUnmap,
};
use rustix::io::{Errno, Result};

/// The iommufd ioctls this module issues, by the name `linux/iommufd.h` gives them:
/// what [`Error::Ioctl`](super::Error::Ioctl) and [`Error::Map`](super::Error::Map)
/// name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommufdIoctl {
    /// `IOMMU_IOAS_ALLOC`.
    IoasAlloc,
    /// `IOMMU_IOAS_IOVA_RANGES`.
    IoasIovaRanges,
    /// `IOMMU_IOAS_MAP` (user memory).
    IoasMap,
    /// `IOMMU_IOAS_MAP_FILE` (a dma-buf or memfd).
    IoasMapFile,
    /// `IOMMU_IOAS_UNMAP`.
    IoasUnmap,
}

impl IommufdIoctl {
    /// The name as `linux/iommufd.h` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            IommufdIoctl::IoasAlloc => "IOMMU_IOAS_ALLOC",
            IommufdIoctl::IoasIovaRanges => "IOMMU_IOAS_IOVA_RANGES",
            IommufdIoctl::IoasMap => "IOMMU_IOAS_MAP",
            IommufdIoctl::IoasMapFile => "IOMMU_IOAS_MAP_FILE",
            IommufdIoctl::IoasUnmap => "IOMMU_IOAS_UNMAP",
        }
    }
}

impl std::fmt::Display for IommufdIoctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `size_of::<T>()` as the `u32` the kernel's size/argsz fields hold.
fn size32<T>() -> u32 {
    // Every argument struct is a few dozen bytes.
    size_of::<T>() as u32
}

/// `IOMMU_IOAS_ALLOC`: a new empty IOAS; returns its id.
pub(crate) fn ioas_alloc(iommufd: BorrowedFd<'_>) -> Result<u32> {
    let mut arg = iommu_ioas_alloc {
        size: size32::<iommu_ioas_alloc>(),
        flags: 0,
        out_ioas_id: 0,
    };
    // SAFETY: the alias binds the opcode to `arg`'s type, size field set.
    unsafe { ioctl(iommufd, IommuIoasAlloc::new(&mut arg)) }?;
    Ok(arg.out_ioas_id)
}

/// `IOMMU_DESTROY` of object `id`.
pub(crate) fn destroy(iommufd: BorrowedFd<'_>, id: u32) -> Result<()> {
    let mut arg = iommu_destroy {
        size: size32::<iommu_destroy>(),
        id,
    };
    // SAFETY: the alias binds the opcode to `arg`'s type, size field set.
    unsafe { ioctl(iommufd, IommuDestroy::new(&mut arg)) }
}

/// `IOMMU_IOAS_IOVA_RANGES`: the usable IOVA ranges of an IOAS and the
/// alignment its mappings need.
pub(crate) fn ioas_iova_ranges(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
) -> Result<(Vec<iommu_iova_range>, u64)> {
    let mut ranges: Vec<iommu_iova_range> = Vec::new();
    loop {
        let mut arg = iommu_ioas_iova_ranges {
            size: size32::<iommu_ioas_iova_ranges>(),
            ioas_id: ioas,
            num_iovas: u32::try_from(ranges.len()).map_err(|_| Errno::OVERFLOW)?,
            __reserved: 0,
            allowed_iovas: ranges.as_mut_ptr() as u64,
            out_iova_alignment: 0,
        };
        // SAFETY: the alias binds the opcode to `arg`'s type, size field set;
        // allowed_iovas points to `ranges`, which has room for num_iovas entries
        // and outlives the call.
        let done = unsafe { ioctl(iommufd, IommuIoasIovaRanges::new(&mut arg)) };
        match done {
            // The kernel wrote num_iovas <= capacity entries.
            Ok(()) => {
                ranges.truncate(arg.num_iovas as usize);
                return Ok((ranges, arg.out_iova_alignment));
            }
            // Too small: num_iovas holds the count needed; the ranges may
            // change between calls, so try again with that many.
            Err(Errno::MSGSIZE) => {
                ranges = vec![iommu_iova_range { start: 0, last: 0 }; arg.num_iovas as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

/// `IOMMU_IOAS_MAP` of process memory; returns the IOVA (the kernel's choice
/// unless `flags` has FIXED_IOVA).
pub(crate) fn ioas_map(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
    flags: u32,
    user_va: u64,
    length: u64,
    iova: u64,
) -> Result<u64> {
    let mut arg = iommu_ioas_map {
        size: size32::<iommu_ioas_map>(),
        flags,
        ioas_id: ioas,
        __reserved: 0,
        user_va,
        length,
        iova,
    };
    // SAFETY: the alias binds the opcode to `arg`'s type, size field set; the
    // kernel pins the pages at user_va (the caller keeps them mapped while they
    // are mapped here) and writes no memory through it.
    unsafe { ioctl(iommufd, IommuIoasMap::new(&mut arg)) }?;
    Ok(arg.iova)
}

/// `IOMMU_IOAS_MAP_FILE` of `length` bytes at `start` of `file` (a dma-buf or
/// memfd); returns the IOVA.
pub(crate) fn ioas_map_file(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
    flags: u32,
    file: BorrowedFd<'_>,
    start: u64,
    length: u64,
    iova: u64,
) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let mut arg = iommu_ioas_map_file {
        size: size32::<iommu_ioas_map_file>(),
        flags,
        ioas_id: ioas,
        fd: file.as_raw_fd(),
        start,
        length,
        iova,
    };
    // SAFETY: the alias binds the opcode to `arg`'s type, size field set.
    unsafe { ioctl(iommufd, IommuIoasMapFile::new(&mut arg)) }?;
    Ok(arg.iova)
}

/// `IOMMU_IOAS_UNMAP` of `iova..iova+length`; returns the bytes unmapped.
pub(crate) fn ioas_unmap(
    iommufd: BorrowedFd<'_>,
    ioas: u32,
    iova: u64,
    length: u64,
) -> Result<u64> {
    let mut arg = iommu_ioas_unmap {
        size: size32::<iommu_ioas_unmap>(),
        ioas_id: ioas,
        iova,
        length,
    };
    // SAFETY: the alias binds the opcode to `arg`'s type, size field set.
    unsafe { ioctl(iommufd, IommuIoasUnmap::new(&mut arg)) }?;
    Ok(arg.length)
}
