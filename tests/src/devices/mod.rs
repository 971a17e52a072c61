//! The emulated PCI devices the testbed can attach, and how they are spelled on the
//! command line (`--devices ivshmem,ivshmem,edu`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::vm::VmOptions;

mod edu;
mod gpu;
mod igb;
mod ivshmem;
mod kernel_nic;
pub mod nic;
mod nvme;

pub use ivshmem::DEFAULT_IVSHMEM_MIB;
pub use nvme::nvme_serial;

/// Every device kind the testbed knows, in the order the "use one of" text lists them.
/// A new kind is one file in `tests/src/devices/` (a [`DeviceModel`] and its
/// `DeviceKind` constant) plus one line here; devices the registry lacks can still be
/// added for one run with `VmOptions::extra_qemu_args`.
pub const REGISTRY: &[DeviceKind] = &[
    DeviceKind::IVSHMEM,
    DeviceKind::EDU,
    DeviceKind::NVME,
    DeviceKind::NVME_MD,
    DeviceKind::NVME_KERNEL,
    DeviceKind::GPU,
    DeviceKind::GPU_NOBLOB,
    DeviceKind::IGB,
    DeviceKind::E1000E,
    DeviceKind::VIRTIO_NET,
];

/// Where and how one device of a run is placed: what [`DeviceModel::qemu_args`] needs.
pub struct QemuSite<'a> {
    /// The device's role (`ivshmem0`, `nvme0`, …): QEMU ids and backing files use it.
    pub role: &'a str,
    /// Its position in `--devices` (0-based).
    pub index: usize,
    /// SIZE from `KIND:SIZE` in MiB (or the kind's default).
    pub size_mib: u64,
    /// QEMU's placement properties (`bus=pcie.0,addr=0x10`, `bus=dn0`, …).
    pub place: &'a str,
    /// The scratch directory on the host.
    pub scratch: &'a Path,
    /// Whether ivshmem memory is a memfd (beside a blob GPU) rather than `ROLE.mem`.
    pub ivshmem_memfd: bool,
    /// The run's options (`nvme_mqes`, `emulate_udmabuf`, …).
    pub options: &'a VmOptions,
}

/// The kind-specific fields of a device in `guest.json` and `testbed.json` (`null`
/// for kinds that have none), flattened beside the common ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestExtras {
    /// The NVMe controller's serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// The NVMe namespace backed by the image.
    #[serde(default)]
    pub nsid: Option<u32>,
    /// The NVMe controller memory buffer size in bytes (`None`: not an NVMe device).
    #[serde(default)]
    pub cmb_size: Option<u64>,
    /// A NIC's MAC address, `52:54:00:77:VM:IDX` (see [`nic::mac`]).
    #[serde(default)]
    pub mac: Option<String>,
    /// A kernel NIC's IPv4 address with its prefix length (`10.77.0.1/24`, see
    /// [`nic::ipv4`]); the guest brings the interface up with it.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// A kernel NIC's interface name in the guest (`eth0`), filled in by the guest.
    #[serde(default)]
    pub interface: Option<String>,
}

/// One kind of emulated device: everything the testbed needs to put it in a run, find
/// it in the guest and describe it.
pub trait DeviceModel: Sync {
    /// The spelling in `--devices` and in role names (`nvme`, `gpu-noblob`).
    fn name(&self) -> &'static str;
    /// Other spellings `--devices` accepts.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// PCI vendor and device ID as the guest sees them (the guest finds devices by it,
    /// in QEMU order).
    fn pci_id(&self) -> (u16, u16);
    /// Whether the guest binds it to vfio-pci (else it keeps its kernel driver).
    fn binds_vfio(&self) -> bool {
        true
    }
    /// Whether it is an NVMe controller with an image (`--nvme-image` may seed it).
    fn is_nvme(&self) -> bool {
        false
    }
    /// Whether it is a network card (it gets a MAC and a netdev; a run's first NIC
    /// joins its wire).
    fn is_nic(&self) -> bool {
        false
    }
    /// Whether it needs a PCI bus of its own: an SR-IOV device whose VFs take function
    /// numbers past its own (QEMU's `igb` refuses a root-bus slot: "VF addr overflows").
    /// On the root bus the testbed puts it behind a `pcie-root-port` in its slot.
    fn needs_own_bus(&self) -> bool {
        false
    }
    /// SIZE in MiB when `--devices` gives none (0: the kind has no size).
    fn default_size_mib(&self) -> u64 {
        0
    }
    /// Refuses a SIZE the device cannot have.
    ///
    /// # Errors
    ///
    /// The reason, naming the size.
    fn check_size(&self, _size_mib: u64) -> Result<()> {
        Ok(())
    }
    /// Whether guest RAM must be a shareable memfd for it (blob virtio-gpu).
    fn needs_shared_guest_ram(&self) -> bool {
        false
    }
    /// The host file behind the device's memory or storage, if any.
    fn backing_file(&self, _site: &QemuSite) -> Option<PathBuf> {
        None
    }
    /// Kind-specific fields for the manifest (`site.place` is empty here).
    fn manifest_extras(&self, _site: &QemuSite) -> ManifestExtras {
        ManifestExtras::default()
    }
    /// QEMU's arguments for this device (`-device …,{place}` and its backends).
    ///
    /// # Errors
    ///
    /// When the host cannot provide what the device needs (named with the fix).
    fn qemu_args(&self, site: &QemuSite) -> Result<Vec<String>>;
}

/// A handle on one registered device kind; in JSON it is the kind's name.
#[derive(Clone, Copy)]
pub struct DeviceKind(&'static dyn DeviceModel);

impl DeviceKind {
    /// The kind's model.
    pub fn model(self) -> &'static dyn DeviceModel {
        self.0
    }

    /// The spelling used in `--devices` and in role names.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// PCI vendor and device ID as the guest sees them.
    pub fn pci_id(self) -> (u16, u16) {
        self.0.pci_id()
    }

    /// Whether this is an NVMe controller (on vfio-pci or the kernel's driver).
    pub fn is_nvme(self) -> bool {
        self.0.is_nvme()
    }

    /// Whether the testbed binds this kind to vfio-pci (the GPU keeps its DRM driver).
    pub fn binds_vfio(self) -> bool {
        self.0.binds_vfio()
    }

    /// The registered kind spelled `name` (or one of its aliases).
    pub fn by_name(name: &str) -> Option<DeviceKind> {
        REGISTRY
            .iter()
            .copied()
            .find(|k| k.name() == name || k.0.aliases().contains(&name))
    }

    /// "a, b, … or z": every registered name, for error messages.
    pub fn names_text() -> String {
        let names: Vec<&str> = REGISTRY.iter().map(|k| k.name()).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl PartialEq for DeviceKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for DeviceKind {}

impl fmt::Debug for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DeviceKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceKind::by_name(s).with_context(|| {
            format!(
                "unknown device kind {s:?}: use {}",
                DeviceKind::names_text()
            )
        })
    }
}

impl Serialize for DeviceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DeviceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(e))
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
            let kind = DeviceKind::by_name(kind).with_context(|| {
                format!(
                    "unknown device kind {kind:?} in --devices {s:?}: use {}",
                    DeviceKind::names_text()
                )
            })?;
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
            let size_mib = size.unwrap_or(kind.model().default_size_mib());
            kind.model().check_size(size_mib)?;
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
    fn the_registry_names_each_kind_once_and_json_spells_the_name() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        for k in REGISTRY {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<DeviceKind>(&json).unwrap(), *k);
            assert_eq!(k.name().parse::<DeviceKind>().unwrap(), *k);
        }
        assert_eq!(
            DeviceKind::names_text(),
            "ivshmem, edu, nvme, nvme-md, nvme-kernel, gpu, gpu-noblob, igb, e1000e or virtio-net"
        );
        assert_eq!("virtio-gpu".parse::<DeviceKind>().unwrap(), DeviceKind::GPU);
        let e = serde_json::from_str::<DeviceKind>("\"floppy\"").unwrap_err();
        assert!(e.to_string().contains("use ivshmem, edu"), "{e}");
    }

    #[test]
    fn models_give_their_qemu_arguments() {
        let options = VmOptions {
            nvme_mqes: Some(15),
            ..VmOptions::default()
        };
        let scratch = std::env::temp_dir().join(format!("peerdma-models-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let site = QemuSite {
            role: "nvme0",
            index: 2,
            size_mib: 16,
            place: "bus=pcie.0,addr=0x12",
            scratch: &scratch,
            ivshmem_memfd: false,
            options: &options,
        };
        let a = DeviceKind::NVME.model().qemu_args(&site).unwrap();
        assert_eq!(a[0], "-drive");
        assert_eq!(
            a[3],
            "nvme,serial=peerdma2,drive=drv-nvme0,cmb_size_mb=16,bus=pcie.0,addr=0x12,mqes=15"
        );
        let e = DeviceKind::EDU.model().qemu_args(&site).unwrap();
        assert_eq!(e, ["-device", "edu,bus=pcie.0,addr=0x12"]);
        let x = DeviceKind::NVME.model().manifest_extras(&site);
        assert_eq!(x.serial.as_deref(), Some("peerdma2"));
        assert_eq!(x.cmb_size, Some(16 << 20));
        assert_eq!(
            DeviceKind::EDU.model().manifest_extras(&site),
            ManifestExtras::default()
        );
        std::fs::remove_dir_all(&scratch).unwrap();
    }

    #[test]
    fn an_igb_gets_a_mac_per_vm_and_index_and_a_peerless_netdev_without_a_wire() {
        let scratch = Path::new("/run/x");
        let options = VmOptions {
            vm_index: 1,
            ..VmOptions::default()
        };
        let mut site = QemuSite {
            role: "igb0",
            index: 2,
            size_mib: 0,
            place: "bus=rp-igb0",
            scratch,
            ivshmem_memfd: false,
            options: &options,
        };
        let a = DeviceKind::IGB.model().qemu_args(&site).unwrap();
        assert_eq!(
            a,
            [
                "-netdev",
                "dgram,id=net-igb0,local.type=unix,local.path=/run/x/igb0.sock,\
                 remote.type=unix,remote.path=/run/x/igb0.nopeer.sock",
                "-device",
                "igb,netdev=net-igb0,mac=52:54:00:77:01:02,bus=rp-igb0",
            ]
        );
        let x = DeviceKind::IGB.model().manifest_extras(&site);
        assert_eq!(x.mac.as_deref(), Some("52:54:00:77:01:02"));
        assert!(DeviceKind::IGB.binds_vfio() && DeviceKind::IGB.model().needs_own_bus());
        assert_eq!(DeviceKind::IGB.pci_id(), (0x8086, 0x10c9));
        // A kernel NIC gets an address per VM, and per kernel NIC before it.
        let x = DeviceKind::VIRTIO_NET.model().manifest_extras(&site);
        assert_eq!(x.ipv4.as_deref(), Some("10.77.0.2/24"));
        assert_eq!(x.mac.as_deref(), Some("52:54:00:77:01:02"));
        let a = DeviceKind::VIRTIO_NET.model().qemu_args(&site).unwrap();
        assert_eq!(
            a[3],
            "virtio-net-pci,disable-legacy=on,netdev=net-igb0,mac=52:54:00:77:01:02,bus=rp-igb0"
        );
        let options2 = VmOptions {
            devices: "e1000e,igb,virtio-net".parse().unwrap(),
            ..VmOptions::default()
        };
        let second = QemuSite {
            index: 2,
            options: &options2,
            ..site
        };
        let x = DeviceKind::VIRTIO_NET.model().manifest_extras(&second);
        assert_eq!(x.ipv4.as_deref(), Some("10.77.1.1/24"));
        assert!(!DeviceKind::E1000E.binds_vfio() && !DeviceKind::VIRTIO_NET.binds_vfio());
        // The wire joins the run's first NIC only, with its capture.
        let options = VmOptions {
            devices: "igb,igb".parse().unwrap(),
            wire: Some(crate::vm::Wire {
                local: "/w/a.sock".into(),
                remote: "/w/b.sock".into(),
                pcap: Some("/w/a.pcap".into()),
            }),
            ..VmOptions::default()
        };
        site.options = &options;
        site.index = 0;
        let a = DeviceKind::IGB.model().qemu_args(&site).unwrap();
        assert!(a[1].ends_with("local.path=/w/a.sock,remote.type=unix,remote.path=/w/b.sock"));
        assert_eq!(a[4], "-object");
        assert_eq!(
            a[5],
            "filter-dump,id=dump-igb0,netdev=net-igb0,file=/w/a.pcap"
        );
        site.index = 1;
        site.role = "igb1";
        let a = DeviceKind::IGB.model().qemu_args(&site).unwrap();
        assert!(a[1].ends_with("remote.path=/run/x/igb1.nopeer.sock") && a.len() == 4);
        let long = Path::new("/run").join("d".repeat(100));
        site.scratch = &long;
        let e = DeviceKind::IGB.model().qemu_args(&site).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than the 107 a unix socket address holds"),
            "{e}"
        );
    }

    #[test]
    fn manifest_extras_sit_beside_the_common_fields_in_json() {
        let options = VmOptions::default();
        let site = QemuSite {
            role: "nvme0",
            index: 3,
            size_mib: 16,
            place: "",
            scratch: Path::new("/run/x"),
            ivshmem_memfd: false,
            options: &options,
        };
        let d = crate::manifest::GuestDevice {
            role: "nvme0".into(),
            kind: DeviceKind::NVME,
            backing_file: None,
            size: 16 << 20,
            extras: DeviceKind::NVME.model().manifest_extras(&site),
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["kind"], "nvme");
        assert_eq!(v["serial"], "peerdma3");
        assert_eq!(v["nsid"], 1);
        assert_eq!(v["cmb_size"], 16u64 << 20);
        let back: crate::manifest::GuestDevice = serde_json::from_value(v).unwrap();
        assert_eq!(back.extras, d.extras);
        // A line written before the extras existed still reads (they default to None).
        let old: crate::manifest::GuestDevice =
            serde_json::from_str(r#"{"role":"edu0","kind":"edu","backing_file":null,"size":0}"#)
                .unwrap();
        assert_eq!(old.extras, ManifestExtras::default());
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
        assert_eq!(l.0[2].kind, DeviceKind::NVME);
        let k: DeviceList = "nvme-kernel:16M,nvme".parse().unwrap();
        assert_eq!(k.0[0].kind, DeviceKind::NVME_KERNEL);
        assert_eq!(k.0[0].role, "nvme-kernel0");
        assert!(!k.0[0].kind.binds_vfio() && k.0[0].kind.is_nvme() && k.0[1].kind.binds_vfio());
        let l: DeviceList = "ivshmem,gpu,gpu-noblob".parse().unwrap();
        assert_eq!(l.0[1].kind, DeviceKind::GPU);
        assert_eq!(l.0[2].kind, DeviceKind::GPU_NOBLOB);
        assert_eq!(l.0[2].role, "gpu-noblob0");
        assert!(!DeviceKind::GPU_NOBLOB.binds_vfio());
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
