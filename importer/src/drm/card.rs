//! A DRM primary node: opened by path, or found by the GPU's PCI BDF (or its driver)
//! in sysfs — never by card number, which depends on probe order (vgem can take
//! card0).

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};

use drm::Device as _;
use peerdma_host::Bdf;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::error::{Error, Result};
use super::gem::Gem;

/// Which card to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardSpec {
    /// A device node, `/dev/dri/card1`.
    Path(PathBuf),
    /// The PCI function of the GPU.
    Pci(Bdf),
    /// A card whose DRM driver has this name (`virtio_gpu`, `vgem`, `amdgpu`).
    Driver(String),
    /// The first card (in sysfs name order) that is a PCI device: a GPU, not vgem.
    AnyPci,
}

impl FromStr for CardSpec {
    type Err = std::convert::Infallible;

    /// A BDF (`0000:00:12.0`, `00:12.0`) becomes [`CardSpec::Pci`], a string with a
    /// `/` a [`CardSpec::Path`], anything else a [`CardSpec::Driver`] name.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if let Ok(bdf) = s.parse::<Bdf>() {
            return Ok(CardSpec::Pci(bdf));
        }
        if s.contains('/') {
            return Ok(CardSpec::Path(PathBuf::from(s)));
        }
        Ok(CardSpec::Driver(s.to_string()))
    }
}

impl fmt::Display for CardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CardSpec::Path(p) => write!(f, "{}", p.display()),
            CardSpec::Pci(b) => write!(f, "the DRM card of PCI device {b}"),
            CardSpec::Driver(d) => write!(f, "the DRM card of driver {d}"),
            CardSpec::AnyPci => f.write_str("a DRM card of a PCI device"),
        }
    }
}

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    path: PathBuf,
    driver: String,
    bdf: Option<Bdf>,
    /// The live imports by GEM handle: the kernel answers a second PRIME import of the
    /// same dma-buf with the same handle (one GEM_CLOSE frees it), so they share a Gem.
    imports: Mutex<HashMap<u32, Weak<Gem>>>,
}

/// An open DRM primary node. Cheap to clone (the fd is shared); [`Gem`](super::Gem)s,
/// framebuffers and scanouts keep a clone, so the node outlives them.
#[derive(Clone, Debug)]
pub struct Card(Arc<Inner>);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

impl drm::Device for Card {}
impl drm::control::Device for Card {}

/// A borrowed node, for the ioctls made before a [`Card`] exists.
struct Borrowed<'a>(BorrowedFd<'a>);

impl AsFd for Borrowed<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0
    }
}

impl drm::Device for Borrowed<'_> {}

/// `DRM_PRIME_CAP_IMPORT` in `DRM_CAP_PRIME`'s value.
const PRIME_CAP_IMPORT: u64 = 1;

/// The sysfs root for DRM classes (a parameter for tests).
const SYS_CLASS_DRM: &str = "/sys/class/drm";

impl Card {
    /// Opens the card `spec` names.
    ///
    /// # Errors
    ///
    /// [`Error::NoCard`] when no card matches a BDF or driver (the cards that exist are
    /// named), [`Error::Open`] when the node cannot be opened, [`Error::Ioctl`] when
    /// `DRM_IOCTL_VERSION` fails.
    pub fn open(spec: &CardSpec) -> Result<Card> {
        let path = resolve(Path::new(SYS_CLASS_DRM), spec)?;
        Card::open_path(&path)
    }

    /// Opens a device node.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_path(path: &Path) -> Result<Card> {
        let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(
            |errno| Error::Open {
                path: path.to_path_buf(),
                errno,
                fix: match errno {
                    Errno::NOENT => "list the cards with `ls -l /sys/class/drm/`".into(),
                    Errno::ACCESS | Errno::PERM => {
                        "run as root or as a member of the `video` group".into()
                    }
                    _ => "check that the DRM driver is loaded".into(),
                },
            },
        )?;
        let driver = Borrowed(fd.as_fd())
            .get_driver()
            .map_err(|e| Error::Ioctl {
                card: path.display().to_string(),
                op: "DRM_IOCTL_VERSION",
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })?
            .name()
            .to_string_lossy()
            .into_owned();
        Ok(Card(Arc::new(Inner {
            fd,
            path: path.to_path_buf(),
            driver,
            bdf: pci_of_node(Path::new(SYS_CLASS_DRM), path),
            imports: Mutex::new(HashMap::new()),
        })))
    }

    /// The device node.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The DRM driver's name (`DRM_IOCTL_VERSION`): `virtio_gpu`, `amdgpu`, `vgem`...
    pub fn driver(&self) -> &str {
        &self.0.driver
    }

    /// The GPU's PCI function, when the card is a PCI device (vgem is not).
    pub fn bdf(&self) -> Option<Bdf> {
        self.0.bdf
    }

    /// Whether the driver can import dma-bufs at all (`DRM_CAP_PRIME` has
    /// `DRM_PRIME_CAP_IMPORT`). Whether it can import a *peer BAR* is another matter:
    /// see [`peerdma_host::importers`].
    ///
    /// # Errors
    ///
    /// [`Error::Ioctl`] when `DRM_IOCTL_GET_CAP` fails.
    pub fn can_prime_import(&self) -> Result<bool> {
        let v = self
            .get_driver_capability(drm::DriverCapability::Prime)
            .map_err(|e| self.ioctl_error("DRM_IOCTL_GET_CAP(DRM_CAP_PRIME)", &e))?;
        Ok(v & PRIME_CAP_IMPORT != 0)
    }

    /// `card0 (virtio_gpu, 0000:00:12.0)`, for messages.
    pub fn describe(&self) -> String {
        match self.bdf() {
            Some(b) => format!("{} ({}, {b})", self.path().display(), self.driver()),
            None => format!("{} ({})", self.path().display(), self.driver()),
        }
    }

    /// The live imports, keyed by GEM handle.
    pub(crate) fn imports(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Weak<Gem>>> {
        self.0.imports.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ioctl_error(&self, op: &'static str, e: &std::io::Error) -> Error {
        let errno = Errno::from_io_error(e).unwrap_or(Errno::IO);
        if errno == Errno::ACCESS {
            // Only the DRM master may set modes; name who else has the card open.
            let mut holders = peerdma_host::holders::holders(&[self.path().to_owned()]);
            let me = std::process::id();
            holders.0.retain(|h| h.pid != me);
            return Error::NotMaster {
                card: self.describe(),
                op,
                holders: holders.to_string(),
            };
        }
        Error::Ioctl {
            card: self.describe(),
            op,
            errno,
        }
    }
}

/// One card as sysfs lists it.
#[derive(Clone, Debug)]
struct Listed {
    name: String,
    bdf: Option<Bdf>,
    driver: Option<String>,
}

/// The primary nodes (`cardN`) under `class` with their PCI function and kernel
/// driver (the `device/driver` link; vgem's is `vgem`, virtio-gpu's `virtio_gpu`).
fn list_cards(class: &Path) -> Vec<Listed> {
    let Ok(rd) = std::fs::read_dir(class) else {
        return Vec::new();
    };
    let mut cards: Vec<Listed> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("card")?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None; // connectors: card0-Virtual-1
            }
            let dev = e.path().join("device");
            Some(Listed {
                bdf: pci_bdf_of(&dev),
                driver: driver_of(&dev),
                name,
            })
        })
        .collect();
    cards.sort_by(|a, b| a.name.cmp(&b.name));
    cards
}

/// The PCI function behind a `device` link: its own name, or for a virtio device
/// (`virtio3`) its parent's.
fn pci_bdf_of(dev: &Path) -> Option<Bdf> {
    let real = std::fs::canonicalize(dev).ok()?;
    real.ancestors()
        .filter_map(|p| p.file_name()?.to_str()?.parse::<Bdf>().ok())
        .next()
}

/// The DRM driver bound to a card's device: for a virtio device, the virtio
/// driver (`virtio_gpu`).
fn driver_of(dev: &Path) -> Option<String> {
    let link = std::fs::read_link(dev.join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The DRM driver name of a node, when it opens.
fn drm_name(node: &Path) -> Option<String> {
    let fd = rustix::fs::open(node, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let v = Borrowed(fd.as_fd()).get_driver().ok()?;
    Some(v.name().to_string_lossy().into_owned())
}

fn pci_of_node(class: &Path, node: &Path) -> Option<Bdf> {
    let name = std::fs::canonicalize(node).ok()?;
    let name = name.file_name()?.to_str()?;
    pci_bdf_of(&class.join(name).join("device"))
}

fn listing(cards: &[Listed]) -> String {
    if cards.is_empty() {
        return "none (is a DRM driver loaded?)".into();
    }
    cards
        .iter()
        .map(|c| {
            format!(
                "{} ({}{})",
                c.name,
                c.driver.as_deref().unwrap_or("no driver"),
                c.bdf.map(|b| format!(", {b}")).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The node `spec` names, found under `class` (`/sys/class/drm`).
fn resolve(class: &Path, spec: &CardSpec) -> Result<PathBuf> {
    let cards = list_cards(class);
    let found = match spec {
        CardSpec::Path(p) => return Ok(p.clone()),
        CardSpec::Pci(bdf) => cards.iter().find(|c| c.bdf == Some(*bdf)),
        CardSpec::AnyPci => cards.iter().find(|c| c.bdf.is_some()),
        CardSpec::Driver(d) => {
            // The sysfs driver link names the bus driver (vgem's is a faux device's);
            // the DRM driver's own name comes from DRM_IOCTL_VERSION.
            let want = d.replace('-', "_");
            cards.iter().find(|c| {
                c.driver.as_deref().map(|x| x.replace('-', "_")).as_deref() == Some(&want)
                    || drm_name(&Path::new("/dev/dri").join(&c.name)).as_deref() == Some(&want)
            })
        }
    };
    match found {
        Some(c) => Ok(PathBuf::from("/dev/dri").join(&c.name)),
        None => Err(Error::NoCard {
            wanted: spec.to_string(),
            cards: listing(&cards),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A /sys tree: vgem as card0 (a platform device), virtio-gpu as card1 under a
    /// PCI function.
    fn fixture() -> tempdir::Dir {
        let t = tempdir::Dir::new();
        let root = t.path();
        let pci = root.join("devices/pci0000:00/0000:00:12.0");
        let virtio = pci.join("virtio4");
        std::fs::create_dir_all(virtio.join("drm/card1")).unwrap();
        std::fs::create_dir_all(root.join("bus/virtio/drivers/virtio_gpu")).unwrap();
        symlink(
            root.join("bus/virtio/drivers/virtio_gpu"),
            virtio.join("driver"),
        )
        .unwrap();
        let vgem = root.join("devices/platform/vgem");
        std::fs::create_dir_all(vgem.join("drm/card0")).unwrap();
        std::fs::create_dir_all(root.join("bus/platform/drivers/vgem")).unwrap();
        symlink(root.join("bus/platform/drivers/vgem"), vgem.join("driver")).unwrap();
        let class = root.join("class/drm");
        std::fs::create_dir_all(&class).unwrap();
        symlink(virtio.join("drm/card1"), class.join("card1")).unwrap();
        symlink(vgem.join("drm/card0"), class.join("card0")).unwrap();
        symlink(virtio.join("drm/card1"), class.join("card1-Virtual-1")).unwrap();
        symlink(&vgem, vgem.join("drm/card0/device")).unwrap();
        symlink(&virtio, virtio.join("drm/card1/device")).unwrap();
        t
    }

    #[test]
    fn cards_are_found_by_bdf_and_driver_not_number() {
        let t = fixture();
        let class = t.path().join("class/drm");
        let cards = list_cards(&class);
        assert_eq!(cards.len(), 2, "{cards:?}");
        let bdf: Bdf = "0000:00:12.0".parse().unwrap();
        assert_eq!(
            resolve(&class, &CardSpec::Pci(bdf)).unwrap(),
            PathBuf::from("/dev/dri/card1")
        );
        assert_eq!(
            resolve(&class, &"virtio-gpu".parse().unwrap()).unwrap(),
            PathBuf::from("/dev/dri/card1")
        );
        assert_eq!(
            resolve(&class, &CardSpec::Driver("vgem".into())).unwrap(),
            PathBuf::from("/dev/dri/card0")
        );
        assert_eq!(
            resolve(&class, &CardSpec::AnyPci).unwrap(),
            PathBuf::from("/dev/dri/card1")
        );
        let e = resolve(&class, &CardSpec::Pci("0000:00:13.0".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0000:00:13.0") && e.contains("card1 (virtio_gpu, 0000:00:12.0)"),
            "{e}"
        );
    }

    #[test]
    fn specs_parse() {
        assert!(matches!(
            "00:12.0".parse::<CardSpec>().unwrap(),
            CardSpec::Pci(_)
        ));
        assert!(matches!(
            "/dev/dri/card0".parse::<CardSpec>().unwrap(),
            CardSpec::Path(_)
        ));
        assert!(matches!(
            "amdgpu".parse::<CardSpec>().unwrap(),
            CardSpec::Driver(_)
        ));
    }

    /// A temporary directory removed on drop (no extra dependency).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "peerdma-drm-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
