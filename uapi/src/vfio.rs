//! VFIO (`linux/vfio.h`): the container/group API, the device API, the cdev + iommufd
//! binding, device features (including `VFIO_DEVICE_FEATURE_DMA_BUF`, which exports BAR
//! ranges as dma-bufs) and the type1 IOMMU backend.
//!
//! The argument structs are `vfio-bindings` 0.7's, which match the 7.2 header, except
//! [`vfio_region_dma_range`] (defined here with the same layout, to compare and hash);
//! the opcodes are defined here.

use core::ffi::CStr;

use rustix::ioctl::{opcode, IntegerSetter, NoArg, Opcode, Setter, Updater};

use crate::flex::{DmaBufFeature, Feature};
use crate::ioctl::{FdOut, FlexUpdater, IntOut};

// ----------------------------------------------------------------------------------------
// Argument structs (re-exported: identical to the 7.2 header, proven by the layout test).

/// Common header of every entry in a VFIO info capability chain (`id`, `version`,
/// `next` = offset of the next entry from the start of the info struct, 0 ends the chain).
pub use vfio_bindings::bindings::vfio::vfio_info_cap_header;

/// `VFIO_GROUP_GET_STATUS` argument: whether the group is viable and has a container.
pub use vfio_bindings::bindings::vfio::vfio_group_status;

/// `VFIO_DEVICE_GET_INFO` argument: device flags and the number of regions and irqs.
pub use vfio_bindings::bindings::vfio::vfio_device_info;

/// `VFIO_DEVICE_GET_REGION_INFO` argument: size, flags and the device-fd offset of one
/// region (BAR, ROM, config space...), followed by a capability chain when
/// `VFIO_REGION_INFO_FLAG_CAPS` is set.
pub use vfio_bindings::bindings::vfio::vfio_region_info;

/// One mmap-able window of a region (offset and size within the region).
pub use vfio_bindings::bindings::vfio::vfio_region_sparse_mmap_area;

/// Region capability `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: the only parts of the region
/// that may be mmapped (vfio-pci uses it to carve the MSI-X table out of a BAR).
pub use vfio_bindings::bindings::vfio::vfio_region_info_cap_sparse_mmap;

/// Region capability `VFIO_REGION_INFO_CAP_TYPE`: type/subtype of a device-specific region.
pub use vfio_bindings::bindings::vfio::vfio_region_info_cap_type;

/// `VFIO_DEVICE_GET_IRQ_INFO` argument: flags and vector count of one irq index.
pub use vfio_bindings::bindings::vfio::vfio_irq_info;

/// `VFIO_DEVICE_FEATURE` argument header: `argsz`, `flags` (feature number | GET/SET/PROBE)
/// and the feature's payload in `data`. Build it with [`crate::flex::Feature`].
pub use vfio_bindings::bindings::vfio::vfio_device_feature;

/// One range of a BAR (offset and length, both page-aligned) placed in a dma-buf
/// (`struct vfio_region_dma_range`).
///
/// Defined here, with the header's layout, rather than re-exported from `vfio-bindings`:
/// it also compares and hashes, so that `peerdma-exporter` uses it as its `DmaRange` and a
/// dma-buf's argument buffer serves as its record of the ranges it was made of.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct vfio_region_dma_range {
    /// Offset from the start of the BAR.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

impl vfio_region_dma_range {
    /// A range of `length` bytes at `offset`.
    pub const fn new(offset: u64, length: u64) -> Self {
        Self { offset, length }
    }
}

// The element of `vfio_device_feature_dma_buf.dma_ranges` (the bindings' own struct).
const _: () = {
    use vfio_bindings::bindings::vfio::vfio_region_dma_range as Bindings;
    assert!(size_of::<vfio_region_dma_range>() == size_of::<Bindings>());
    assert!(align_of::<vfio_region_dma_range>() == align_of::<Bindings>());
    assert!(
        core::mem::offset_of!(vfio_region_dma_range, offset)
            == core::mem::offset_of!(Bindings, offset)
    );
    assert!(
        core::mem::offset_of!(vfio_region_dma_range, length)
            == core::mem::offset_of!(Bindings, length)
    );
};

/// Payload of `VFIO_DEVICE_FEATURE_DMA_BUF`: region (BAR) index, `open(2)` flags for the
/// new fd, `flags` (must be 0), then `nr_ranges` ranges. Build it with
/// [`crate::flex::FlexBuf`]`<`[`crate::flex::Feature`]`<Self>>`.
pub use vfio_bindings::bindings::vfio::vfio_device_feature_dma_buf;

/// `VFIO_DEVICE_BIND_IOMMUFD` argument: binds a cdev device fd to an iommufd and returns
/// the device id iommufd knows it by.
pub use vfio_bindings::bindings::vfio::vfio_device_bind_iommufd;

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` argument: attaches the bound device to an IOAS or
/// HWPT (`pt_id`); the kernel may replace `pt_id` with the HWPT it created.
pub use vfio_bindings::bindings::vfio::vfio_device_attach_iommufd_pt;

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT` argument.
pub use vfio_bindings::bindings::vfio::vfio_device_detach_iommufd_pt;

/// `VFIO_IOMMU_GET_INFO` argument (type1 container): supported IOVA page sizes, then a
/// capability chain (IOVA ranges, DMA mapping limit).
pub use vfio_bindings::bindings::vfio::vfio_iommu_type1_info;

/// `VFIO_IOMMU_MAP_DMA` argument: map `size` bytes of process memory at `vaddr` to `iova`.
pub use vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_map;

/// `VFIO_IOMMU_UNMAP_DMA` argument: unmap `size` bytes at `iova` (or everything).
pub use vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_unmap;

/// One usable IOVA window (`start..=end`) of a type1 container.
pub use vfio_bindings::bindings::vfio::vfio_iova_range;

/// Type1 capability `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`: the usable IOVA windows.
pub use vfio_bindings::bindings::vfio::vfio_iommu_type1_info_cap_iova_range;

// ----------------------------------------------------------------------------------------
// Constants (re-exported: the values match the 7.2 header, proven by the layout test).

/// The only API version `VFIO_GET_API_VERSION` has ever returned.
pub use vfio_bindings::bindings::vfio::VFIO_API_VERSION;
/// First VFIO ioctl number; VFIO ioctl `n` is `_IO(VFIO_TYPE, VFIO_BASE + n)`.
pub use vfio_bindings::bindings::vfio::VFIO_BASE;
/// The ioctl type byte (`';'`) shared by VFIO and iommufd.
pub use vfio_bindings::bindings::vfio::VFIO_TYPE;

/// IOMMU backend / extension: type1 v2 (the one to `VFIO_SET_IOMMU`).
pub use vfio_bindings::bindings::vfio::VFIO_TYPE1v2_IOMMU;
/// IOMMU backend / extension: the unsafe no-IOMMU mode (no DMA translation at all).
pub use vfio_bindings::bindings::vfio::VFIO_NOIOMMU_IOMMU;
/// IOMMU backend / extension: type1 (x86 and most platforms).
pub use vfio_bindings::bindings::vfio::VFIO_TYPE1_IOMMU;
/// Extension: `VFIO_IOMMU_UNMAP_DMA` accepts `VFIO_DMA_UNMAP_FLAG_ALL`.
pub use vfio_bindings::bindings::vfio::VFIO_UNMAP_ALL;

/// `vfio_group_status.flags`: the group is attached to a container.
pub use vfio_bindings::bindings::vfio::VFIO_GROUP_FLAGS_CONTAINER_SET;
/// `vfio_group_status.flags`: every device of the group is bound to vfio (or no driver).
pub use vfio_bindings::bindings::vfio::VFIO_GROUP_FLAGS_VIABLE;

/// `vfio_device_info.flags`: `cap_offset` points to a capability chain.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FLAGS_CAPS;
/// `vfio_device_info.flags`: a vfio-pci device (PCI region and irq indices apply).
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FLAGS_PCI;
/// `vfio_device_info.flags`: the device supports `VFIO_DEVICE_RESET`.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FLAGS_RESET;

/// Device capability id: the PCIe AtomicOp completer sizes the device's root port
/// supports.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP;
/// `vfio_region_info.flags`: `cap_offset` points to a capability chain.
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_CAPS;
/// `vfio_region_info.flags`: the region (or its sparse areas) can be mmapped.
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_MMAP;

/// `vfio_region_info.flags`: the region can be read through the device fd.
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_READ;
/// `vfio_region_info.flags`: the region can be written through the device fd.
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_WRITE;

/// Region capability id (header only): the MSI-X table in this BAR may be mmapped too.
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE;
/// Region capability id of [`vfio_region_info_cap_sparse_mmap`].
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_CAP_SPARSE_MMAP;
/// Region capability id of [`vfio_region_info_cap_type`].
pub use vfio_bindings::bindings::vfio::VFIO_REGION_INFO_CAP_TYPE;

/// `vfio_irq_info.flags`: masked by the kernel when it fires (level-triggered INTx).
pub use vfio_bindings::bindings::vfio::VFIO_IRQ_INFO_AUTOMASKED;
/// `vfio_irq_info.flags`: signalled through an eventfd.
pub use vfio_bindings::bindings::vfio::VFIO_IRQ_INFO_EVENTFD;
/// `vfio_irq_info.flags`: can be masked.
pub use vfio_bindings::bindings::vfio::VFIO_IRQ_INFO_MASKABLE;
/// `vfio_irq_info.flags`: the vector count cannot be changed once enabled.
pub use vfio_bindings::bindings::vfio::VFIO_IRQ_INFO_NORESIZE;

/// Feature number 11: export BAR ranges as a dma-buf (GET only; returns the new fd).
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FEATURE_DMA_BUF;
/// `vfio_device_feature.flags`: read the feature (for DMA_BUF: create the dma-buf).
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FEATURE_GET;
/// `vfio_device_feature.flags`: the bits that hold the feature number.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FEATURE_MASK;
/// `vfio_device_feature.flags`: only ask whether GET/SET would be supported.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FEATURE_PROBE;
/// `vfio_device_feature.flags`: write the feature.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_FEATURE_SET;

/// `vfio_device_attach_iommufd_pt.flags`: attach only the given PASID.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_ATTACH_PASID;
/// `vfio_device_bind_iommufd.flags`: `token_uuid_ptr` points to the VF token.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_BIND_FLAG_TOKEN;
/// `vfio_device_detach_iommufd_pt.flags`: detach only the given PASID.
pub use vfio_bindings::bindings::vfio::VFIO_DEVICE_DETACH_PASID;

/// `vfio_iommu_type1_info.flags`: `cap_offset` points to a capability chain.
pub use vfio_bindings::bindings::vfio::VFIO_IOMMU_INFO_CAPS;
/// `vfio_iommu_type1_info.flags`: `iova_pgsizes` is valid.
pub use vfio_bindings::bindings::vfio::VFIO_IOMMU_INFO_PGSIZES;
/// Type1 capability id of [`vfio_iommu_type1_info_cap_iova_range`].
pub use vfio_bindings::bindings::vfio::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;

/// `vfio_iommu_type1_dma_map.flags`: the device may read the mapping.
pub use vfio_bindings::bindings::vfio::VFIO_DMA_MAP_FLAG_READ;
/// `vfio_iommu_type1_dma_map.flags`: the device may write the mapping.
pub use vfio_bindings::bindings::vfio::VFIO_DMA_MAP_FLAG_WRITE;
/// `vfio_iommu_type1_dma_unmap.flags`: unmap every mapping (iova and size must be 0).
pub use vfio_bindings::bindings::vfio::VFIO_DMA_UNMAP_FLAG_ALL;

/// vfio-pci region index of BAR 0.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_BAR0_REGION_INDEX;
/// vfio-pci region index of BAR 1.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_BAR1_REGION_INDEX;
/// vfio-pci region index of BAR 2.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_BAR2_REGION_INDEX;
/// vfio-pci region index of BAR 3.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_BAR3_REGION_INDEX;
/// vfio-pci region index of BAR 4.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_BAR4_REGION_INDEX;
/// vfio-pci region index of BAR 5.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_BAR5_REGION_INDEX;
/// vfio-pci region index of PCI configuration space (virtualized by vfio-pci).
pub use vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;
/// Number of fixed vfio-pci region indices; device-specific regions follow.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_NUM_REGIONS;
/// vfio-pci region index of the expansion ROM.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_ROM_REGION_INDEX;
/// vfio-pci region index of the legacy VGA ranges (VGA-class devices only).
pub use vfio_bindings::bindings::vfio::VFIO_PCI_VGA_REGION_INDEX;

/// vfio-pci irq index of the AER error notification.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_ERR_IRQ_INDEX;
/// vfio-pci irq index of legacy INTx.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_INTX_IRQ_INDEX;
/// vfio-pci irq index of MSI-X.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_MSIX_IRQ_INDEX;
/// vfio-pci irq index of MSI.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_MSI_IRQ_INDEX;
/// Number of vfio-pci irq indices.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_NUM_IRQS;
/// vfio-pci irq index of the "device release requested" notification.
pub use vfio_bindings::bindings::vfio::VFIO_PCI_REQ_IRQ_INDEX;

// ----------------------------------------------------------------------------------------
// Ioctl opcodes: `_IO(VFIO_TYPE, VFIO_BASE + n)`. VFIO encodes no size or direction; the
// argument's own `argsz` tells the kernel how much to copy.

const fn vfio_io(n: u8) -> Opcode {
    opcode::none(VFIO_TYPE, VFIO_BASE as u8 + n)
}

/// Container fd: returns `VFIO_API_VERSION` (no argument).
pub const VFIO_GET_API_VERSION: Opcode = vfio_io(0);
/// Container fd: returns > 0 if the extension / IOMMU type given as the argument exists.
pub const VFIO_CHECK_EXTENSION: Opcode = vfio_io(1);
/// Container fd: selects the IOMMU backend (argument: e.g. `VFIO_TYPE1v2_IOMMU`).
pub const VFIO_SET_IOMMU: Opcode = vfio_io(2);
/// Group fd: fills a [`vfio_group_status`].
pub const VFIO_GROUP_GET_STATUS: Opcode = vfio_io(3);
/// Group fd: attaches the group to a container (argument: `*const i32` container fd).
pub const VFIO_GROUP_SET_CONTAINER: Opcode = vfio_io(4);
/// Group fd: detaches the group from its container (no argument).
pub const VFIO_GROUP_UNSET_CONTAINER: Opcode = vfio_io(5);
/// Group fd: returns a device fd for the NUL-terminated device name (PCI BDF) argument.
pub const VFIO_GROUP_GET_DEVICE_FD: Opcode = vfio_io(6);
/// Device fd: fills a [`vfio_device_info`].
pub const VFIO_DEVICE_GET_INFO: Opcode = vfio_io(7);
/// Device fd: fills a [`vfio_region_info`] (and its capability chain if argsz allows).
pub const VFIO_DEVICE_GET_REGION_INFO: Opcode = vfio_io(8);
/// Device fd: fills a [`vfio_irq_info`].
pub const VFIO_DEVICE_GET_IRQ_INFO: Opcode = vfio_io(9);
/// Device fd: resets the device (revokes its dma-bufs while it runs).
pub const VFIO_DEVICE_RESET: Opcode = vfio_io(11);
/// Device fd: get/set/probe a device feature ([`vfio_device_feature`]); with
/// `VFIO_DEVICE_FEATURE_DMA_BUF | GET` the return value is the new dma-buf fd.
pub const VFIO_DEVICE_FEATURE: Opcode = vfio_io(17);
/// Cdev device fd: binds it to an iommufd ([`vfio_device_bind_iommufd`]).
pub const VFIO_DEVICE_BIND_IOMMUFD: Opcode = vfio_io(18);
/// Cdev device fd: attaches it to an IOAS/HWPT ([`vfio_device_attach_iommufd_pt`]).
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: Opcode = vfio_io(19);
/// Cdev device fd: detaches it from its IOAS/HWPT ([`vfio_device_detach_iommufd_pt`]).
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: Opcode = vfio_io(20);
/// Type1 container fd: fills a [`vfio_iommu_type1_info`].
pub const VFIO_IOMMU_GET_INFO: Opcode = vfio_io(12);
/// Type1 container fd: maps process memory for DMA ([`vfio_iommu_type1_dma_map`]).
pub const VFIO_IOMMU_MAP_DMA: Opcode = vfio_io(13);
/// Type1 container fd: unmaps DMA ([`vfio_iommu_type1_dma_unmap`]; the kernel writes
/// back the unmapped size).
pub const VFIO_IOMMU_UNMAP_DMA: Opcode = vfio_io(14);

// ----------------------------------------------------------------------------------------
// Opcodes bound to their argument and return value (checked by the layout test).

/// `VFIO_GET_API_VERSION`: no argument, returns the version.
pub type VfioGetApiVersion = IntOut<VFIO_GET_API_VERSION>;
/// `VFIO_CHECK_EXTENSION`: the extension by value, returns > 0 if supported.
pub type VfioCheckExtension = IntOut<VFIO_CHECK_EXTENSION>;
/// `VFIO_SET_IOMMU`: the IOMMU type by value.
pub type VfioSetIommu = IntegerSetter<VFIO_SET_IOMMU>;
/// `VFIO_GROUP_GET_STATUS`: fills a [`vfio_group_status`].
pub type VfioGroupGetStatus<'a> = Updater<'a, VFIO_GROUP_GET_STATUS, vfio_group_status>;
/// `VFIO_GROUP_SET_CONTAINER`: reads the container fd through a pointer.
pub type VfioGroupSetContainer = Setter<VFIO_GROUP_SET_CONTAINER, i32>;
/// `VFIO_GROUP_GET_DEVICE_FD`: reads the device name, returns the new device fd.
pub type VfioGroupGetDeviceFd<'a> = FdOut<'a, VFIO_GROUP_GET_DEVICE_FD, CStr>;
/// `VFIO_DEVICE_GET_INFO`: fills a [`vfio_device_info`] and its capability chain.
pub type VfioDeviceGetInfo<'a> = FlexUpdater<'a, VFIO_DEVICE_GET_INFO, vfio_device_info>;
/// `VFIO_DEVICE_GET_REGION_INFO`: fills a [`vfio_region_info`] and its capability chain.
pub type VfioDeviceGetRegionInfo<'a> =
    FlexUpdater<'a, VFIO_DEVICE_GET_REGION_INFO, vfio_region_info>;
/// `VFIO_DEVICE_RESET`: no argument.
pub type VfioDeviceReset = NoArg<VFIO_DEVICE_RESET>;
/// `VFIO_DEVICE_FEATURE` with `PROBE`: a bare [`vfio_device_feature`] header.
pub type VfioDeviceFeatureProbe<'a> = Updater<'a, VFIO_DEVICE_FEATURE, Feature<()>>;
/// `VFIO_DEVICE_FEATURE` with `GET | DMA_BUF`: the feature header, the dma-buf request
/// and its ranges; returns the new dma-buf fd.
pub type VfioDeviceFeatureDmaBuf<'a> = FdOut<'a, VFIO_DEVICE_FEATURE, DmaBufFeature>;
/// `VFIO_DEVICE_BIND_IOMMUFD`: reads the iommufd, writes back `out_devid`.
pub type VfioDeviceBindIommufd<'a> =
    Updater<'a, VFIO_DEVICE_BIND_IOMMUFD, vfio_device_bind_iommufd>;
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: reads `pt_id`, writes back the page table attached.
pub type VfioDeviceAttachIommufdPt<'a> =
    Updater<'a, VFIO_DEVICE_ATTACH_IOMMUFD_PT, vfio_device_attach_iommufd_pt>;
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`.
pub type VfioDeviceDetachIommufdPt<'a> =
    Updater<'a, VFIO_DEVICE_DETACH_IOMMUFD_PT, vfio_device_detach_iommufd_pt>;
