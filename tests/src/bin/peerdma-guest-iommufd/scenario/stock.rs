//! `stock`: the full request on a kernel without iommufd fails with the explained error
//! and leaves no fd behind.

use anyhow::{bail, Result};
use peerdma_exporter::{Device, DmaRange};
use peerdma_importer::iommufd::{self};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::process::fd_count;
use serde_json::{json, Value};

use crate::rig::{at, bdf_of, setup};

/// On a kernel without iommufd: the request fails with the explained error and
/// leaves nothing open.
pub(crate) fn stock(m: &Manifest) -> Result<Value> {
    let before = fd_count();
    let err = match setup(m) {
        Ok(_) => bail!("the import path unexpectedly worked on this kernel"),
        Err(e) => e,
    };
    let after = fd_count();
    let no_iommufd = matches!(
        err.downcast_ref::<iommufd::Error>(),
        Some(iommufd::Error::NoIommufd { .. })
    );
    // The exporter still works here (group path): the buffer exists, nothing imports it.
    let ivs = Device::open(bdf_of(m, "ivshmem0")?)?;
    let buf = ivs.export_dma_buf(
        2,
        &[DmaRange {
            offset: 0,
            length: at::SMALL,
        }],
    )?;
    let group_export_ok = buf.size() == at::SMALL;
    let via = format!("{:?}", ivs.access_path());
    drop(buf);
    drop(ivs);
    let after_export = fd_count();
    Ok(json!({
        "ok": no_iommufd && before == after && before == after_export,
        "error": format!("{err:#}"),
        "no_iommufd_variant": no_iommufd,
        "fds_before": before,
        "fds_after": after,
        "fds_after_export": after_export,
        "group_export_ok": group_export_ok,
        "exporter_access_path": via,
    }))
}
