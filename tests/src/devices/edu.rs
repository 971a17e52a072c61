//! `edu`: QEMU's teaching device, a small DMA engine (4 KiB buffer in BAR0's space).

use anyhow::Result;

use super::{DeviceKind, DeviceModel, QemuSite};

struct Edu;

impl DeviceKind {
    /// QEMU's `edu` teaching device: a small DMA engine.
    pub const EDU: DeviceKind = DeviceKind(&Edu);
}

impl DeviceModel for Edu {
    fn name(&self) -> &'static str {
        "edu"
    }
    fn pci_id(&self) -> (u16, u16) {
        peerdma_engine::EngineId::EDU.pci_id()
    }
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>> {
        Ok(vec!["-device".into(), format!("edu,{}", site.place)])
    }
}
