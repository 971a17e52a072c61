//! `ivshmem`: QEMU's `ivshmem-plain`, whose BAR2 is RAM shared with a host file
//! (`ROLE.mem` in the scratch) or, beside a blob GPU, a memfd.

use anyhow::{bail, Result};

use super::{DeviceKind, DeviceModel, QemuSite};

/// Default ivshmem BAR2 size in MiB (large enough for a 64 MiB copy).
pub const DEFAULT_IVSHMEM_MIB: u64 = 64;

struct Ivshmem;

impl DeviceKind {
    /// `ivshmem-plain`: BAR2 is RAM shared with a host file.
    pub const IVSHMEM: DeviceKind = DeviceKind(&Ivshmem);
}

impl DeviceModel for Ivshmem {
    fn name(&self) -> &'static str {
        "ivshmem"
    }
    fn pci_id(&self) -> (u16, u16) {
        (0x1af4, 0x1110)
    }
    fn default_size_mib(&self) -> u64 {
        DEFAULT_IVSHMEM_MIB
    }
    fn check_size(&self, size_mib: u64) -> Result<()> {
        if !size_mib.is_power_of_two() {
            bail!("ivshmem size must be a power of two MiB (a BAR), got {size_mib} MiB");
        }
        Ok(())
    }
    fn backing_file(&self, site: &QemuSite) -> Option<std::path::PathBuf> {
        (!site.ivshmem_memfd).then(|| site.scratch.join(format!("{}.mem", site.role)))
    }
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>> {
        let (role, size, place) = (site.role, site.size_mib, site.place);
        let backend = if site.ivshmem_memfd {
            format!("memory-backend-memfd,id=mem-{role},share=on,size={size}M")
        } else {
            format!(
                "memory-backend-file,id=mem-{role},share=on,mem-path={}/{role}.mem,size={size}M",
                site.scratch.display()
            )
        };
        Ok(vec![
            "-object".into(),
            backend,
            "-device".into(),
            format!("ivshmem-plain,memdev=mem-{role},{place}"),
        ])
    }
}
