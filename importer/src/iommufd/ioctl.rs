//! The iommufd and VFIO-cdev ioctls this module issues, as safe functions over
//! the `peerdma-uapi` argument structs. The only `unsafe` of the module besides
//! the host-buffer mmap.
//!
//! Every iommufd command reads and writes one fixed-size struct whose first
//! field is its size, and returns 0: rustix's `Updater` pattern. Errors are
//! plain [`Errno`]s; callers name the ioctl and the objects involved.

use std::os::fd::BorrowedFd;

use peerdma_uapi::iommufd::{
    iommu_destroy, iommu_ioas_alloc, iommu_ioas_iova_ranges, iommu_ioas_map, iommu_ioas_map_file,
    iommu_ioas_unmap, iommu_iova_range, IOMMU_DESTROY, IOMMU_IOAS_ALLOC, IOMMU_IOAS_IOVA_RANGES,
    IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_UNMAP,
};
use peerdma_uapi::vfio::{
    vfio_device_attach_iommufd_pt, vfio_device_detach_iommufd_pt, VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
};
use rustix::io::{Errno, Result};
use rustix::ioctl::{ioctl, Updater};

/// `size_of::<T>()` as the `u32` the kernel's size/argsz fields hold.
fn size32<T>() -> u32 {
    // Every argument struct is a few dozen bytes.
    size_of::<T>() as u32
}

/// Issues an ioctl whose argument the kernel reads and writes in place.
fn update<const OPCODE: rustix::ioctl::Opcode, T>(fd: BorrowedFd<'_>, arg: &mut T) -> Result<()> {
    // SAFETY: every caller pairs OPCODE with its own argument type `T` from
    // peerdma-uapi (checked against the 7.2 headers), which the kernel reads and
    // writes within size_of::<T>() bytes, as `Updater` requires; `arg` is a
    // live exclusive reference for the duration of the call.
    unsafe { ioctl(fd, Updater::<OPCODE, T>::new(arg)) }
}

/// `IOMMU_IOAS_ALLOC`: a new empty IOAS; returns its id.
pub(crate) fn ioas_alloc(iommufd: BorrowedFd<'_>) -> Result<u32> {
    let mut arg = iommu_ioas_alloc {
        size: size32::<iommu_ioas_alloc>(),
        flags: 0,
        out_ioas_id: 0,
    };
    update::<IOMMU_IOAS_ALLOC, _>(iommufd, &mut arg)?;
    Ok(arg.out_ioas_id)
}

/// `IOMMU_DESTROY` of object `id`.
pub(crate) fn destroy(iommufd: BorrowedFd<'_>, id: u32) -> Result<()> {
    let mut arg = iommu_destroy {
        size: size32::<iommu_destroy>(),
        id,
    };
    update::<IOMMU_DESTROY, _>(iommufd, &mut arg)
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
        match update::<IOMMU_IOAS_IOVA_RANGES, _>(iommufd, &mut arg) {
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
    update::<IOMMU_IOAS_MAP, _>(iommufd, &mut arg)?;
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
    update::<IOMMU_IOAS_MAP_FILE, _>(iommufd, &mut arg)?;
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
    update::<IOMMU_IOAS_UNMAP, _>(iommufd, &mut arg)?;
    Ok(arg.length)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches a bound cdev device to the IOAS
/// (or HWPT) `pt_id`; returns the page table id the kernel attached it to.
pub(crate) fn device_attach(device: BorrowedFd<'_>, pt_id: u32) -> Result<u32> {
    let mut arg = vfio_device_attach_iommufd_pt {
        argsz: size32::<vfio_device_attach_iommufd_pt>(),
        flags: 0,
        pt_id,
        pasid: 0,
    };
    update::<VFIO_DEVICE_ATTACH_IOMMUFD_PT, _>(device, &mut arg)?;
    Ok(arg.pt_id)
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`: detaches a cdev device from its page table.
pub(crate) fn device_detach(device: BorrowedFd<'_>) -> Result<()> {
    let mut arg = vfio_device_detach_iommufd_pt {
        argsz: size32::<vfio_device_detach_iommufd_pt>(),
        flags: 0,
        pasid: 0,
    };
    update::<VFIO_DEVICE_DETACH_IOMMUFD_PT, _>(device, &mut arg)
}
