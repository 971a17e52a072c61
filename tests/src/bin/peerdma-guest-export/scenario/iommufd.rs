//! `iommufd`: the MAP_FILE errnos an importer meets.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::Result;
use peerdma_exporter::{Device, DmaBuf, DmaRange, Errno};
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_uapi::vfio::{vfio_device_attach_iommufd_pt, VFIO_DEVICE_ATTACH_IOMMUFD_PT};
use serde_json::{json, Value};

use crate::device::export_bar;
use crate::json::{emit, errno_name};
use crate::probe::KernelProbe;
use crate::Args;

/// `iommufd`: the MAP_FILE errnos an importer meets.
pub(crate) fn scenario_iommufd(
    a: &Args,
    d: &ManifestDevice,
    dev: &Device,
    kp: &KernelProbe,
) -> Result<()> {
    let page = dev.page_size();
    let (bar, size) = export_bar(dev)?;
    let mut f = json!({"bar": bar});
    let one = dev.export_dma_buf(bar, &[DmaRange::new(0, 2 * page)])?;
    let map = |buf: &DmaBuf, start, len| -> Value {
        match kp.map_file(buf.as_fd(), start, len) {
            Ok(iova) => {
                kp.unmap(iova, len);
                "mapped".into()
            }
            Err(e) => errno_name(e).into(),
        }
    };
    f["one_range"] = map(&one, 0, 2 * page);
    f["one_range_second_page"] = map(&one, page, page);
    f["unaligned_start"] = map(&one, page / 2, page);
    f["unaligned_length"] = map(&one, 0, page / 2);
    f["longer_than_buffer"] = map(&one, 0, 3 * page);
    let three = dev.export_dma_buf(
        bar,
        &[
            DmaRange::new(0, page),
            DmaRange::new(2 * page, page),
            DmaRange::new(size - page, page),
        ],
    )?;
    f["three_ranges"] = map(&three, 0, page);
    dev.set_memory_decode(false)?;
    f["revoked"] = map(&one, 0, page);
    dev.set_memory_decode(true)?;
    f["restored"] = map(&one, 0, page);
    let map_user = |kp: &KernelProbe, ptr, len| -> Value {
        match kp.map_user(ptr, len) {
            Ok(iova) => {
                kp.unmap(iova, len);
                "mapped".into()
            }
            Err(e) => errno_name(e).into(),
        }
    };
    let m = dev.map_region_range(bar, 0, page)?;
    // The private IOAS has no device, hence no IOMMU domain: nothing is pinned at MAP.
    f["bar_mmap_map_no_domain"] = map_user(kp, m.as_ptr(), page);
    // On the cdev path, attach the device to an IOAS of its own iommufd: MAP now pins
    // the pages for the domain, and a BAR mmap has none to pin.
    if let Some(own) = dev.iommufd() {
        let attached = KernelProbe::alloc(own.try_clone_to_owned()?)?;
        let mut arg = vfio_device_attach_iommufd_pt {
            argsz: size_of::<vfio_device_attach_iommufd_pt>() as u32,
            pt_id: attached.ioas,
            ..Default::default()
        };
        // SAFETY: VFIO_DEVICE_ATTACH_IOMMUFD_PT reads and writes one
        // vfio_device_attach_iommufd_pt, which `arg` is; the device fd is open and bound.
        let rc = unsafe {
            libc::ioctl(
                dev.fd().as_raw_fd(),
                VFIO_DEVICE_ATTACH_IOMMUFD_PT as _,
                &mut arg,
            )
        };
        if rc < 0 {
            f["attach"] = errno_name(
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO),
            )
            .into();
        } else {
            f["attach"] = "attached".into();
            f["bar_mmap_map_attached"] = map_user(&attached, m.as_ptr(), page);
            f["one_range_attached"] = match attached.map_file(one.as_fd(), 0, page) {
                Ok(iova) => {
                    attached.unmap(iova, page);
                    "mapped".into()
                }
                Err(e) => errno_name(e).into(),
            };
        }
    }
    drop(m);
    emit("iommufd", "map_file", &a.access_name, Some(d), f);
    Ok(())
}
