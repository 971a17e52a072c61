//! The NICs left on the guest kernel's driver, for kernel-socket peers: `e1000e` (QEMU's
//! Intel 82574L, 8086:10d3) and `virtio-net` (`virtio-net-pci`, modern only: 1af4:1041).
//! The guest init brings each one up with the IPv4 address of [`nic::ipv4`] and records
//! its interface name; its netdev: see [`super::nic`].

use anyhow::Result;

use super::{nic, DeviceKind, DeviceModel, ManifestExtras, QemuSite};

struct KernelNic {
    /// The name in `--devices`.
    name: &'static str,
    /// QEMU's device model.
    qemu_model: &'static str,
    pci_id: (u16, u16),
}

impl DeviceKind {
    /// QEMU's `e1000e` (Intel 82574L) on the guest's e1000e driver.
    pub const E1000E: DeviceKind = DeviceKind(&KernelNic {
        name: "e1000e",
        qemu_model: "e1000e",
        // Linux drivers/net/ethernet/intel/e1000e/hw.h E1000_DEV_ID_82574L.
        pci_id: (0x8086, 0x10d3),
    });
    /// `virtio-net-pci` (modern only) on the guest's virtio_net driver.
    pub const VIRTIO_NET: DeviceKind = DeviceKind(&KernelNic {
        name: "virtio-net",
        qemu_model: "virtio-net-pci,disable-legacy=on",
        // Virtio 1.x section 4.1.2.1: 0x1040 + device type 1 (network).
        pci_id: (0x1af4, 0x1041),
    });
}

impl DeviceModel for KernelNic {
    fn name(&self) -> &'static str {
        self.name
    }
    fn pci_id(&self) -> (u16, u16) {
        self.pci_id
    }
    fn binds_vfio(&self) -> bool {
        false
    }
    fn is_nic(&self) -> bool {
        true
    }
    fn manifest_extras(&self, site: &QemuSite) -> ManifestExtras {
        let nth = site.options.devices.0[..site.index.min(site.options.devices.0.len())]
            .iter()
            .filter(|d| d.kind.model().is_nic() && !d.kind.binds_vfio())
            .count();
        ManifestExtras {
            mac: Some(nic::mac(site.options.vm_index, site.index)),
            ipv4: Some(nic::ipv4(site.options.vm_index, nth)),
            ..ManifestExtras::default()
        }
    }
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>> {
        nic::qemu_args(self.qemu_model, site)
    }
}
