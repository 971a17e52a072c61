//! The VFIO ioctls of a container, group and device fd, and `UDMABUF_CREATE`,
//! as safe functions over typed arguments.
//!
//! This is the only module of the crate with `unsafe` ioctl calls. Each call is
//! one opcode-to-argument binding from `peerdma_uapi` (rustix's patterns plus
//! `peerdma_uapi::ioctl`'s `FdOut`, `FlexUpdater` and `IntOut`), so the argument
//! type cannot be mixed up with the opcode; the return value is typed by the
//! pattern (nothing, a number, or a new [`OwnedFd`]).
//!
//! Errors are plain [`Errno`]s; callers name the ioctl ([`VfioIoctl`]) and the
//! device.

use std::ffi::CStr;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use peerdma_uapi::ahead::{
    vfio_device_feature_dma_buf_memattr, vfio_device_feature_dma_buf_revoke,
    VfioDeviceFeatureDmaBufMemattr, VfioDeviceFeatureDmaBufRevoke,
    VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR, VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE,
};
use peerdma_uapi::flex::{DmaBufFeature, Feature, FlexBuf};
use peerdma_uapi::ioctl::ioctl;
use peerdma_uapi::udmabuf::{udmabuf_create, UdmabufCreate};
use peerdma_uapi::vfio::{
    vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt,
    vfio_device_info, vfio_group_status, vfio_region_info, VfioCheckExtension,
    VfioDeviceAttachIommufdPt, VfioDeviceBindIommufd, VfioDeviceDetachIommufdPt,
    VfioDeviceFeatureDmaBuf, VfioDeviceFeatureProbe, VfioDeviceGetInfo, VfioDeviceGetRegionInfo,
    VfioDeviceReset, VfioGetApiVersion, VfioGroupGetDeviceFd, VfioGroupGetStatus,
    VfioGroupSetContainer, VfioSetIommu, VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE,
    VFIO_DEVICE_FEATURE_SET,
};
#[cfg(test)]
use rustix::io::Errno;
use rustix::io::Result;

/// The VFIO ioctls this crate issues, by the name the kernel headers give them:
/// what errors name and what [`explain`](crate::explain) keys its fixes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum VfioIoctl {
    CheckExtension,
    DeviceAttachIommufdPt,
    DeviceBindIommufd,
    DeviceDetachIommufdPt,
    DeviceFeature,
    DeviceGetInfo,
    DeviceGetRegionInfo,
    DeviceReset,
    GetApiVersion,
    GroupGetDeviceFd,
    GroupGetStatus,
    GroupSetContainer,
    SetIommu,
}

impl VfioIoctl {
    /// The name as `linux/vfio.h` spells it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            VfioIoctl::CheckExtension => "VFIO_CHECK_EXTENSION",
            VfioIoctl::DeviceAttachIommufdPt => "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            VfioIoctl::DeviceBindIommufd => "VFIO_DEVICE_BIND_IOMMUFD",
            VfioIoctl::DeviceDetachIommufdPt => "VFIO_DEVICE_DETACH_IOMMUFD_PT",
            VfioIoctl::DeviceFeature => "VFIO_DEVICE_FEATURE",
            VfioIoctl::DeviceGetInfo => "VFIO_DEVICE_GET_INFO",
            VfioIoctl::DeviceGetRegionInfo => "VFIO_DEVICE_GET_REGION_INFO",
            VfioIoctl::DeviceReset => "VFIO_DEVICE_RESET",
            VfioIoctl::GetApiVersion => "VFIO_GET_API_VERSION",
            VfioIoctl::GroupGetDeviceFd => "VFIO_GROUP_GET_DEVICE_FD",
            VfioIoctl::GroupGetStatus => "VFIO_GROUP_GET_STATUS",
            VfioIoctl::GroupSetContainer => "VFIO_GROUP_SET_CONTAINER",
            VfioIoctl::SetIommu => "VFIO_SET_IOMMU",
        }
    }
}

impl fmt::Display for VfioIoctl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `size_of::<T>()` as the `u32` an `argsz` field holds.
fn argsz<T>() -> u32 {
    // Every fixed argument struct is a few dozen bytes.
    size_of::<T>() as u32
}

/// `VFIO_GET_API_VERSION` on a container.
pub(crate) fn get_api_version(container: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: the opcode takes no argument and returns a number.
    unsafe { ioctl(container, VfioGetApiVersion::new()) }
}

/// `VFIO_CHECK_EXTENSION` on a container: > 0 when `extension` is supported.
pub(crate) fn check_extension(container: BorrowedFd<'_>, extension: u32) -> Result<i32> {
    // SAFETY: the opcode takes the extension number by value and returns a number.
    unsafe { ioctl(container, VfioCheckExtension::new_usize(extension as usize)) }
}

/// `VFIO_SET_IOMMU` on a container.
pub(crate) fn set_iommu(container: BorrowedFd<'_>, iommu_type: u32) -> Result<()> {
    // SAFETY: the opcode takes the IOMMU type by value.
    unsafe { ioctl(container, VfioSetIommu::new_usize(iommu_type as usize)) }
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags.
pub(crate) fn group_get_status(group: BorrowedFd<'_>) -> Result<u32> {
    let mut status = vfio_group_status {
        argsz: argsz::<vfio_group_status>(),
        flags: 0,
    };
    // SAFETY: the alias binds the opcode to vfio_group_status, argsz set.
    unsafe { ioctl(group, VfioGroupGetStatus::new(&mut status))? };
    Ok(status.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`: attaches the group to `container`.
pub(crate) fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: the alias binds the opcode to the int container fd it reads.
    unsafe { ioctl(group, VfioGroupSetContainer::new(container.as_raw_fd())) }
}

/// `VFIO_GROUP_GET_DEVICE_FD`: opens the device named `name` (its BDF).
pub(crate) fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    // SAFETY: the opcode reads the NUL-terminated name and returns a new device fd.
    unsafe { ioctl(group, VfioGroupGetDeviceFd::new_c_str(name)) }
}

/// `VFIO_DEVICE_BIND_IOMMUFD` on a cdev device fd: returns the device id.
pub(crate) fn device_bind_iommufd(device: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> Result<u32> {
    let mut bind = vfio_device_bind_iommufd {
        argsz: argsz::<vfio_device_bind_iommufd>(),
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
        token_uuid_ptr: 0,
    };
    // SAFETY: the alias binds the opcode to vfio_device_bind_iommufd; no token flag, so
    // the kernel follows no pointer in it.
    unsafe { ioctl(device, VfioDeviceBindIommufd::new(&mut bind))? };
    Ok(bind.out_devid)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attaches a bound cdev device to the IOAS
/// (or HWPT) `pt_id`; returns the page table id the kernel attached it to.
pub(crate) fn device_attach_iommufd_pt(device: BorrowedFd<'_>, pt_id: u32) -> Result<u32> {
    let mut arg = vfio_device_attach_iommufd_pt {
        argsz: argsz::<vfio_device_attach_iommufd_pt>(),
        flags: 0,
        pt_id,
        pasid: 0,
    };
    // SAFETY: the alias binds the opcode to vfio_device_attach_iommufd_pt, argsz set.
    unsafe { ioctl(device, VfioDeviceAttachIommufdPt::new(&mut arg))? };
    Ok(arg.pt_id)
}

/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`: detaches a cdev device from its page table.
pub(crate) fn device_detach_iommufd_pt(device: BorrowedFd<'_>) -> Result<()> {
    let mut arg = vfio_device_detach_iommufd_pt {
        argsz: argsz::<vfio_device_detach_iommufd_pt>(),
        flags: 0,
        pasid: 0,
    };
    // SAFETY: the alias binds the opcode to vfio_device_detach_iommufd_pt, argsz set.
    unsafe { ioctl(device, VfioDeviceDetachIommufdPt::new(&mut arg)) }
}

/// `VFIO_DEVICE_GET_INFO` into `info`, whose `argsz` covers the whole buffer.
pub(crate) fn device_get_info(
    device: BorrowedFd<'_>,
    info: &mut FlexBuf<vfio_device_info>,
) -> Result<()> {
    // SAFETY: the alias binds the opcode to vfio_device_info + caps within argsz.
    unsafe { ioctl(device, VfioDeviceGetInfo::new(info)) }
}

/// `VFIO_DEVICE_GET_REGION_INFO` into `info` (index set by the caller).
pub(crate) fn device_get_region_info(
    device: BorrowedFd<'_>,
    info: &mut FlexBuf<vfio_region_info>,
) -> Result<()> {
    // SAFETY: the alias binds the opcode to vfio_region_info + caps within argsz.
    unsafe { ioctl(device, VfioDeviceGetRegionInfo::new(info)) }
}

/// `VFIO_DEVICE_RESET`.
pub(crate) fn device_reset(device: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: the opcode takes no argument.
    unsafe { ioctl(device, VfioDeviceReset::new()) }
}

/// `VFIO_DEVICE_FEATURE` with `PROBE | GET | feature`: Ok when GET is supported.
pub(crate) fn device_feature_probe_get(device: BorrowedFd<'_>, feature: u32) -> Result<()> {
    let mut arg = Feature::new(
        VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | feature,
        (),
    );
    // SAFETY: the alias binds the opcode to a bare 8-byte vfio_device_feature with
    // argsz 8; a PROBE reads no payload.
    unsafe { ioctl(device, VfioDeviceFeatureProbe::new(&mut arg)) }
}

/// `VFIO_DEVICE_FEATURE` with `GET | DMA_BUF`: the new dma-buf fd. One ioctl
/// over the caller's buffer: no allocation, no copy.
pub(crate) fn device_feature_dma_buf(
    device: BorrowedFd<'_>,
    arg: &mut DmaBufFeature,
) -> Result<OwnedFd> {
    // SAFETY: the alias binds the opcode to the feature header, the dma-buf request and
    // nr_ranges ranges (argsz and nr_ranges are synced from the buffer); the kernel
    // returns the new dma-buf fd.
    unsafe { ioctl(device, VfioDeviceFeatureDmaBuf::new_flex(arg)) }
}

/// `VFIO_DEVICE_FEATURE` with `SET | DMA_BUF_REVOKE` (posted series, not upstream;
/// [`crate::posted`]): revokes the dma-buf `dmabuf` for good.
pub(crate) fn device_feature_dma_buf_revoke(
    device: BorrowedFd<'_>,
    dmabuf: BorrowedFd<'_>,
) -> Result<()> {
    let mut arg = Feature::new(
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE,
        vfio_device_feature_dma_buf_revoke {
            dmabuf_fd: dmabuf.as_raw_fd(),
        },
    );
    // SAFETY: the alias binds the opcode to the feature header and the 4-byte revoke
    // payload, argsz covering both; a kernel without the feature reads only the header
    // (and fails with ENOTTY).
    unsafe { ioctl(device, VfioDeviceFeatureDmaBufRevoke::new(&mut arg)) }
}

/// `VFIO_DEVICE_FEATURE` with `SET | DMA_BUF_MEMATTR` (posted series, not upstream):
/// the memory attribute of future mmaps of `dmabuf`.
pub(crate) fn device_feature_dma_buf_memattr(
    device: BorrowedFd<'_>,
    dmabuf: BorrowedFd<'_>,
    memattr: u32,
) -> Result<()> {
    let mut arg = Feature::new(
        VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR,
        vfio_device_feature_dma_buf_memattr {
            dmabuf_fd: dmabuf.as_raw_fd(),
            memattr,
        },
    );
    // SAFETY: the alias binds the opcode to the feature header and the 8-byte memattr
    // payload, argsz covering both.
    unsafe { ioctl(device, VfioDeviceFeatureDmaBufMemattr::new(&mut arg)) }
}

/// `UDMABUF_CREATE` on `/dev/udmabuf`: the new dma-buf fd over `arg`'s memfd range.
pub(crate) fn udmabuf_create(udmabuf: BorrowedFd<'_>, arg: &mut udmabuf_create) -> Result<OwnedFd> {
    // SAFETY: the alias binds the opcode to udmabuf_create, which the kernel only
    // reads; the memfd it names is the caller's, open for the call. Returns the fd.
    unsafe { ioctl(udmabuf, UdmabufCreate::new(arg)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn errno_comes_back_unchanged() {
        // A VFIO ioctl on a regular file fails with ENOTTY, not a panic or a
        // bogus fd.
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert_eq!(device_reset(file.as_fd()), Err(Errno::NOTTY));
        let name = c"0000:00:00.0";
        assert_eq!(
            group_get_device_fd(file.as_fd(), name).unwrap_err(),
            Errno::NOTTY
        );
        assert_eq!(device_detach_iommufd_pt(file.as_fd()), Err(Errno::NOTTY));
        assert_eq!(device_attach_iommufd_pt(file.as_fd(), 1), Err(Errno::NOTTY));
    }

    #[test]
    fn ioctl_names_are_the_header_spellings() {
        assert_eq!(
            VfioIoctl::DeviceBindIommufd.to_string(),
            "VFIO_DEVICE_BIND_IOMMUFD"
        );
        assert_eq!(
            VfioIoctl::GroupSetContainer.name(),
            "VFIO_GROUP_SET_CONTAINER"
        );
    }
}
