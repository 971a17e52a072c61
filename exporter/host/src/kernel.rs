//! What the running kernel offers for peer-to-peer DMA over dma-buf: its
//! release, the build options that matter (from `/proc/config.gz`,
//! `/boot/config-RELEASE` or `/lib/modules/RELEASE/config`, else from what the
//! running kernel shows: device nodes, sysfs directories, `/proc/kallsyms`),
//! the IOMMU and its mode, and which vfio drivers can export a dma-buf.
//!
//! Every path is read under a [`HostPaths`] root, so fixture trees work. Only
//! reads: nothing here changes the system.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use flate2::read::GzDecoder;

use crate::error::{HostError, Result};
use crate::sysfs::Sysfs;
use crate::Bdf;

/// The oldest release with vfio-pci dma-buf export (`VFIO_DEVICE_FEATURE_DMA_BUF`).
pub const MIN_RELEASE: (u32, u32) = (6, 19);

/// Where the host's pseudo-filesystems are: `/` on a running system, a
/// fixture directory in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    root: PathBuf,
}

impl HostPaths {
    /// The running system.
    pub fn system() -> HostPaths {
        HostPaths::under("/")
    }

    /// A tree with `sys/`, `proc/`, `dev/`, `boot/`, `lib/modules/` under `root`.
    pub fn under(root: impl Into<PathBuf>) -> HostPaths {
        HostPaths { root: root.into() }
    }

    /// `ROOT/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The sysfs tree.
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(self.path("sys"))
    }

    /// Whether `ROOT/rel` exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// `ROOT/rel` as trimmed text, when readable.
    pub fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The names in directory `ROOT/rel`, sorted; empty when absent.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(rel))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The last component of symlink `ROOT/rel`'s target.
    pub fn link_name(&self, rel: &str) -> Option<String> {
        fs::read_link(self.path(rel))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }
}

/// The kernel release (`uname -r`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRelease {
    /// The whole string: `7.2.13+deb14-amd64`.
    pub release: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl KernelRelease {
    /// Parses `MAJOR.MINOR…`.
    pub fn parse(release: &str) -> Option<KernelRelease> {
        let release = release.trim();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelRelease {
            release: release.to_string(),
            major,
            minor,
        })
    }

    /// The running kernel's, from `proc/sys/kernel/osrelease`.
    pub fn running(host: &HostPaths) -> Option<KernelRelease> {
        KernelRelease::parse(&host.read("proc/sys/kernel/osrelease")?)
    }

    /// Whether it is at least `major.minor`.
    pub fn at_least(&self, (major, minor): (u32, u32)) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// A kernel `.config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Where it was read from.
    pub source: PathBuf,
    options: BTreeMap<String, String>,
}

impl KernelConfig {
    /// Parses `CONFIG_X=y` lines (`# CONFIG_X is not set` and the rest are
    /// ignored: an absent option is not set).
    pub fn parse(source: impl Into<PathBuf>, text: &str) -> KernelConfig {
        let options = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("CONFIG_"))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        KernelConfig {
            source: source.into(),
            options,
        }
    }

    /// The first of `proc/config.gz` (gzip), `boot/config-RELEASE` and
    /// `lib/modules/RELEASE/config` that can be read.
    ///
    /// # Errors
    ///
    /// [`HostError::Sysfs`] when `proc/config.gz` exists but does not decompress;
    /// absent files are not errors (`Ok(None)` when none is there).
    pub fn find(host: &HostPaths, release: &str) -> Result<Option<KernelConfig>> {
        let gz = host.path("proc/config.gz");
        if let Ok(f) = fs::File::open(&gz) {
            let mut text = String::new();
            GzDecoder::new(f)
                .read_to_string(&mut text)
                .map_err(|source| HostError::Sysfs {
                    path: gz.clone(),
                    source,
                })?;
            return Ok(Some(KernelConfig::parse(gz, &text)));
        }
        for rel in [
            format!("boot/config-{release}"),
            format!("lib/modules/{release}/config"),
        ] {
            let path = host.path(&rel);
            if let Ok(text) = fs::read_to_string(&path) {
                return Ok(Some(KernelConfig::parse(path, &text)));
            }
        }
        Ok(None)
    }

    /// `y`, `m` (or another value), `None` when not set.
    pub fn value(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }
}

/// What shows a build option is on in a running kernel without its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A path under the host root exists.
    Path(&'static str),
    /// `/proc/kallsyms` has this symbol (built in, or its module is loaded).
    Symbol(&'static str),
}

/// A build option this project needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOption {
    /// `CONFIG_…`.
    pub name: &'static str,
    /// What it gives, in a phrase.
    pub gives: &'static str,
    /// What shows it on a running kernel.
    pub evidence: &'static [Evidence],
}

/// The options that matter, in the order a user enables them.
pub const KERNEL_OPTIONS: &[KernelOption] = &[
    KernelOption {
        name: "CONFIG_DMA_SHARED_BUFFER",
        gives: "dma-bufs",
        evidence: &[Evidence::Symbol("dma_buf_export")],
    },
    KernelOption {
        name: "CONFIG_PCI_P2PDMA",
        gives: "PCI peer-to-peer DMA (vfio-pci's dma-buf export needs it)",
        evidence: &[Evidence::Symbol("pci_p2pdma_add_resource")],
    },
    KernelOption {
        name: "CONFIG_VFIO_PCI",
        gives: "the vfio-pci driver",
        evidence: &[
            Evidence::Path("sys/bus/pci/drivers/vfio-pci"),
            Evidence::Path("sys/module/vfio_pci"),
        ],
    },
    KernelOption {
        name: "CONFIG_VFIO_PCI_DMABUF",
        gives: "dma-buf export of BAR ranges (VFIO_DEVICE_FEATURE_DMA_BUF)",
        evidence: &[Evidence::Symbol("vfio_pci_core_feature_dma_buf")],
    },
    KernelOption {
        name: "CONFIG_VFIO_DEVICE_CDEV",
        gives: "the VFIO cdev access path (/dev/vfio/devices/vfioN bound to iommufd)",
        evidence: &[Evidence::Symbol("vfio_device_fops_cdev_open")],
    },
    KernelOption {
        name: "CONFIG_IOMMUFD",
        gives: "iommufd (/dev/iommu): the importer that maps a BAR dma-buf for a DMA engine",
        evidence: &[
            Evidence::Path("dev/iommu"),
            Evidence::Path("sys/module/iommufd"),
        ],
    },
    KernelOption {
        name: "CONFIG_UDMABUF",
        gives:
            "udmabuf (/dev/udmabuf): dma-bufs of ordinary memory, for tests and CPU-side buffers",
        evidence: &[Evidence::Path("dev/udmabuf")],
    },
];

/// What is known about one option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionState {
    /// The config sets it (`y` or `m`).
    Set {
        /// Its value.
        value: String,
        /// The config file.
        source: PathBuf,
    },
    /// The config does not set it.
    NotSet {
        /// The config file.
        source: PathBuf,
    },
    /// No config; the running kernel shows it.
    Seen {
        /// What showed it.
        evidence: String,
    },
    /// No config, and the running kernel does not show it (it may be a
    /// module that is not loaded).
    NotSeen {
        /// What was looked at.
        looked_at: String,
    },
}

impl OptionState {
    /// Whether the option is there.
    pub fn present(&self) -> bool {
        matches!(self, OptionState::Set { .. } | OptionState::Seen { .. })
    }

    /// Where the answer came from, in words.
    pub fn source(&self) -> String {
        match self {
            OptionState::Set { value, source } => format!("={value} in {}", source.display()),
            OptionState::NotSet { source } => format!("not set in {}", source.display()),
            OptionState::Seen { evidence } => format!("running kernel has {evidence}"),
            OptionState::NotSeen { looked_at } => {
                format!("no kernel config found, and the running kernel lacks {looked_at}")
            }
        }
    }
}

/// The kernel: release, config, and the symbols it exports.
#[derive(Clone, Debug)]
pub struct KernelFacts {
    /// The release, when readable.
    pub release: Option<KernelRelease>,
    /// Its config, when found.
    pub config: Option<KernelConfig>,
    /// The symbols of `proc/kallsyms` that [`KERNEL_OPTIONS`] look for.
    symbols: Vec<&'static str>,
}

impl KernelFacts {
    /// Reads the running kernel's facts (`proc/kallsyms` only when no
    /// config is found).
    ///
    /// # Errors
    ///
    /// As [`KernelConfig::find`].
    pub fn read(host: &HostPaths) -> Result<KernelFacts> {
        let release = KernelRelease::running(host);
        let config = match &release {
            Some(r) => KernelConfig::find(host, &r.release)?,
            None => None,
        };
        let symbols = if config.is_none() {
            kallsyms_having(host, KERNEL_OPTIONS)
        } else {
            Vec::new()
        };
        Ok(KernelFacts {
            release,
            config,
            symbols,
        })
    }

    /// What is known about `option`.
    pub fn option(&self, host: &HostPaths, option: &KernelOption) -> OptionState {
        if let Some(c) = &self.config {
            return match c.value(option.name) {
                Some(v) if v != "n" => OptionState::Set {
                    value: v.to_string(),
                    source: c.source.clone(),
                },
                _ => OptionState::NotSet {
                    source: c.source.clone(),
                },
            };
        }
        let shown = option.evidence.iter().find(|e| match e {
            Evidence::Path(p) => host.exists(p),
            Evidence::Symbol(s) => self.symbols.contains(s),
        });
        let words = |e: &Evidence| match e {
            Evidence::Path(p) => format!("/{p}"),
            Evidence::Symbol(s) => format!("symbol {s}"),
        };
        match shown {
            Some(e) => OptionState::Seen { evidence: words(e) },
            None => OptionState::NotSeen {
                looked_at: option
                    .evidence
                    .iter()
                    .map(words)
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        }
    }
}

/// The symbols of `options` that `proc/kallsyms` lists.
fn kallsyms_having(host: &HostPaths, options: &[KernelOption]) -> Vec<&'static str> {
    let wanted: Vec<&'static str> = options
        .iter()
        .flat_map(|o| o.evidence.iter())
        .filter_map(|e| match e {
            Evidence::Symbol(s) => Some(*s),
            Evidence::Path(_) => None,
        })
        .collect();
    let Ok(f) = fs::File::open(host.path("proc/kallsyms")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
        // "ffffffff81234567 T name [module]"
        if let Some(name) = line.split_whitespace().nth(2) {
            if let Some(w) = wanted.iter().find(|w| **w == name) {
                if !found.contains(w) {
                    found.push(*w);
                }
            }
        }
    }
    found
}

/// The IOMMU as the running kernel set it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuFacts {
    /// IOMMU units (`/sys/class/iommu/*`: `dmar0`, `ivhd0`, `virtio-iommu` …).
    pub units: Vec<String>,
    /// Number of IOMMU groups.
    pub groups: usize,
    /// The default domain type of the first group (`DMA`, `DMA-FQ`,
    /// `identity`).
    pub default_domain: Option<String>,
    /// `vfio.enable_unsafe_noiommu_mode` is on.
    pub noiommu: bool,
    /// The kernel command line's IOMMU words (`intel_iommu=on`, `iommu=pt` …).
    pub cmdline: Vec<String>,
}

impl IommuFacts {
    /// Reads them.
    pub fn read(host: &HostPaths) -> IommuFacts {
        let groups = host.list("sys/kernel/iommu_groups");
        let mut numbered: Vec<u32> = groups.iter().filter_map(|g| g.parse().ok()).collect();
        numbered.sort();
        let default_domain = numbered
            .first()
            .and_then(|g| host.read(&format!("sys/kernel/iommu_groups/{g}/type")));
        let cmdline = host
            .read("proc/cmdline")
            .unwrap_or_default()
            .split_whitespace()
            .filter(|w| w.contains("iommu"))
            .map(str::to_string)
            .collect();
        IommuFacts {
            units: host.list("sys/class/iommu"),
            groups: numbered.len(),
            default_domain,
            noiommu: host
                .read("sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
                .is_some_and(|v| v == "Y" || v == "1"),
            cmdline,
        }
    }

    /// Whether an IOMMU translates DMA (units, or at least groups that are not
    /// the noiommu fakes).
    pub fn present(&self) -> bool {
        !self.units.is_empty()
    }
}

/// Whether a vfio driver can export a BAR range as a dma-buf in Linux 7.2:
/// vfio-pci itself and nvgrace-gpu do; the other variant drivers (mlx5, hisi
/// acc, pds, virtio, qat, xe …) do not implement the feature.
pub fn driver_exports_dma_buf(driver: &str) -> bool {
    driver == "vfio-pci" || driver.starts_with("nvgrace-gpu") || driver.starts_with("nvgrace_gpu")
}

/// Drivers whose binding does not keep VFIO from opening another member of
/// the IOMMU group (they leave DMA to the owner: `driver_managed_dma`).
pub const GROUP_FRIENDLY_DRIVERS: &[&str] = &["pci-stub", "pcieport"];

/// The members of `bdf`'s IOMMU group other than itself that keep VFIO from
/// opening it: bound to a driver that is neither a vfio driver nor one of
/// [`GROUP_FRIENDLY_DRIVERS`]. Each with its driver.
///
/// # Errors
///
/// As [`Sysfs::device`] for `bdf` and each member.
pub fn group_blockers(sys: &Sysfs, bdf: Bdf) -> Result<Vec<(Bdf, String)>> {
    let Some(group) = sys.device(bdf)?.iommu_group else {
        return Ok(Vec::new());
    };
    let dir = sys
        .root()
        .join(format!("kernel/iommu_groups/{group}/devices"));
    let mut members: Vec<Bdf> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    members.sort();
    let mut out = Vec::new();
    for m in members.into_iter().filter(|m| *m != bdf) {
        let d = sys.device(m)?;
        if let Some(driver) = d.driver {
            if !driver.contains("vfio") && !GROUP_FRIENDLY_DRIVERS.contains(&driver.as_str()) {
                out.push((m, driver));
            }
        }
    }
    Ok(out)
}

/// Where [`KernelConfig::find`] looks, for messages.
pub fn config_search_paths(release: &str) -> String {
    format!("/proc/config.gz, /boot/config-{release}, /lib/modules/{release}/config")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::fixture::TempTree;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn releases_parse_and_compare() {
        let r = KernelRelease::parse("7.2.13+deb14-amd64\n").unwrap();
        assert_eq!((r.major, r.minor), (7, 2));
        assert!(r.at_least(MIN_RELEASE));
        assert!(!KernelRelease::parse("6.18.44-fc")
            .unwrap()
            .at_least(MIN_RELEASE));
        assert!(KernelRelease::parse("6.19").unwrap().at_least(MIN_RELEASE));
        assert_eq!(KernelRelease::parse("garbage"), None);
    }

    #[test]
    fn config_gz_wins_then_boot_config() {
        let t = TempTree::new("kconfig");
        let host = HostPaths::under(&t.0);
        write(&t.0, "proc/sys/kernel/osrelease", "7.2.13-test\n");
        write(
            &t.0,
            "boot/config-7.2.13-test",
            "CONFIG_IOMMUFD=y\n# CONFIG_UDMABUF is not set\nCONFIG_VFIO_PCI=m\n",
        );
        let facts = KernelFacts::read(&host).unwrap();
        let opt = |n: &str| *KERNEL_OPTIONS.iter().find(|o| o.name == n).unwrap();
        assert!(facts.option(&host, &opt("CONFIG_IOMMUFD")).present());
        assert!(!facts.option(&host, &opt("CONFIG_UDMABUF")).present());
        let vfio = facts.option(&host, &opt("CONFIG_VFIO_PCI"));
        assert!(vfio.source().starts_with("=m in "), "{}", vfio.source());

        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(b"CONFIG_UDMABUF=y\n").unwrap();
        fs::write(t.0.join("proc/config.gz"), gz.finish().unwrap()).unwrap();
        let facts = KernelFacts::read(&host).unwrap();
        assert!(facts.option(&host, &opt("CONFIG_UDMABUF")).present());
        assert!(!facts.option(&host, &opt("CONFIG_IOMMUFD")).present());
        fs::write(t.0.join("proc/config.gz"), b"not gzip").unwrap();
        assert!(matches!(
            KernelFacts::read(&host),
            Err(HostError::Sysfs { .. })
        ));
    }

    #[test]
    fn without_a_config_the_running_kernel_is_the_evidence() {
        let t = TempTree::new("kevidence");
        let host = HostPaths::under(&t.0);
        write(&t.0, "proc/sys/kernel/osrelease", "7.2.13+deb14-amd64\n");
        write(
            &t.0,
            "proc/kallsyms",
            "ffffffff81000000 T dma_buf_export\nffffffffc0000000 t vfio_pci_core_feature_dma_buf\t[vfio_pci_core]\n",
        );
        write(&t.0, "dev/udmabuf", "");
        let facts = KernelFacts::read(&host).unwrap();
        assert!(facts.config.is_none());
        let state = |n: &str| {
            let o = KERNEL_OPTIONS.iter().find(|o| o.name == n).unwrap();
            facts.option(&host, o)
        };
        assert!(state("CONFIG_DMA_SHARED_BUFFER").present());
        assert!(state("CONFIG_VFIO_PCI_DMABUF").present());
        assert!(state("CONFIG_UDMABUF").present());
        let iommufd = state("CONFIG_IOMMUFD");
        assert!(!iommufd.present());
        assert!(
            iommufd.source().contains("/dev/iommu"),
            "{}",
            iommufd.source()
        );
    }

    #[test]
    fn iommu_facts_and_group_blockers() {
        let t = TempTree::new("kiommu");
        let host = HostPaths::under(&t.0);
        write(
            &t.0,
            "proc/cmdline",
            "console=ttyS0 intel_iommu=on iommu=pt quiet\n",
        );
        write(&t.0, "sys/kernel/iommu_groups/3/type", "identity\n");
        write(&t.0, "sys/kernel/iommu_groups/12/type", "DMA\n");
        fs::create_dir_all(t.0.join("sys/class/iommu/dmar0")).unwrap();
        let f = IommuFacts::read(&host);
        assert!(f.present());
        assert_eq!(f.groups, 2);
        assert_eq!(f.default_domain.as_deref(), Some("identity"));
        assert_eq!(f.cmdline, ["intel_iommu=on", "iommu=pt"]);
        assert!(!f.noiommu);

        // Group 3: the device (vfio-pci), a bridge (pcieport), a NIC (e1000e).
        let sys = host.sysfs();
        for (bdf, driver) in [
            ("0000:00:10.0", "vfio-pci"),
            ("0000:00:1c.0", "pcieport"),
            ("0000:00:19.0", "e1000e"),
        ] {
            let dir = sys.device_path(bdf.parse().unwrap());
            write(&dir, "vendor", "0x8086");
            write(&dir, "device", "0x1234");
            write(&dir, "class", "0x020000");
            write(&dir, "resource", "");
            symlink(
                format!("../../../bus/pci/drivers/{driver}"),
                dir.join("driver"),
            )
            .unwrap();
            symlink("../../../kernel/iommu_groups/3", dir.join("iommu_group")).unwrap();
            let member = t.0.join("sys/kernel/iommu_groups/3/devices").join(bdf);
            fs::create_dir_all(member.parent().unwrap()).unwrap();
            symlink(&dir, member).unwrap();
        }
        let blockers = group_blockers(&sys, "00:10.0".parse().unwrap()).unwrap();
        assert_eq!(
            blockers,
            [("00:19.0".parse().unwrap(), "e1000e".to_string())]
        );
    }

    #[test]
    fn only_vfio_pci_and_nvgrace_export() {
        assert!(driver_exports_dma_buf("vfio-pci"));
        assert!(driver_exports_dma_buf("nvgrace-gpu-vfio-pci"));
        for d in [
            "mlx5_vfio_pci",
            "hisi-acc-vfio-pci",
            "pds-vfio-pci",
            "virtio-vfio-pci",
        ] {
            assert!(!driver_exports_dma_buf(d), "{d}");
        }
    }
}
