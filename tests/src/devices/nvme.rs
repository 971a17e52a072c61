//! The NVMe controllers (QEMU's `nvme`, 1b36:0010) with a controller memory buffer of
//! SIZE MiB and namespace 1 on the host file `ROLE.img`: `nvme` (on vfio-pci), `nvme-md`
//! (namespace formatted with metadata) and `nvme-kernel` (left on the kernel's driver).

use anyhow::Result;

use super::{DeviceKind, DeviceModel, ManifestExtras, QemuSite};

/// Default controller memory buffer size in MiB.
const DEFAULT_CMB_MIB: u64 = 16;

/// Which of the three NVMe kinds.
#[derive(PartialEq, Eq)]
enum Variant {
    Vfio,
    Metadata,
    Kernel,
}

struct Nvme(Variant);

impl DeviceKind {
    /// An NVMe controller with a controller memory buffer (a memory BAR).
    pub const NVME: DeviceKind = DeviceKind(&Nvme(Variant::Vfio));
    /// An NVMe controller (on vfio-pci) whose namespace 1 is formatted with metadata:
    /// 512-byte blocks plus 8 bytes of metadata each, inline (QEMU `nvme-ns
    /// ms=8,mset=1`, an extended LBA). The user-space NVMe engine must refuse it.
    pub const NVME_MD: DeviceKind = DeviceKind(&Nvme(Variant::Metadata));
    /// The same as `NVME`, left on the guest kernel's nvme driver (not vfio-pci): its
    /// namespace is a block device and its CMB is published as p2pmem.
    pub const NVME_KERNEL: DeviceKind = DeviceKind(&Nvme(Variant::Kernel));
}

/// The serial number of the `i`-th device of a run when it is an NVMe controller.
pub fn nvme_serial(i: usize) -> String {
    format!("peerdma{i}")
}

impl DeviceModel for Nvme {
    fn name(&self) -> &'static str {
        match self.0 {
            Variant::Vfio => "nvme",
            Variant::Metadata => "nvme-md",
            Variant::Kernel => "nvme-kernel",
        }
    }
    fn pci_id(&self) -> (u16, u16) {
        peerdma_engine::EngineId::NVME.pci_id()
    }
    fn binds_vfio(&self) -> bool {
        self.0 != Variant::Kernel
    }
    fn is_nvme(&self) -> bool {
        true
    }
    fn default_size_mib(&self) -> u64 {
        DEFAULT_CMB_MIB
    }
    fn backing_file(&self, site: &QemuSite) -> Option<std::path::PathBuf> {
        Some(crate::image::image_path(site.scratch, site.role))
    }
    fn manifest_extras(&self, site: &QemuSite) -> ManifestExtras {
        ManifestExtras {
            serial: Some(nvme_serial(site.index)),
            nsid: Some(1),
            cmb_size: Some(site.size_mib << 20),
            ..ManifestExtras::default()
        }
    }
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>> {
        let (role, place) = (site.role, site.place);
        // Seeded before boot (Testbed::boot), kept in a kept scratch.
        let img = crate::image::ensure(site.scratch, role)?;
        let mqes = site
            .options
            .nvme_mqes
            .map(|m| format!(",mqes={m}"))
            .unwrap_or_default();
        let serial = nvme_serial(site.index);
        let cmb = site.size_mib;
        let mut a = vec![
            "-drive".into(),
            format!("file={},if=none,id=drv-{role},format=raw", img.display()),
            "-device".into(),
        ];
        if self.0 == Variant::Metadata {
            // Namespace 1 as its own nvme-ns device: 512-byte blocks with 8 bytes of
            // metadata each, inline (extended LBA).
            a.push(format!(
                "nvme,id=ctrl-{role},serial={serial},cmb_size_mb={cmb},{place}{mqes}"
            ));
            a.push("-device".into());
            a.push(format!(
                "nvme-ns,drive=drv-{role},bus=ctrl-{role},nsid=1,ms=8,mset=1"
            ));
        } else {
            a.push(format!(
                "nvme,serial={serial},drive=drv-{role},cmb_size_mb={cmb},{place}{mqes}"
            ));
        }
        Ok(a)
    }
}
