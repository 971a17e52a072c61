//! What sysfs says about a PCI function: `/sys/bus/pci/devices/BDF/`.
//!
//! Reads `vendor`, `device`, `class`, the `driver` and `iommu_group` links, the
//! `resource` file (BAR addresses, sizes and flags), the `vfio-dev/` directory
//! (the cdev name) and the `physfn` link (SR-IOV VF). The sysfs root is a
//! parameter so tests run against fixture trees.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::addr::Bdf;
use crate::error::{HostError, Result};

use peerdma_uapi::pci::{IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH};

/// Number of `resource` lines that describe BAR0..BAR5 and the ROM.
pub const BAR_AND_ROM_RESOURCES: usize = 7;

/// A sysfs tree, `/sys` on a running system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::system()
    }
}

impl Sysfs {
    /// A sysfs tree rooted at `root` (the directory that holds `bus/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The running system's `/sys`.
    pub fn system() -> Self {
        Self::new("/sys")
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Refuses a BDF that names no PCI function, before any attribute is read,
    /// when the devices directory itself is there (sysfs is mounted).
    pub(crate) fn check_exists(&self, bdf: Bdf, path: &Path) -> Result<()> {
        let devices = self.root.join("bus/pci/devices");
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && devices.is_dir() => {
                Err(HostError::NoSuchDevice { bdf })
            }
            Err(source) => Err(HostError::Sysfs {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Every PCI function `ROOT/bus/pci/devices/` lists, in BDF order
    /// (entries that are not BDFs are skipped).
    ///
    /// # Errors
    ///
    /// [`HostError::Sysfs`] when the directory cannot be read (sysfs not mounted).
    pub fn devices(&self) -> Result<Vec<Bdf>> {
        let dir = self.root.join("bus/pci/devices");
        let sysfs_err = |source| HostError::Sysfs {
            path: dir.clone(),
            source,
        };
        let mut bdfs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(sysfs_err)? {
            if let Ok(bdf) = entry
                .map_err(sysfs_err)?
                .file_name()
                .to_string_lossy()
                .parse()
            {
                bdfs.push(bdf);
            }
        }
        bdfs.sort();
        Ok(bdfs)
    }

    /// `ROOT/bus/pci/devices/BDF`.
    pub fn device_path(&self, bdf: Bdf) -> PathBuf {
        self.root.join("bus/pci/devices").join(bdf.to_string())
    }

    /// The function's config space as sysfs shows it (`BDF/config`): all of
    /// it to root, the first 64 bytes to others.
    ///
    /// # Errors
    ///
    /// [`HostError::NoSuchDevice`] for a BDF sysfs does not list, [`HostError::Sysfs`]
    /// when the file cannot be read.
    pub fn config_space(&self, bdf: Bdf) -> Result<Vec<u8>> {
        let path = self.device_path(bdf);
        self.check_exists(bdf, &path)?;
        let file = path.join("config");
        fs::read(&file).map_err(|source| HostError::Sysfs { path: file, source })
    }

    /// Reads everything this library needs about one PCI function.
    ///
    /// # Errors
    ///
    /// A BDF with no directory under a mounted `bus/pci/devices/` is
    /// [`HostError::NoSuchDevice`]; other read failures are [`HostError::Sysfs`];
    /// an attribute in an unexpected format is [`HostError::SysfsParse`].
    pub fn device(&self, bdf: Bdf) -> Result<PciDevice> {
        let path = self.device_path(bdf);
        self.check_exists(bdf, &path)?;
        let vendor = read_hex(&path.join("vendor"))? as u16;
        let device = read_hex(&path.join("device"))? as u16;
        let class = read_hex(&path.join("class"))? as u32;
        let driver = link_name(&path.join("driver"))?;
        let iommu_group = match link_name(&path.join("iommu_group"))? {
            None => None,
            Some(name) => Some(name.parse::<u32>().map_err(|_| HostError::SysfsParse {
                path: path.join("iommu_group"),
                value: name.clone(),
                reason: "IOMMU group link target is not a number",
            })?),
        };
        let resource_path = path.join("resource");
        let text = read(&resource_path)?;
        let resources = parse_resources(&resource_path, &text)?;
        let vfio_dev = vfio_dev_name(&path.join("vfio-dev"))?;
        let is_virtfn = fs::symlink_metadata(path.join("physfn")).is_ok();
        let unsafe_noiommu_mode = self.unsafe_noiommu_mode();
        Ok(PciDevice {
            bdf,
            path,
            vendor,
            device,
            class,
            driver,
            iommu_group,
            resources,
            vfio_dev,
            is_virtfn,
            unsafe_noiommu_mode,
        })
    }

    /// Whether vfio's unsafe no-IOMMU mode is on
    /// (`ROOT/module/vfio/parameters/enable_unsafe_noiommu_mode` reads `Y`): then
    /// vfio-pci takes devices no IOMMU translates, in `noiommu-N` groups
    /// (drivers/vfio/group.c, `vfio_noiommu_group_alloc`).
    pub fn unsafe_noiommu_mode(&self) -> bool {
        fs::read_to_string(
            self.root
                .join("module/vfio/parameters/enable_unsafe_noiommu_mode"),
        )
        .is_ok_and(|v| v.trim() == "Y")
    }
}

/// What sysfs says about one PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// Address.
    pub bdf: Bdf,
    /// `ROOT/bus/pci/devices/BDF`.
    pub path: PathBuf,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// Bound driver (`vfio-pci`, a variant driver, or a kernel driver).
    pub driver: Option<String>,
    /// IOMMU group number (also set in vfio noiommu mode).
    pub iommu_group: Option<u32>,
    /// `resource` lines for BAR0..BAR5 and the ROM, in that order.
    pub resources: Vec<Resource>,
    /// Name of the vfio cdev (`vfio0`), when the device has one.
    pub vfio_dev: Option<String>,
    /// Whether this is an SR-IOV virtual function (its memory decode is
    /// controlled by the PF, so the command register's bit does not apply).
    pub is_virtfn: bool,
    /// Whether vfio's unsafe no-IOMMU mode was on when this was read
    /// ([`Sysfs::unsafe_noiommu_mode`]).
    pub unsafe_noiommu_mode: bool,
}

impl PciDevice {
    /// Whether the bound driver is vfio-pci or a vfio-pci variant driver.
    pub fn is_vfio_bound(&self) -> bool {
        self.driver.as_deref().is_some_and(|d| d.contains("vfio"))
    }

    /// The resource of BAR `index` (0..=5) or ROM (6).
    pub fn resource(&self, index: u32) -> Option<&Resource> {
        self.resources.get(index as usize)
    }
}

/// One line of the `resource` file: `start end flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Resource {
    /// First physical address.
    pub start: u64,
    /// Last physical address (inclusive).
    pub end: u64,
    /// `IORESOURCE_*` flags.
    pub flags: u64,
}

impl Resource {
    /// Size in bytes, following `pci_resource_len`: 0 when `end` is 0.
    pub fn size(&self) -> u64 {
        if self.end == 0 {
            0
        } else {
            self.end.wrapping_sub(self.start).wrapping_add(1)
        }
    }
    /// The resource decodes I/O ports.
    pub fn is_io(&self) -> bool {
        self.flags & IORESOURCE_IO != 0
    }
    /// The resource decodes memory.
    pub fn is_mem(&self) -> bool {
        self.flags & IORESOURCE_MEM != 0
    }
    /// The memory is prefetchable.
    pub fn is_prefetchable(&self) -> bool {
        self.flags & IORESOURCE_PREFETCH != 0
    }
    /// The BAR is 64-bit.
    pub fn is_mem64(&self) -> bool {
        self.flags & IORESOURCE_MEM_64 != 0
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| HostError::Sysfs {
        path: path.to_owned(),
        source,
    })
}

fn read_hex(path: &Path) -> Result<u64> {
    let text = read(path)?;
    parse_hex(path, text.trim())
}

fn parse_hex(path: &Path, value: &str) -> Result<u64> {
    let digits = value.strip_prefix("0x").unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HostError::SysfsParse {
            path: path.to_owned(),
            value: value.to_owned(),
            reason: "expected a hexadecimal number",
        });
    }
    u64::from_str_radix(digits, 16).map_err(|_| HostError::SysfsParse {
        path: path.to_owned(),
        value: value.to_owned(),
        reason: "hexadecimal number does not fit 64 bits",
    })
}

/// Last path component of a symlink's target; `None` when the link is absent.
fn link_name(path: &Path) -> Result<Option<String>> {
    match fs::read_link(path) {
        Ok(target) => target
            .file_name()
            .map(|n| Some(n.to_string_lossy().into_owned()))
            .ok_or_else(|| HostError::SysfsParse {
                path: path.to_owned(),
                value: target.display().to_string(),
                reason: "link target has no final component",
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Sysfs {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The `vfioN` entry of a `vfio-dev` directory; `None` when there is none.
fn vfio_dev_name(dir: &Path) -> Result<Option<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HostError::Sysfs {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| HostError::Sysfs {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("vfio") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().next())
}

/// Parses the `resource` file: one `0x... 0x... 0x...` line per resource;
/// keeps the first seven (BAR0..BAR5, ROM), padding absent ones with zeros.
///
/// # Errors
///
/// [`HostError::SysfsParse`] (naming `path`) for a line that is not three hex
/// numbers.
pub fn parse_resources(path: &Path, text: &str) -> Result<Vec<Resource>> {
    let mut out = Vec::with_capacity(BAR_AND_ROM_RESOURCES);
    for line in text.lines().take(BAR_AND_ROM_RESOURCES) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [start, end, flags] = fields.as_slice() else {
            return Err(HostError::SysfsParse {
                path: path.to_owned(),
                value: line.to_owned(),
                reason: "resource line must have three fields: start end flags",
            });
        };
        let resource = Resource {
            start: parse_hex(path, start)?,
            end: parse_hex(path, end)?,
            flags: parse_hex(path, flags)?,
        };
        if resource.end != 0 && resource.end < resource.start {
            return Err(HostError::SysfsParse {
                path: path.to_owned(),
                value: line.to_owned(),
                reason: "resource ends before it starts",
            });
        }
        out.push(resource);
    }
    out.resize(BAR_AND_ROM_RESOURCES, Resource::default());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::TempTree;
    use std::os::unix::fs::symlink;

    fn fixtures() -> Sysfs {
        Sysfs::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sys"))
    }

    #[test]
    fn ivshmem_fixture_bound_to_vfio_with_cdev() {
        let bdf: Bdf = "00:03.0".parse().unwrap();
        let dev = fixtures().device(bdf).unwrap();
        assert_eq!(
            (dev.vendor, dev.device, dev.class),
            (0x1af4, 0x1110, 0x050000)
        );
        assert_eq!(dev.driver.as_deref(), Some("vfio-pci"));
        assert!(dev.is_vfio_bound());
        assert_eq!(dev.iommu_group, Some(7));
        assert_eq!(dev.vfio_dev.as_deref(), Some("vfio0"));
        assert!(!dev.is_virtfn);
        let bar0 = dev.resource(0).unwrap();
        assert_eq!((bar0.start, bar0.size()), (0xfebf_1000, 0x100));
        assert!(bar0.is_mem() && !bar0.is_prefetchable() && !bar0.is_mem64());
        assert_eq!(dev.resource(1).unwrap().size(), 0);
        let bar2 = dev.resource(2).unwrap();
        assert_eq!((bar2.start, bar2.size()), (0xfc00_0000, 0x100_0000));
        assert!(bar2.is_mem() && bar2.is_prefetchable() && bar2.is_mem64());
        assert_eq!(dev.resources.len(), BAR_AND_ROM_RESOURCES);
    }

    #[test]
    fn edu_fixture_kernel_driver_no_group() {
        let bdf: Bdf = "0000:00:04.0".parse().unwrap();
        let dev = fixtures().device(bdf).unwrap();
        assert_eq!((dev.vendor, dev.device), (0x1234, 0x11e8));
        assert_eq!(dev.driver.as_deref(), Some("edu"));
        assert!(!dev.is_vfio_bound());
        assert_eq!(dev.iommu_group, None);
        assert_eq!(dev.vfio_dev, None);
        assert!(dev.is_virtfn);
        let io = dev.resource(4).unwrap();
        assert!(io.is_io() && !io.is_mem());
        assert_eq!(io.size(), 0x20);
    }

    #[test]
    fn devices_lists_the_fixture_functions_in_order() {
        let bdfs = fixtures().devices().unwrap();
        assert_eq!(
            bdfs,
            [
                "0000:00:03.0".parse().unwrap(),
                "0000:00:04.0".parse().unwrap()
            ]
        );
        let tree = TempTree::new("nodevices");
        assert!(matches!(
            Sysfs::new(&tree.0).devices(),
            Err(HostError::Sysfs { .. })
        ));
    }

    #[test]
    fn missing_device_is_named_up_front() {
        let bdf: Bdf = "0000:0e:00.0".parse().unwrap();
        let err = fixtures().device(bdf).unwrap_err();
        assert!(
            matches!(err, HostError::NoSuchDevice { bdf: b } if b == bdf),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(rustix::io::Errno::NOENT));
        let msg = err.to_string();
        assert!(
            msg.starts_with("no PCI device 0000:0e:00.0;") && msg.contains("peerdma list"),
            "{msg}"
        );
        assert!(!msg.contains("vendor"), "{msg}");
    }

    #[test]
    fn without_sysfs_the_read_error_stays() {
        let tree = TempTree::new("nosysfs");
        let bdf: Bdf = "0000:00:03.0".parse().unwrap();
        let err = Sysfs::new(&tree.0).device(bdf).unwrap_err();
        assert!(matches!(err, HostError::Sysfs { .. }), "{err:?}");
        assert!(err.to_string().contains("sysfs is mounted"), "{err}");
    }

    #[test]
    fn built_tree_with_bad_group_link() {
        let tree = TempTree::new("sysfs");
        let sys = Sysfs::new(&tree.0);
        let bdf: Bdf = "0000:05:00.1".parse().unwrap();
        let dir = sys.device_path(bdf);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), "0x8086\n").unwrap();
        fs::write(dir.join("device"), "0x1234\n").unwrap();
        fs::write(dir.join("class"), "0x020000\n").unwrap();
        fs::write(dir.join("resource"), "").unwrap();
        symlink(
            "../../../../kernel/iommu_groups/not-a-number",
            dir.join("iommu_group"),
        )
        .unwrap();
        let err = sys.device(bdf).unwrap_err();
        assert!(matches!(err, HostError::SysfsParse { .. }), "{err:?}");
        fs::remove_file(dir.join("iommu_group")).unwrap();
        symlink(
            "../../../../kernel/iommu_groups/12",
            dir.join("iommu_group"),
        )
        .unwrap();
        let dev = sys.device(bdf).unwrap();
        assert_eq!(dev.iommu_group, Some(12));
        assert_eq!(dev.resources, vec![Resource::default(); 7]);
        fs::write(dir.join("vendor"), "nonsense\n").unwrap();
        assert!(matches!(sys.device(bdf), Err(HostError::SysfsParse { .. })));
    }

    #[test]
    fn resource_parsing() {
        let p = Path::new("resource");
        let text = "0x00000000fe000000 0x00000000fe003fff 0x0000000000040200\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
        let r = parse_resources(p, text).unwrap();
        assert_eq!(r[0].size(), 0x4000);
        assert_eq!(r[1].size(), 0);
        assert_eq!(r.len(), 7);
        // Extra lines (bridge windows, IOV BARs) are ignored.
        let many = "0x0 0x0 0x0\n".repeat(13);
        assert_eq!(parse_resources(p, &many).unwrap().len(), 7);
        for bad in [
            "0x1 0x2\n",
            "0x1 0x2 0x3 0x4\n",
            "0xg 0x2 0x3\n",
            "0x10 0x0f 0x200\n",
            "0x 0x1 0x1\n",
        ] {
            assert!(
                matches!(parse_resources(p, bad), Err(HostError::SysfsParse { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn vfio_dev_picks_the_vfio_entry() {
        let tree = TempTree::new("vfiodev");
        let dir = tree.0.join("vfio-dev");
        fs::create_dir_all(dir.join("power")).unwrap();
        assert_eq!(vfio_dev_name(&dir).unwrap(), None);
        fs::create_dir_all(dir.join("vfio3")).unwrap();
        assert_eq!(vfio_dev_name(&dir).unwrap().as_deref(), Some("vfio3"));
        assert_eq!(vfio_dev_name(&tree.0.join("absent")).unwrap(), None);
    }
}
