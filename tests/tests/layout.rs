//! Proves `peerdma-uapi` against the real Linux 7.2 user-space headers.
//!
//! One macro-driven list below names every struct (with every field), constant and ioctl
//! opcode the crate defines or re-exports. From that list the test generates both sides:
//! a C program that `#include`s the 7.2 headers and prints `sizeof`, `_Alignof`,
//! `offsetof` and the size of every field, and the value of every constant and opcode;
//! and the same facts computed in Rust with `size_of`, `align_of` and `offset_of!`. It
//! compiles and runs the program with `cc` and fails on any difference, naming the item
//! and both values. Each ioctl alias (`vfio::VfioGroupGetStatus`...) is checked too: its
//! opcode, the size of the argument it binds, and, for opcodes that encode a size, that
//! size. The Rust side also proves (with exhaustive patterns) that every field
//! of every struct is listed, and a second test proves that every public item in
//! `uapi/src` is listed, so neither side can drift from the crate.
//!
//! Headers: `peerdma_testbed::debian::uapi_headers()` (linux-libc-dev 7.2 from Debian
//! sid, cached), or the directory in `PEERDMA_UAPI_HEADERS`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(unused_imports)]
use peerdma_uapi::{__IncompleteArrayField, dma_buf, drm, iommufd, pci, udmabuf, vfio};
use peerdma_uapi::{flex::Feature, ioctl::IoctlType};

/// One fact about the ABI: the C expression that computes it and the value Rust has.
struct Fact {
    /// The uapi item it belongs to, as `module::name`.
    item: String,
    /// A C expression, evaluated against the kernel headers.
    c_expr: String,
    /// The Rust-side value.
    rust: u64,
}

/// Size of the field `f` points to.
fn field_size<S, F>(_f: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// Size of one element of the flexible array `f` points to.
fn flex_elem_size<S, T>(_f: fn(&S) -> &__IncompleteArrayField<T>) -> usize {
    size_of::<T>()
}

/// The C spelling of a field: its Rust name unless the list renames it (`type_ = "type"`).
macro_rules! c_field {
    ($f:ident) => {
        stringify!($f)
    };
    ($f:ident, $c:literal) => {
        $c
    };
}

/// Expands the ABI list into `facts()` (both sides' facts, from the same tokens) and
/// `listed()` (the names of the listed items, for the completeness test).
macro_rules! abi {
    (
        structs {
            $( $sm:ident :: $s:ident {
                $( $f:ident $(= $cf:literal)? ),* $(,)?
            } $([ $flex:ident ])? )*
        }
        consts { $( $cm:ident :: $c:ident ),* $(,)? }
        ioctls { $( $im:ident :: $i:ident ),* $(,)? }
        aliases {
            $( $am:ident :: $a:ident => $om:ident :: $o:ident ( $arg:ty, $c_arg:literal ) ),* $(,)?
        }
    ) => {
        fn facts() -> Vec<Fact> {
            let mut facts = Vec::new();
            let mut fact = |item: &str, c_expr: String, rust: usize| {
                facts.push(Fact { item: item.to_owned(), c_expr, rust: rust as u64 })
            };
            $(
                // Fails to compile if a field of the Rust struct is missing from the list.
                let _every_field_listed = |v: &$sm::$s| {
                    let $sm::$s { $($f: _,)* $($flex: _)? } = v;
                };
                let item = concat!(stringify!($sm), "::", stringify!($s));
                let s = stringify!($s);
                fact(item, format!("sizeof(struct {s})"), size_of::<$sm::$s>());
                fact(item, format!("_Alignof(struct {s})"), align_of::<$sm::$s>());
                $(
                    let f = c_field!($f $(, $cf)?);
                    fact(item, format!("offsetof(struct {s}, {f})"), offset_of!($sm::$s, $f));
                    fact(
                        item,
                        format!("sizeof(((struct {s} *)0)->{f})"),
                        field_size(|v: &$sm::$s| &v.$f),
                    );
                )*
                $(
                    let f = stringify!($flex);
                    fact(item, format!("offsetof(struct {s}, {f})"), offset_of!($sm::$s, $flex));
                    fact(
                        item,
                        format!("sizeof(((struct {s} *)0)->{f}[0])"),
                        flex_elem_size(|v: &$sm::$s| &v.$flex),
                    );
                )?
            )*
            $(
                facts.push(Fact {
                    item: concat!(stringify!($cm), "::", stringify!($c)).to_owned(),
                    c_expr: stringify!($c).to_owned(),
                    rust: $cm::$c as u64,
                });
            )*
            $(
                facts.push(Fact {
                    item: concat!(stringify!($im), "::", stringify!($i)).to_owned(),
                    c_expr: stringify!($i).to_owned(),
                    rust: $im::$i as u64,
                });
            )*
            $(
                // Fails to compile if the alias binds another argument type.
                let _same_argument: for<'x> fn(&'x <$am::$a as IoctlType>::Arg) -> &'x $arg = |v| v;
                let item = concat!(stringify!($am), "::", stringify!($a));
                let op = stringify!($o);
                let _ = stringify!($om);
                let mut alias_fact = |c_expr: String, rust: usize| {
                    facts.push(Fact { item: item.to_owned(), c_expr, rust: rust as u64 })
                };
                alias_fact(op.to_owned(), <$am::$a as IoctlType>::OPCODE as usize);
                alias_fact($c_arg.to_owned(), <$am::$a as IoctlType>::ARG_SIZE);
                // Opcodes that encode a size (_IOW...) encode the argument's.
                alias_fact(
                    format!("(_IOC_SIZE({op}) == 0 || _IOC_SIZE({op}) == {})", $c_arg),
                    1,
                );
            )*
            facts
        }

        fn listed() -> BTreeSet<String> {
            [
                $( concat!(stringify!($sm), "::", stringify!($s)), )*
                $( concat!(stringify!($cm), "::", stringify!($c)), )*
                $( concat!(stringify!($im), "::", stringify!($i)), )*
                $( concat!(stringify!($am), "::", stringify!($a)), )*
            ]
            .into_iter()
            .map(String::from)
            .collect()
        }
    };
}

abi! {
    structs {
        vfio::vfio_info_cap_header { id, version, next }
        vfio::vfio_group_status { argsz, flags }
        vfio::vfio_device_info { argsz, flags, num_regions, num_irqs, cap_offset, pad }
        vfio::vfio_region_info { argsz, flags, index, cap_offset, size, offset }
        vfio::vfio_region_sparse_mmap_area { offset, size }
        vfio::vfio_region_info_cap_sparse_mmap { header, nr_areas, reserved } [areas]
        vfio::vfio_region_info_cap_type { header, type_ = "type", subtype }
        vfio::vfio_irq_info { argsz, flags, index, count }
        vfio::vfio_device_feature { argsz, flags } [data]
        vfio::vfio_region_dma_range { offset, length }
        vfio::vfio_device_feature_dma_buf { region_index, open_flags, flags, nr_ranges } [dma_ranges]
        vfio::vfio_device_bind_iommufd { argsz, flags, iommufd, out_devid, token_uuid_ptr }
        vfio::vfio_device_attach_iommufd_pt { argsz, flags, pt_id, pasid }
        vfio::vfio_device_detach_iommufd_pt { argsz, flags, pasid }
        vfio::vfio_iommu_type1_info { argsz, flags, iova_pgsizes, cap_offset, pad }
        vfio::vfio_iommu_type1_dma_map { argsz, flags, vaddr, iova, size }
        vfio::vfio_iommu_type1_dma_unmap { argsz, flags, iova, size } [data]
        vfio::vfio_iova_range { start, end }
        vfio::vfio_iommu_type1_info_cap_iova_range { header, nr_iovas, reserved } [iova_ranges]

        iommufd::iommu_destroy { size, id }
        iommufd::iommu_ioas_alloc { size, flags, out_ioas_id }
        iommufd::iommu_iova_range { start, last }
        iommufd::iommu_ioas_iova_ranges { size, ioas_id, num_iovas, __reserved, allowed_iovas, out_iova_alignment }
        iommufd::iommu_ioas_map { size, flags, ioas_id, __reserved, user_va, length, iova }
        iommufd::iommu_ioas_map_file { size, flags, ioas_id, fd, start, length, iova }
        iommufd::iommu_ioas_unmap { size, ioas_id, iova, length }

        dma_buf::dma_buf_sync { flags }
        dma_buf::dma_buf_export_sync_file { flags, fd }
        dma_buf::dma_buf_import_sync_file { flags, fd }

        udmabuf::udmabuf_create { memfd, flags, offset, size }

        drm::drm_prime_handle { handle, flags, fd }
        drm::drm_gem_close { handle, pad }
        drm::drm_mode_fb_cmd2 { fb_id, width, height, pixel_format, flags, handles, pitches, offsets, modifier }
        drm::drm_clip_rect { x1, y1, x2, y2 }
        drm::drm_mode_fb_dirty_cmd { fb_id, flags, color, num_clips, clips_ptr }
    }
    consts {
        vfio::VFIO_TYPE, vfio::VFIO_BASE, vfio::VFIO_API_VERSION,
        vfio::VFIO_TYPE1_IOMMU, vfio::VFIO_TYPE1v2_IOMMU, vfio::VFIO_NOIOMMU_IOMMU,
        vfio::VFIO_UNMAP_ALL,
        vfio::VFIO_GROUP_FLAGS_VIABLE, vfio::VFIO_GROUP_FLAGS_CONTAINER_SET,
        vfio::VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP,
        vfio::VFIO_DEVICE_FLAGS_RESET, vfio::VFIO_DEVICE_FLAGS_PCI, vfio::VFIO_DEVICE_FLAGS_CAPS,
        vfio::VFIO_REGION_INFO_FLAG_READ, vfio::VFIO_REGION_INFO_FLAG_WRITE,
        vfio::VFIO_REGION_INFO_FLAG_MMAP, vfio::VFIO_REGION_INFO_FLAG_CAPS,
        vfio::VFIO_REGION_INFO_CAP_SPARSE_MMAP, vfio::VFIO_REGION_INFO_CAP_TYPE,
        vfio::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
        vfio::VFIO_IRQ_INFO_EVENTFD, vfio::VFIO_IRQ_INFO_MASKABLE,
        vfio::VFIO_IRQ_INFO_AUTOMASKED, vfio::VFIO_IRQ_INFO_NORESIZE,
        vfio::VFIO_DEVICE_FEATURE_MASK, vfio::VFIO_DEVICE_FEATURE_GET,
        vfio::VFIO_DEVICE_FEATURE_SET, vfio::VFIO_DEVICE_FEATURE_PROBE,
        vfio::VFIO_DEVICE_FEATURE_DMA_BUF,
        vfio::VFIO_DEVICE_BIND_FLAG_TOKEN, vfio::VFIO_DEVICE_ATTACH_PASID,
        vfio::VFIO_DEVICE_DETACH_PASID,
        vfio::VFIO_IOMMU_INFO_PGSIZES, vfio::VFIO_IOMMU_INFO_CAPS,
        vfio::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
        vfio::VFIO_DMA_MAP_FLAG_READ, vfio::VFIO_DMA_MAP_FLAG_WRITE, vfio::VFIO_DMA_UNMAP_FLAG_ALL,
        vfio::VFIO_PCI_BAR0_REGION_INDEX, vfio::VFIO_PCI_BAR1_REGION_INDEX,
        vfio::VFIO_PCI_BAR2_REGION_INDEX, vfio::VFIO_PCI_BAR3_REGION_INDEX,
        vfio::VFIO_PCI_BAR4_REGION_INDEX, vfio::VFIO_PCI_BAR5_REGION_INDEX,
        vfio::VFIO_PCI_ROM_REGION_INDEX, vfio::VFIO_PCI_CONFIG_REGION_INDEX,
        vfio::VFIO_PCI_VGA_REGION_INDEX, vfio::VFIO_PCI_NUM_REGIONS,
        vfio::VFIO_PCI_INTX_IRQ_INDEX, vfio::VFIO_PCI_MSI_IRQ_INDEX, vfio::VFIO_PCI_MSIX_IRQ_INDEX,
        vfio::VFIO_PCI_ERR_IRQ_INDEX, vfio::VFIO_PCI_REQ_IRQ_INDEX, vfio::VFIO_PCI_NUM_IRQS,

        iommufd::IOMMUFD_TYPE, iommufd::IOMMUFD_CMD_BASE,
        iommufd::IOMMU_IOAS_MAP_FIXED_IOVA, iommufd::IOMMU_IOAS_MAP_WRITEABLE,
        iommufd::IOMMU_IOAS_MAP_READABLE,

        dma_buf::DMA_BUF_SYNC_READ, dma_buf::DMA_BUF_SYNC_WRITE, dma_buf::DMA_BUF_SYNC_RW,
        dma_buf::DMA_BUF_SYNC_START, dma_buf::DMA_BUF_SYNC_END,
        dma_buf::DMA_BUF_SYNC_VALID_FLAGS_MASK, dma_buf::DMA_BUF_NAME_LEN, dma_buf::DMA_BUF_BASE,

        udmabuf::UDMABUF_FLAGS_CLOEXEC,

        drm::DRM_CLOEXEC, drm::DRM_RDWR,
        drm::DRM_MODE_FB_INTERLACED, drm::DRM_MODE_FB_MODIFIERS,
        drm::DRM_MODE_FB_DIRTY_ANNOTATE_COPY, drm::DRM_MODE_FB_DIRTY_ANNOTATE_FILL,
        drm::DRM_MODE_FB_DIRTY_FLAGS, drm::DRM_MODE_FB_DIRTY_MAX_CLIPS, drm::DRM_IOCTL_BASE,

        pci::PCI_STD_HEADER_SIZEOF,
        pci::PCI_CFG_SPACE_SIZE,
        pci::PCI_CFG_SPACE_EXP_SIZE,
        pci::PCI_STD_NUM_BARS, pci::PCI_VENDOR_ID, pci::PCI_DEVICE_ID,
        pci::PCI_COMMAND, pci::PCI_COMMAND_IO, pci::PCI_COMMAND_MEMORY, pci::PCI_COMMAND_MASTER,
        pci::PCI_COMMAND_INTX_DISABLE, pci::PCI_STATUS, pci::PCI_STATUS_CAP_LIST,
        pci::PCI_CLASS_REVISION,
        pci::PCI_HEADER_TYPE, pci::PCI_HEADER_TYPE_MASK, pci::PCI_BASE_ADDRESS_0,
        pci::PCI_BASE_ADDRESS_SPACE, pci::PCI_BASE_ADDRESS_SPACE_IO,
        pci::PCI_BASE_ADDRESS_SPACE_MEMORY, pci::PCI_BASE_ADDRESS_MEM_TYPE_MASK,
        pci::PCI_BASE_ADDRESS_MEM_TYPE_32, pci::PCI_BASE_ADDRESS_MEM_TYPE_64,
        pci::PCI_BASE_ADDRESS_MEM_PREFETCH,
        pci::PCI_ROM_ADDRESS, pci::PCI_CAPABILITY_LIST,
        pci::PCI_CAP_LIST_ID, pci::PCI_CAP_LIST_NEXT, pci::PCI_CAP_FLAGS,
        pci::PCI_CAP_ID_PM, pci::PCI_CAP_ID_MSI, pci::PCI_CAP_ID_VNDR, pci::PCI_CAP_ID_EXP,
        pci::PCI_CAP_ID_MSIX, pci::PCI_CAP_ID_AF,
        pci::PCI_PM_PMC, pci::PCI_PM_CTRL, pci::PCI_PM_CTRL_STATE_MASK,
        pci::PCI_PM_CTRL_NO_SOFT_RESET, pci::PCI_PM_CTRL_PME_STATUS,
        pci::PCI_EXP_FLAGS, pci::PCI_EXP_DEVCAP, pci::PCI_EXP_DEVCAP_FLR,
        pci::PCI_EXP_DEVCTL, pci::PCI_EXP_DEVCTL_BCR_FLR,
        pci::PCI_AF_CAP, pci::PCI_AF_CAP_TP, pci::PCI_AF_CAP_FLR, pci::PCI_AF_CTRL,
        pci::PCI_AF_CTRL_FLR, pci::PCI_AF_STATUS, pci::PCI_AF_STATUS_TP,
        pci::PCI_MSIX_FLAGS, pci::PCI_MSIX_FLAGS_QSIZE, pci::PCI_MSIX_FLAGS_MASKALL,
        pci::PCI_MSIX_FLAGS_ENABLE, pci::PCI_MSIX_TABLE, pci::PCI_MSIX_TABLE_BIR,
        pci::PCI_MSIX_TABLE_OFFSET, pci::PCI_MSIX_PBA, pci::PCI_MSIX_PBA_BIR,
        pci::PCI_MSIX_PBA_OFFSET, pci::PCI_MSIX_ENTRY_SIZE,
        pci::PCI_HEADER_TYPE_BRIDGE, pci::PCI_SECONDARY_BUS, pci::PCI_SUBORDINATE_BUS,
        pci::PCI_EXP_FLAGS_TYPE, pci::PCI_EXP_TYPE_ENDPOINT, pci::PCI_EXP_TYPE_LEG_END,
        pci::PCI_EXP_TYPE_ROOT_PORT, pci::PCI_EXP_TYPE_UPSTREAM, pci::PCI_EXP_TYPE_DOWNSTREAM,
        pci::PCI_EXP_TYPE_PCI_BRIDGE, pci::PCI_EXP_TYPE_PCIE_BRIDGE, pci::PCI_EXP_TYPE_RC_END,
        pci::PCI_EXT_CAP_ID_ACS, pci::PCI_ACS_CAP, pci::PCI_ACS_CTRL,
        pci::PCI_ACS_SV, pci::PCI_ACS_TB, pci::PCI_ACS_RR, pci::PCI_ACS_CR, pci::PCI_ACS_UF,
        pci::PCI_ACS_EC, pci::PCI_ACS_DT,
    }
    ioctls {
        vfio::VFIO_GET_API_VERSION, vfio::VFIO_CHECK_EXTENSION, vfio::VFIO_SET_IOMMU,
        vfio::VFIO_GROUP_GET_STATUS, vfio::VFIO_GROUP_SET_CONTAINER,
        vfio::VFIO_GROUP_UNSET_CONTAINER, vfio::VFIO_GROUP_GET_DEVICE_FD,
        vfio::VFIO_DEVICE_GET_INFO, vfio::VFIO_DEVICE_GET_REGION_INFO,
        vfio::VFIO_DEVICE_GET_IRQ_INFO, vfio::VFIO_DEVICE_RESET, vfio::VFIO_DEVICE_FEATURE,
        vfio::VFIO_DEVICE_BIND_IOMMUFD, vfio::VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        vfio::VFIO_DEVICE_DETACH_IOMMUFD_PT,
        vfio::VFIO_IOMMU_GET_INFO, vfio::VFIO_IOMMU_MAP_DMA, vfio::VFIO_IOMMU_UNMAP_DMA,

        iommufd::IOMMU_DESTROY, iommufd::IOMMU_IOAS_ALLOC, iommufd::IOMMU_IOAS_IOVA_RANGES,
        iommufd::IOMMU_IOAS_MAP, iommufd::IOMMU_IOAS_UNMAP, iommufd::IOMMU_IOAS_MAP_FILE,

        dma_buf::DMA_BUF_IOCTL_SYNC, dma_buf::DMA_BUF_SET_NAME_A, dma_buf::DMA_BUF_SET_NAME_B,
        dma_buf::DMA_BUF_IOCTL_EXPORT_SYNC_FILE, dma_buf::DMA_BUF_IOCTL_IMPORT_SYNC_FILE,

        udmabuf::UDMABUF_CREATE,

        drm::DRM_IOCTL_GEM_CLOSE, drm::DRM_IOCTL_PRIME_HANDLE_TO_FD,
        drm::DRM_IOCTL_PRIME_FD_TO_HANDLE, drm::DRM_IOCTL_MODE_RMFB,
        drm::DRM_IOCTL_MODE_DIRTYFB, drm::DRM_IOCTL_MODE_ADDFB2,
    }
    // Each alias: the opcode it binds and the argument (Rust type, C size of the fixed
    // part the pointer reaches; 0 for none, a value, or a string).
    aliases {
        vfio::VfioGetApiVersion => vfio::VFIO_GET_API_VERSION(usize, "0"),
        vfio::VfioCheckExtension => vfio::VFIO_CHECK_EXTENSION(usize, "0"),
        vfio::VfioSetIommu => vfio::VFIO_SET_IOMMU(usize, "0"),
        vfio::VfioGroupGetStatus => vfio::VFIO_GROUP_GET_STATUS(
            vfio::vfio_group_status, "sizeof(struct vfio_group_status)"),
        vfio::VfioGroupSetContainer => vfio::VFIO_GROUP_SET_CONTAINER(i32, "sizeof(int)"),
        vfio::VfioGroupGetDeviceFd => vfio::VFIO_GROUP_GET_DEVICE_FD(std::ffi::CStr, "0"),
        vfio::VfioDeviceGetInfo => vfio::VFIO_DEVICE_GET_INFO(
            vfio::vfio_device_info, "sizeof(struct vfio_device_info)"),
        vfio::VfioDeviceGetRegionInfo => vfio::VFIO_DEVICE_GET_REGION_INFO(
            vfio::vfio_region_info, "sizeof(struct vfio_region_info)"),
        vfio::VfioDeviceReset => vfio::VFIO_DEVICE_RESET((), "0"),
        vfio::VfioDeviceFeatureProbe => vfio::VFIO_DEVICE_FEATURE(
            Feature<()>, "sizeof(struct vfio_device_feature)"),
        vfio::VfioDeviceFeatureDmaBuf => vfio::VFIO_DEVICE_FEATURE(
            Feature<vfio::vfio_device_feature_dma_buf>,
            "(sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_dma_buf))"),
        vfio::VfioDeviceBindIommufd => vfio::VFIO_DEVICE_BIND_IOMMUFD(
            vfio::vfio_device_bind_iommufd, "sizeof(struct vfio_device_bind_iommufd)"),
        vfio::VfioDeviceAttachIommufdPt => vfio::VFIO_DEVICE_ATTACH_IOMMUFD_PT(
            vfio::vfio_device_attach_iommufd_pt, "sizeof(struct vfio_device_attach_iommufd_pt)"),
        vfio::VfioDeviceDetachIommufdPt => vfio::VFIO_DEVICE_DETACH_IOMMUFD_PT(
            vfio::vfio_device_detach_iommufd_pt, "sizeof(struct vfio_device_detach_iommufd_pt)"),

        iommufd::IommuDestroy => iommufd::IOMMU_DESTROY(
            iommufd::iommu_destroy, "sizeof(struct iommu_destroy)"),
        iommufd::IommuIoasAlloc => iommufd::IOMMU_IOAS_ALLOC(
            iommufd::iommu_ioas_alloc, "sizeof(struct iommu_ioas_alloc)"),
        iommufd::IommuIoasIovaRanges => iommufd::IOMMU_IOAS_IOVA_RANGES(
            iommufd::iommu_ioas_iova_ranges, "sizeof(struct iommu_ioas_iova_ranges)"),
        iommufd::IommuIoasMap => iommufd::IOMMU_IOAS_MAP(
            iommufd::iommu_ioas_map, "sizeof(struct iommu_ioas_map)"),
        iommufd::IommuIoasMapFile => iommufd::IOMMU_IOAS_MAP_FILE(
            iommufd::iommu_ioas_map_file, "sizeof(struct iommu_ioas_map_file)"),
        iommufd::IommuIoasUnmap => iommufd::IOMMU_IOAS_UNMAP(
            iommufd::iommu_ioas_unmap, "sizeof(struct iommu_ioas_unmap)"),

        udmabuf::UdmabufCreate => udmabuf::UDMABUF_CREATE(
            udmabuf::udmabuf_create, "sizeof(struct udmabuf_create)"),
    }
}

/// The posted, not-upstream series of the ahead kernel (`peerdma_uapi::ahead`), checked
/// against that kernel's own headers (`../shared/testbed/ahead/include`), which the C
/// side includes before the 7.2 headers.
mod posted {
    use super::*;
    #[allow(unused_imports)]
    use peerdma_uapi::ahead;

    abi! {
        structs {
            ahead::vfio_device_feature_dma_buf_revoke { dmabuf_fd }
            ahead::vfio_device_feature_dma_buf_memattr { dmabuf_fd, memattr }
            ahead::io_uring_rsrc_update2 { offset, flags, data, tags, nr, resv2 }
            ahead::io_uring_regbuf_desc {
                type_ = "type", flags, size, uaddr, dmabuf_fd, target_fd, __resv
            }
        }
        consts {
            ahead::IORING_RSRC_UPDATE_EXTENDED, ahead::IO_REGBUF_TYPE_EMPTY,
            ahead::IO_REGBUF_TYPE_UADDR, ahead::IO_REGBUF_TYPE_DMABUF,
            ahead::VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE, ahead::VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR,
            ahead::VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_NC,
            ahead::VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_WC,
        }
        ioctls {}
        aliases {
            ahead::VfioDeviceFeatureDmaBufRevoke => vfio::VFIO_DEVICE_FEATURE(
                Feature<ahead::vfio_device_feature_dma_buf_revoke>,
                "(sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_dma_buf_revoke))"),
            ahead::VfioDeviceFeatureDmaBufMemattr => vfio::VFIO_DEVICE_FEATURE(
                Feature<ahead::vfio_device_feature_dma_buf_memattr>,
                "(sizeof(struct vfio_device_feature) + sizeof(struct vfio_device_feature_dma_buf_memattr))"),
        }
    }

    pub(super) fn all_facts() -> Vec<Fact> {
        facts()
    }

    pub(super) fn all_listed() -> BTreeSet<String> {
        listed()
    }
}

/// Public items of `uapi/src` that are not kernel ABI and so have no C counterpart.
const NOT_ABI: &[&str] = &[
    // flex: the builder itself.
    "flex::Pod",
    "flex::FlexHeader",
    "flex::Feature",
    "flex::FlexBuf",
    "flex::DmaBufFeature",
    // ioctl: the call patterns (their aliases are checked in `aliases` above).
    "ioctl::ioctl",
    "ioctl::IoctlType",
    "ioctl::FdOut",
    "ioctl::FlexUpdater",
    "ioctl::IntOut",
    // Spec values that pci_regs.h does not name.
    "pci::PCI_PM_CTRL_STATE_D0",
    "pci::PCI_PM_CTRL_STATE_D3HOT",
    // Resource flags from linux/ioport.h, a kernel-internal header (no uapi copy).
    "pci::IORESOURCE_IO",
    "pci::IORESOURCE_MEM",
    "pci::IORESOURCE_PREFETCH",
    "pci::IORESOURCE_MEM_64",
    "pci::IORESOURCE_DISABLED",
    "pci::IORESOURCE_UNSET",
];

/// The headers the C side includes.
const C_HEADERS: &[&str] = &[
    "stddef.h",
    "stdio.h",
    "fcntl.h",
    "linux/version.h",
    "linux/vfio.h",
    "linux/iommufd.h",
    "linux/dma-buf.h",
    "linux/udmabuf.h",
    "linux/io_uring.h",
    "linux/pci_regs.h",
    "drm/drm.h",
    "drm/drm_mode.h",
];

/// The C program: prints `expression<TAB>value` for the kernel version and every fact.
fn c_program(facts: &[Fact]) -> String {
    let mut c = String::from("/* Generated by peerdma-testbed tests/layout.rs. */\n");
    for h in C_HEADERS {
        writeln!(c, "#include <{h}>").unwrap();
    }
    c.push_str("\n#define P(e) printf(\"%s\\t%llu\\n\", #e, (unsigned long long)(e))\n\n");
    c.push_str("int main(void)\n{\n");
    c.push_str("\tP(LINUX_VERSION_MAJOR);\n\tP(LINUX_VERSION_PATCHLEVEL);\n");
    for fact in facts {
        writeln!(c, "\tP({});", fact.c_expr).unwrap();
    }
    c.push_str("\treturn 0;\n}\n");
    c
}

/// The multiarch directory (`x86_64-linux-gnu`) that holds the `asm/` headers.
fn multiarch() -> String {
    let out = Command::new("cc").arg("-print-multiarch").output();
    match out {
        Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => {
            String::from_utf8_lossy(out.stdout.trim_ascii()).into_owned()
        }
        _ => format!("{}-linux-gnu", std::env::consts::ARCH),
    }
}

/// Compiles and runs the C program against `headers`; returns what it printed, by
/// expression.
fn run_c(headers: &Path, source: &str) -> BTreeMap<String, u64> {
    run_c_with(&[], headers, source)
}

/// [`run_c`] with `first` searched before `headers`.
fn run_c_with(first: &[&Path], headers: &Path, source: &str) -> BTreeMap<String, u64> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(if first.is_empty() {
        "uapi-layout"
    } else {
        "uapi-layout-posted"
    });
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let bin = dir.join("layout");
    std::fs::write(&src, source).unwrap();

    let arch_headers = headers.join(multiarch());
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Werror", "-O0"])
        .args(first.iter().flat_map(|p| [Path::new("-I"), p]))
        .arg("-I")
        .arg(headers)
        .arg("-I")
        .arg(&arch_headers)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc (a C compiler is needed for the layout test)");
    assert!(
        out.status.success(),
        "cc failed on {} with headers {}: an item the list names is probably missing \
         from the headers:\n{}",
        src.display(),
        headers.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(&bin).output().expect("run the layout program");
    assert!(out.status.success(), "{} failed", bin.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (expr, value) = line.rsplit_once('\t').expect("expression<TAB>value");
            (expr.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn uapi_layout_matches_linux_7_2_headers() {
    let headers = peerdma_testbed::debian::uapi_headers().expect("Linux 7.2 uapi headers");
    let facts = facts();
    let c = run_c(&headers, &c_program(&facts));
    assert_facts_match(&facts, &c, &headers);
    // The list is not trivially small: all structs, consts and ioctls made it through.
    let items: BTreeSet<&str> = facts.iter().map(|f| f.item.as_str()).collect();
    assert_eq!(items.len(), listed().len());
}

#[test]
fn posted_series_layout_matches_the_ahead_kernel_headers() {
    let headers = peerdma_testbed::debian::uapi_headers().expect("Linux 7.2 uapi headers");
    let ahead = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testbed/ahead/include");
    assert!(
        ahead.join("linux/vfio.h").exists(),
        "{}: the ahead kernel's headers belong there (../shared beside the repository)",
        ahead.display()
    );
    let facts = posted::all_facts();
    let c = run_c_with(&[&ahead], &headers, &c_program(&facts));
    assert_facts_match(&facts, &c, &ahead);
    let items: BTreeSet<&str> = facts.iter().map(|f| f.item.as_str()).collect();
    assert_eq!(items.len(), posted::all_listed().len());
}

/// Fails naming every fact whose C value differs from Rust's.
fn assert_facts_match(facts: &[Fact], c: &BTreeMap<String, u64>, headers: &Path) {
    let version = (c["LINUX_VERSION_MAJOR"], c["LINUX_VERSION_PATCHLEVEL"]);
    assert_eq!(
        version,
        (7, 2),
        "{} are not the 7.2 headers",
        headers.display()
    );

    let mut mismatches = Vec::new();
    for fact in facts {
        match c.get(&fact.c_expr) {
            Some(&value) if value == fact.rust => {}
            Some(&value) => mismatches.push(format!(
                "{}: {}: C {value} ({value:#x}), Rust {} ({:#x})",
                fact.item, fact.c_expr, fact.rust, fact.rust
            )),
            None => mismatches.push(format!("{}: {}: not printed by C", fact.item, fact.c_expr)),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} ABI facts differ from the headers in {}:\n{}",
        mismatches.len(),
        facts.len(),
        headers.display(),
        mismatches.join("\n")
    );
}

/// `module::Name` of every public item declared or re-exported in `uapi/src/<module>.rs`.
fn public_items() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../uapi/src");
    let mut items = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        // nvme.rs mirrors the NVMe specification and igb.rs the 82576 datasheet, which
        // no kernel UAPI header carries; their own unit tests check them against the
        // spec's and the datasheet's tables.
        if module == "lib" || module == "nvme" || module == "igb" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(str::trim_start) {
            let name = if line.starts_with("pub const fn ") {
                None // a constructor, not an item
            } else if let Some(rest) = line.strip_prefix("pub use ") {
                rest.trim_end_matches(';').rsplit("::").next()
            } else if let Some(rest) = [
                "pub const ",
                "pub struct ",
                "pub type ",
                "pub unsafe trait ",
                "pub trait ",
            ]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            {
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
            } else {
                None
            };
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                items.insert(format!("{module}::{name}"));
            }
        }
    }
    items
}

#[test]
fn every_public_uapi_item_is_checked() {
    let public = public_items();
    assert!(
        public.contains("vfio::VFIO_DEVICE_FEATURE"),
        "the source scan found nothing"
    );
    let mut listed = listed();
    listed.extend(posted::all_listed());
    let not_abi: BTreeSet<String> = NOT_ABI.iter().map(|s| s.to_string()).collect();

    let unchecked: Vec<&String> = public
        .iter()
        .filter(|i| !listed.contains(*i) && !not_abi.contains(*i))
        .collect();
    assert!(
        unchecked.is_empty(),
        "public uapi items missing from the layout list in tests/tests/layout.rs: {unchecked:?}"
    );
    let stale: Vec<&String> = listed
        .iter()
        .chain(&not_abi)
        .filter(|i| !public.contains(*i))
        .collect();
    assert!(
        stale.is_empty(),
        "listed items that uapi no longer declares: {stale:?}"
    );
}
