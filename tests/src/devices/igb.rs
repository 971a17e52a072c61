//! `igb`: QEMU's Intel 82576 (8086:10c9), bound to vfio-pci for the engine crate's
//! user-space driver. Its netdev: see [`super::nic`].

use anyhow::Result;

use super::{nic, DeviceKind, DeviceModel, ManifestExtras, QemuSite};

/// The 82576's PCI vendor:device id as QEMU's `igb` presents it (Linux's
/// drivers/net/ethernet/intel/igb/e1000_hw.h E1000_DEV_ID_82576). The engine crate has
/// no `EngineId::IGB` row yet; once it has, this takes the id from there as edu does.
const IGB_PCI_ID: (u16, u16) = (0x8086, 0x10c9);

struct Igb;

impl DeviceKind {
    /// QEMU's `igb` (Intel 82576) on vfio-pci: the NIC the engine crate drives.
    pub const IGB: DeviceKind = DeviceKind(&Igb);
}

impl DeviceModel for Igb {
    fn name(&self) -> &'static str {
        "igb"
    }
    fn pci_id(&self) -> (u16, u16) {
        IGB_PCI_ID
    }
    fn is_nic(&self) -> bool {
        true
    }
    fn needs_own_bus(&self) -> bool {
        // 8 VFs at devfn + 0x80, stride 2 (QEMU hw/net/igb.c IGB_VF_OFFSET/STRIDE).
        true
    }
    fn manifest_extras(&self, site: &QemuSite) -> ManifestExtras {
        ManifestExtras {
            mac: Some(nic::mac(site.options.vm_index, site.index)),
            ..ManifestExtras::default()
        }
    }
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>> {
        nic::qemu_args("igb", site)
    }
}
