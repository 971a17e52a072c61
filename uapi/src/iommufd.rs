//! iommufd (`linux/iommufd.h`): I/O address spaces (IOAS) on `/dev/iommu`, and mapping
//! process memory or a file such as a dma-buf (`IOMMU_IOAS_MAP_FILE`) into them.
//!
//! The argument structs are `iommufd-bindings` 0.2's, which match the 7.2 header; the
//! flag constants get their kernel names back (bindgen prefixes them with the enum
//! name) and the opcodes are defined here.

use iommufd_bindings::iommufd as raw;
use rustix::ioctl::{opcode, Opcode, Updater};

/// `IOMMU_DESTROY` argument: frees the iommufd object `id` (IOAS, HWPT...).
pub use iommufd_bindings::iommufd::iommu_destroy;
/// `IOMMU_IOAS_ALLOC` argument: returns the id of a new, empty IOAS.
pub use iommufd_bindings::iommufd::iommu_ioas_alloc;
/// `IOMMU_IOAS_IOVA_RANGES` argument: fills the user array at `allowed_iovas` with up to
/// `num_iovas` usable ranges, sets `num_iovas` to the real count and the required
/// IOVA alignment.
pub use iommufd_bindings::iommufd::iommu_ioas_iova_ranges;
/// `IOMMU_IOAS_MAP` argument: maps `length` bytes of process memory at `user_va`.
pub use iommufd_bindings::iommufd::iommu_ioas_map;
/// `IOMMU_IOAS_MAP_FILE` argument: maps `length` bytes at offset `start` of the file
/// (memfd or dma-buf) `fd`; the way a vfio BAR dma-buf reaches an IOAS.
pub use iommufd_bindings::iommufd::iommu_ioas_map_file;
/// `IOMMU_IOAS_UNMAP` argument: unmaps `iova..iova+length` (0/0 = everything); the kernel
/// writes back the length unmapped.
pub use iommufd_bindings::iommufd::iommu_ioas_unmap;
/// One IOVA interval `start..=last`, as used by `IOMMU_IOAS_IOVA_RANGES`.
pub use iommufd_bindings::iommufd::iommu_iova_range;

/// The ioctl type byte of iommufd (`';'`, the same as VFIO's).
pub use iommufd_bindings::iommufd::IOMMUFD_TYPE;
/// First iommufd command number; command `c` is `_IO(IOMMUFD_TYPE, c)`.
pub const IOMMUFD_CMD_BASE: u32 = raw::IOMMUFD_CMD_BASE;

/// Map flag: place the mapping exactly at `iova` (else the kernel picks and returns it).
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = raw::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA;
/// Map flag: devices may write through the mapping.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = raw::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
/// Map flag: devices may read through the mapping.
pub const IOMMU_IOAS_MAP_READABLE: u32 = raw::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE;

const fn iommufd_io(cmd: u32) -> Opcode {
    opcode::none(IOMMUFD_TYPE, cmd as u8)
}

/// Destroys an iommufd object ([`iommu_destroy`]).
pub const IOMMU_DESTROY: Opcode = iommufd_io(raw::IOMMUFD_CMD_DESTROY);
/// Allocates an IOAS ([`iommu_ioas_alloc`]).
pub const IOMMU_IOAS_ALLOC: Opcode = iommufd_io(raw::IOMMUFD_CMD_IOAS_ALLOC);
/// Lists the IOVA ranges an IOAS can map ([`iommu_ioas_iova_ranges`]).
pub const IOMMU_IOAS_IOVA_RANGES: Opcode = iommufd_io(raw::IOMMUFD_CMD_IOAS_IOVA_RANGES);
/// Maps process memory into an IOAS ([`iommu_ioas_map`]).
pub const IOMMU_IOAS_MAP: Opcode = iommufd_io(raw::IOMMUFD_CMD_IOAS_MAP);
/// Unmaps a range of an IOAS ([`iommu_ioas_unmap`]).
pub const IOMMU_IOAS_UNMAP: Opcode = iommufd_io(raw::IOMMUFD_CMD_IOAS_UNMAP);
/// Maps a file / dma-buf range into an IOAS ([`iommu_ioas_map_file`]).
pub const IOMMU_IOAS_MAP_FILE: Opcode = iommufd_io(raw::IOMMUFD_CMD_IOAS_MAP_FILE);

// Opcodes bound to their argument (checked by the layout test). Every iommufd command
// reads and writes one struct whose first field is its size, and returns 0.

/// `IOMMU_DESTROY`.
pub type IommuDestroy<'a> = Updater<'a, IOMMU_DESTROY, iommu_destroy>;
/// `IOMMU_IOAS_ALLOC`.
pub type IommuIoasAlloc<'a> = Updater<'a, IOMMU_IOAS_ALLOC, iommu_ioas_alloc>;
/// `IOMMU_IOAS_IOVA_RANGES` (the kernel also writes the array `allowed_iovas` points to).
pub type IommuIoasIovaRanges<'a> = Updater<'a, IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges>;
/// `IOMMU_IOAS_MAP`.
pub type IommuIoasMap<'a> = Updater<'a, IOMMU_IOAS_MAP, iommu_ioas_map>;
/// `IOMMU_IOAS_MAP_FILE`.
pub type IommuIoasMapFile<'a> = Updater<'a, IOMMU_IOAS_MAP_FILE, iommu_ioas_map_file>;
/// `IOMMU_IOAS_UNMAP`.
pub type IommuIoasUnmap<'a> = Updater<'a, IOMMU_IOAS_UNMAP, iommu_ioas_unmap>;
