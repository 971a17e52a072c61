//! Opening a testbed device on the chosen access path, and what the checks export from.

use anyhow::{Context, Result};
use peerdma_exporter::{AccessPath, Device, Error, ExportOptions, OpenOptions};
use peerdma_host::Bdf;
use peerdma_testbed::manifest::ManifestDevice;

pub(crate) fn open(d: &ManifestDevice, access: AccessPath) -> Result<Device, Error> {
    let bdf: Bdf = d.bdf.parse()?;
    Device::open_with(
        bdf,
        OpenOptions {
            access,
            ..OpenOptions::default()
        },
    )
}

/// The largest memory BAR of at least a page: what the checks export from.
pub(crate) fn export_bar(dev: &Device) -> Result<(u32, u64)> {
    let page = dev.page_size();
    dev.bars()?
        .iter()
        .filter(|b| b.is_memory() && b.size() >= page)
        .max_by_key(|b| b.size())
        .map(|b| (b.index, b.size()))
        .context("no memory BAR of at least a page")
}

pub(crate) fn skip() -> ExportOptions {
    ExportOptions {
        skip_validation: true,
        ..ExportOptions::default()
    }
}
