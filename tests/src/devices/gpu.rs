//! The virtio GPUs (1af4:1050), left on the guest's virtio-gpu DRM driver: `gpu`
//! (`blob=true`, a P2P-capable DRM importer) and `gpu-noblob` (a static importer).

use anyhow::{bail, Result};

use super::{DeviceKind, DeviceModel, QemuSite};
use crate::vm::{host_has_udmabuf, GPU_XRES, GPU_YRES};

struct Gpu {
    blob: bool,
}

impl DeviceKind {
    /// `virtio-gpu-pci,blob=true`: a P2P-capable DRM importer (needs /dev/udmabuf on the
    /// host, or the testbed's emulation of it: `VmOptions::emulate_udmabuf`).
    pub const GPU: DeviceKind = DeviceKind(&Gpu { blob: true });
    /// `virtio-gpu-pci` without blob resources: a DRM importer that attaches statically
    /// (the vfio-pci exporter refuses it with EOPNOTSUPP).
    pub const GPU_NOBLOB: DeviceKind = DeviceKind(&Gpu { blob: false });
}

impl DeviceModel for Gpu {
    fn name(&self) -> &'static str {
        if self.blob {
            "gpu"
        } else {
            "gpu-noblob"
        }
    }
    fn aliases(&self) -> &'static [&'static str] {
        if self.blob {
            &["virtio-gpu"]
        } else {
            &["virtio-gpu-noblob"]
        }
    }
    fn pci_id(&self) -> (u16, u16) {
        (0x1af4, 0x1050)
    }
    fn binds_vfio(&self) -> bool {
        false
    }
    fn needs_shared_guest_ram(&self) -> bool {
        // virtio-gpu blob resources need guest RAM that QEMU can share via udmabuf.
        self.blob
    }
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>> {
        let place = site.place;
        if !self.blob {
            return Ok(vec![
                "-device".into(),
                format!("virtio-gpu-pci,xres={GPU_XRES},yres={GPU_YRES},{place}"),
            ]);
        }
        if !host_has_udmabuf() && !site.options.emulate_udmabuf {
            bail!(
                "device {}: virtio-gpu-pci,blob=true needs /dev/udmabuf on the host \
                 (modprobe udmabuf; this machine's kernel lacks it) and QEMU refuses it \
                 otherwise; or let the testbed emulate it inside QEMU \
                 (peerdma-testbed --emulate-udmabuf)",
                site.role
            );
        }
        Ok(vec![
            "-device".into(),
            format!("virtio-gpu-pci,blob=true,xres={GPU_XRES},yres={GPU_YRES},{place}"),
        ])
    }
}
