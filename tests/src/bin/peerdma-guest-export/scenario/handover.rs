//! `handover`: opening with fds a management process opened (a container for the group
//! path, an iommufd for the cdev path).

use anyhow::{Context, Result};
use peerdma_exporter::{AccessPath, Device, DmaRange, OpenOptions, PassedFds};
use peerdma_host::Bdf;
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_testbed::process::fd_count as fds;
use rustix::fs::{Mode, OFlags};
use serde_json::json;

use crate::device::export_bar;
use crate::json::{emit, err_json};
use crate::Args;

/// `handover`: opening with fds a management process opened (a container for the
/// group path, an iommufd for the cdev path); nothing leaks either way.
pub(crate) fn scenario_handover(a: &Args, d: &ManifestDevice) -> Result<()> {
    let node = match a.access {
        AccessPath::Group => "/dev/vfio/vfio",
        AccessPath::Cdev => "/dev/iommu",
        AccessPath::Auto => return Ok(()),
    };
    let before = fds();
    let fd = rustix::fs::open(node, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {node}"))?;
    let passed = if a.access == AccessPath::Group {
        PassedFds::Container(fd)
    } else {
        PassedFds::Iommufd(fd)
    };
    let bdf: Bdf = d.bdf.parse()?;
    let r = Device::open_with(
        bdf,
        OpenOptions {
            passed,
            ..OpenOptions::default()
        },
    );
    let mut f = match &r {
        Ok(dev) => json!({
            "ok": true,
            "access_path": format!("{:?}", dev.access_path()),
            "exports": dev.export_dma_buf(export_bar(dev)?.0, &[DmaRange::new(0, dev.page_size())]).is_ok(),
        }),
        Err(e) => err_json(e),
    };
    drop(r);
    f["node"] = node.into();
    f["fds_before"] = before.into();
    f["fds_after"] = fds().into();
    emit("handover", "passed fd", &a.access_name, Some(d), f);
    Ok(())
}
