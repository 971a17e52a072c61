//! The emulated PCI devices the testbed can attach, and how they are spelled on the
//! command line (`--devices ivshmem,ivshmem,edu`).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One kind of emulated device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// `ivshmem-plain`: BAR2 is RAM shared with a host file.
    Ivshmem,
    /// QEMU's `edu` teaching device: a small DMA engine.
    Edu,
    /// An NVMe controller with a controller memory buffer (a memory BAR).
    Nvme,
    /// An NVMe controller (on vfio-pci) whose namespace 1 is formatted with metadata:
    /// 512-byte blocks plus 8 bytes of metadata each, inline (QEMU `nvme-ns
    /// ms=8,mset=1`, an extended LBA). The user-space NVMe engine must refuse it.
    NvmeMetadata,
    /// The same as `Nvme`, left on the guest kernel's nvme driver (not vfio-pci): its namespace is
    /// a block device and its CMB is published as p2pmem, for the kernel's own P2P path.
    NvmeKernel,
    /// `virtio-gpu-pci,blob=true`: a P2P-capable DRM importer (needs /dev/udmabuf on the
    /// host, or the testbed's emulation of it: `VmOptions::emulate_udmabuf`).
    Gpu,
    /// `virtio-gpu-pci` without blob resources: a DRM importer that attaches statically
    /// (the vfio-pci exporter refuses it with EOPNOTSUPP).
    GpuNoBlob,
}

impl DeviceKind {
    /// The spelling used in `--devices` and in role names.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Ivshmem => "ivshmem",
            DeviceKind::Edu => "edu",
            DeviceKind::Nvme => "nvme",
            DeviceKind::NvmeMetadata => "nvme-md",
            DeviceKind::NvmeKernel => "nvme-kernel",
            DeviceKind::Gpu => "gpu",
            DeviceKind::GpuNoBlob => "gpu-noblob",
        }
    }

    /// PCI vendor and device ID as the guest sees them.
    pub fn pci_id(self) -> (u16, u16) {
        match self {
            DeviceKind::Ivshmem => (0x1af4, 0x1110),
            DeviceKind::Edu => (0x1234, 0x11e8),
            DeviceKind::Nvme | DeviceKind::NvmeMetadata | DeviceKind::NvmeKernel => {
                (0x1b36, 0x0010)
            }
            DeviceKind::Gpu | DeviceKind::GpuNoBlob => (0x1af4, 0x1050),
        }
    }

    /// Whether this is an NVMe controller (on vfio-pci or the kernel's driver).
    pub fn is_nvme(self) -> bool {
        matches!(
            self,
            DeviceKind::Nvme | DeviceKind::NvmeMetadata | DeviceKind::NvmeKernel
        )
    }

    /// Whether the testbed binds this kind to vfio-pci (the GPU keeps its DRM driver).
    pub fn binds_vfio(self) -> bool {
        !matches!(
            self,
            DeviceKind::Gpu | DeviceKind::GpuNoBlob | DeviceKind::NvmeKernel
        )
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One requested device: its kind, role name (unique) and size where the kind has one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// What QEMU emulates.
    pub kind: DeviceKind,
    /// A unique name: `ivshmem0`, `ivshmem1`, `edu0`, ... or the one given as `KIND=ROLE`.
    pub role: String,
    /// Size in MiB of the ivshmem memory or the NVMe controller memory buffer.
    pub size_mib: u64,
}

/// The default device set: two ivshmem devices and one edu DMA engine.
pub const DEFAULT_DEVICES: &str = "ivshmem,ivshmem,edu";

/// Default ivshmem BAR2 size in MiB (large enough for a 64 MiB copy).
pub const DEFAULT_IVSHMEM_MIB: u64 = 64;

/// A parsed `--devices` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList(pub Vec<DeviceSpec>);

impl Default for DeviceList {
    fn default() -> Self {
        DEFAULT_DEVICES
            .parse()
            .expect("the default device list parses")
    }
}

impl FromStr for DeviceList {
    type Err = anyhow::Error;

    /// Parses `KIND[:SIZE][=ROLE],...`, e.g. `ivshmem:128M=src,ivshmem,edu,nvme:16M`.
    fn from_str(s: &str) -> Result<Self> {
        let mut out: Vec<DeviceSpec> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (head, role) = match item.split_once('=') {
                Some((h, r)) => (h, Some(r.to_string())),
                None => (item, None),
            };
            let (kind, size) = match head.split_once(':') {
                Some((k, sz)) => (
                    k,
                    Some(parse_mib(sz).map_err(|e| anyhow::anyhow!("device {item:?}: {e:#}"))?),
                ),
                None => (head, None),
            };
            let kind = match kind {
                "ivshmem" => DeviceKind::Ivshmem,
                "edu" => DeviceKind::Edu,
                "nvme" => DeviceKind::Nvme,
                "nvme-md" => DeviceKind::NvmeMetadata,
                "nvme-kernel" => DeviceKind::NvmeKernel,
                "gpu" | "virtio-gpu" => DeviceKind::Gpu,
                "gpu-noblob" | "virtio-gpu-noblob" => DeviceKind::GpuNoBlob,
                other => bail!(
                    "unknown device kind {other:?} in --devices {s:?}: use ivshmem, edu, nvme, \
                     nvme-md, nvme-kernel, gpu or gpu-noblob"
                ),
            };
            let role = role.unwrap_or_else(|| {
                let n = out.iter().filter(|d| d.kind == kind).count();
                format!("{}{n}", kind.name())
            });
            if out.iter().any(|d| d.role == role) {
                bail!("device role {role:?} appears twice in --devices {s:?}");
            }
            if !role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("device role {role:?} may only hold letters, digits, '-' and '_'");
            }
            let size_mib = size.unwrap_or(match kind {
                DeviceKind::Ivshmem => DEFAULT_IVSHMEM_MIB,
                DeviceKind::Nvme | DeviceKind::NvmeMetadata | DeviceKind::NvmeKernel => 16,
                _ => 0,
            });
            if kind == DeviceKind::Ivshmem && !size_mib.is_power_of_two() {
                bail!("ivshmem size must be a power of two MiB (a BAR), got {size_mib} MiB");
            }
            out.push(DeviceSpec {
                kind,
                role,
                size_mib,
            });
        }
        if out.is_empty() {
            bail!("--devices is empty: name at least one device (e.g. {DEFAULT_DEVICES})");
        }
        Ok(DeviceList(out))
    }
}

fn parse_mib(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix(['G', 'g']) {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix(['M', 'm']) {
        (n, 1)
    } else {
        (s, 1)
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size in MiB (e.g. 64M, 1G)"))?;
    Ok(n * mult)
}

/// How the devices are placed on the emulated PCI hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Each device on QEMU's root bus, each in its own IOMMU group.
    #[default]
    Root,
    /// All devices behind one emulated PCIe switch (x3130 upstream + xio3130 downstream
    /// ports, none with ACS): P2P distance checks pass; each device shares its IOMMU
    /// group with its downstream port.
    Switch,
    /// The first device behind the switch, the others on the root bus: they meet only
    /// at the host bridge.
    Mixed,
    /// The first two devices are functions 0 and 1 of one multifunction slot on the
    /// root bus (00:10.0 and 00:10.1; QEMU's functions have no ACS, so the two share
    /// one IOMMU group); the others stay on the root bus at 00:12.0, 00:13.0, ...
    Multifunction,
}

impl FromStr for Topology {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "root" => Ok(Topology::Root),
            "switch" => Ok(Topology::Switch),
            "mixed" => Ok(Topology::Mixed),
            "multifunction" => Ok(Topology::Multifunction),
            _ => bail!("unknown topology {s:?}: use root, switch, mixed or multifunction"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_has_two_ivshmem_and_edu() {
        let l = DeviceList::default();
        let roles: Vec<_> = l.0.iter().map(|d| d.role.as_str()).collect();
        assert_eq!(roles, ["ivshmem0", "ivshmem1", "edu0"]);
        assert_eq!(l.0[0].size_mib, 64);
    }

    #[test]
    fn topologies_parse() {
        for (s, t) in [
            ("root", Topology::Root),
            ("switch", Topology::Switch),
            ("mixed", Topology::Mixed),
            ("multifunction", Topology::Multifunction),
        ] {
            assert_eq!(s.parse::<Topology>().unwrap(), t);
        }
        let err = "tree".parse::<Topology>().unwrap_err().to_string();
        assert!(
            err.contains("root, switch, mixed or multifunction"),
            "{err}"
        );
    }

    #[test]
    fn sizes_and_roles_parse() {
        let l: DeviceList = "ivshmem:128M=src,ivshmem:1G,nvme:16M".parse().unwrap();
        assert_eq!(l.0[0].role, "src");
        assert_eq!(l.0[0].size_mib, 128);
        assert_eq!(l.0[1].role, "ivshmem1");
        assert_eq!(l.0[1].size_mib, 1024);
        assert_eq!(l.0[2].kind, DeviceKind::Nvme);
        let k: DeviceList = "nvme-kernel:16M,nvme".parse().unwrap();
        assert_eq!(k.0[0].kind, DeviceKind::NvmeKernel);
        assert_eq!(k.0[0].role, "nvme-kernel0");
        assert!(!k.0[0].kind.binds_vfio() && k.0[0].kind.is_nvme() && k.0[1].kind.binds_vfio());
        let l: DeviceList = "ivshmem,gpu,gpu-noblob".parse().unwrap();
        assert_eq!(l.0[1].kind, DeviceKind::Gpu);
        assert_eq!(l.0[2].kind, DeviceKind::GpuNoBlob);
        assert_eq!(l.0[2].role, "gpu-noblob0");
        assert!(!DeviceKind::GpuNoBlob.binds_vfio());
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        let e = "ivshmem,floppy"
            .parse::<DeviceList>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("floppy") && e.contains("use ivshmem"), "{e}");
        let e = "ivshmem=a,edu=a"
            .parse::<DeviceList>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = "ivshmem:3M".parse::<DeviceList>().unwrap_err().to_string();
        assert!(e.contains("power of two"), "{e}");
        assert!("".parse::<DeviceList>().is_err());
    }
}
