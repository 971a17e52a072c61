//! Which Linux kernel the testbed boots, and getting it onto this machine.
//!
//! - [`KernelChoice::Reference`]: the project's own 7.2 build with everything built in (vIOMMU,
//!   IOMMUFD, VFIO cdev + container, P2PDMA, 9p, ...), from `PEERDMA_REFERENCE_KERNEL`, the
//!   shared prebuilt, the cache, or built here from Debian's `linux-source-7.2` with
//!   `tests/kernel/peerdma.config` (about 15 minutes on 2 cores, done once).
//! - [`KernelChoice::Stock`]: Debian sid's own kernel packages, unmodified: a modular kernel
//!   without IOMMUFD that boots through the 9p-root initramfs of [`crate::initramfs`].
//! - [`KernelChoice::Ahead`]: the reference kernel plus two posted, not-upstream series
//!   (dma-buf mmap/REVOKE/MEMATTR for vfio-pci; io_uring dma-buf I/O for NVMe), from
//!   `PEERDMA_AHEAD_KERNEL`, the shared prebuilt, the cache, or built here like the
//!   reference kernel with `tests/kernel/ahead-7.2.13.diff` applied first.
//! - [`KernelChoice::Path`]: any bzImage (e.g. a developer's tree), booted as is.
//!
//! Progress goes to stderr as lines starting with `testbed:`.
//!
//! One job per file: this one says what a kernel is and which to boot; `image.rs` reads
//! bzImages and configs; `reference.rs` finds or builds the reference and the ahead kernel; `stock.rs`
//! fetches and lays out Debian's stock kernel.

mod image;
mod reference;
mod stock;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::cache;

pub use image::{bzimage_version, config_enables, fragment_options, verify_fragment};
pub use reference::{
    reference_cache_entry, shared_prebuilt, Flavor, ReferenceBuild, AHEAD_DIFF,
    AHEAD_PREBUILT_NAME, FRAGMENT, PREBUILT_NAME, SOURCE_PACKAGE,
};
pub use stock::{parse_depends, StockPackages, FALLBACK_STOCK_ABI, STOCK_METAPACKAGE};

/// Which kernel to boot, as chosen by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The project's own kernel with everything built in.
    Reference,
    /// Debian's stock kernel from sid.
    Stock,
    /// The reference kernel plus the two posted series of `tests/kernel/ahead.md`.
    Ahead,
    /// A bzImage at this path.
    Path(PathBuf),
}

impl FromStr for KernelChoice {
    type Err = anyhow::Error;

    /// `reference`, `stock`, `ahead` (any case), or a path to a bzImage (anything else that is not
    /// empty; it need not exist yet).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "" => bail!("empty kernel choice: use `reference`, `stock`, `ahead` or a bzImage path"),
            r if r.eq_ignore_ascii_case("reference") => Ok(KernelChoice::Reference),
            r if r.eq_ignore_ascii_case("stock") => Ok(KernelChoice::Stock),
            r if r.eq_ignore_ascii_case("ahead") => Ok(KernelChoice::Ahead),
            p => Ok(KernelChoice::Path(PathBuf::from(p))),
        }
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelChoice::Reference => f.write_str("reference"),
            KernelChoice::Stock => f.write_str("stock"),
            KernelChoice::Ahead => f.write_str("ahead"),
            KernelChoice::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What kind of kernel a [`Kernel`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// The project's reference build (everything built in, no initrd).
    Reference,
    /// Debian's stock kernel (modules, booted through the 9p-root initramfs).
    Stock,
    /// The reference build plus the posted series of `tests/kernel/ahead.md` (built in,
    /// no initrd, booted as the reference kernel is).
    Ahead,
    /// A user-supplied bzImage.
    Custom,
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which kind it is.
    pub kind: KernelKind,
    /// The bzImage / vmlinuz to pass to QEMU's `-kernel`.
    pub image: PathBuf,
    /// The initramfs to pass to `-initrd` (stock only); see [`crate::initramfs`] for the
    /// command line it expects.
    pub initrd: Option<PathBuf>,
    /// The kernel release (`uname -r` in the guest), e.g. `7.2.13` or `7.2.13+deb14-amd64`.
    pub version: String,
    /// Stock only: a directory `D` with `D/lib/modules/VERSION/modules.dep`, so that
    /// `modprobe -d D MODULE` works in the guest (whose root is the host's).
    pub modules_root: Option<PathBuf>,
    /// Whether the kernel's config has `CONFIG_IOMMUFD` (built in or as a module).
    pub has_iommufd: bool,
    /// Where it came from, for humans and for test records.
    pub source: String,
}

/// Resolves a choice to a bootable kernel, fetching or building what is missing.
pub fn resolve(choice: &KernelChoice) -> Result<Kernel> {
    match choice {
        KernelChoice::Reference => reference::resolve(Flavor::Reference),
        KernelChoice::Ahead => reference::resolve(Flavor::Ahead),
        KernelChoice::Stock => stock::resolve_stock(),
        KernelChoice::Path(p) => {
            let (version, has_iommufd, config_note) = image::inspect_image(p)?;
            Ok(Kernel {
                kind: KernelKind::Custom,
                image: p.clone(),
                initrd: None,
                version,
                modules_root: None,
                has_iommufd,
                source: format!("user-supplied bzImage {}{config_note}", p.display()),
            })
        }
    }
}

/// The modules the guest init must `modprobe -d <modules_root>` on the stock kernel, in
/// this order, before binding devices. Each was checked to load in a stock 7.2.13 guest.
///
/// Not listed: the 9p root's modules (the initramfs loaded them), and what Debian builds in:
/// the Intel IOMMU, virtio-pci and `udmabuf` (a `bool` option, so it is not even in
/// `modules.builtin` and `modprobe udmabuf` fails). On the reference kernel everything is
/// built in and nothing needs loading.
///
/// Only what binding the devices needs is loaded at boot (each modprobe reads over 9p under
/// TCG, about a second apiece); [`modules_on_demand`] lists what a command may load itself
/// with `modprobe -d "$PEERDMA_MODULES_ROOT" NAME`.
pub fn modules_for_guest() -> &'static [&'static str] {
    &["vfio", "vfio_iommu_type1", "vfio-pci"]
}

/// Modules a stock guest has but does not load at boot: DRM and RDMA importers, veth.
/// Each was checked to load in a stock 7.2.13 guest.
pub fn modules_on_demand() -> &'static [&'static str] {
    &[
        "virtio_gpu",
        "vgem",
        "veth",
        "ib_uverbs",
        "rdma_rxe",
        "rdma_ucm",
    ]
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An exclusive lock on a file in the cache, held until dropped.
#[derive(Debug)]
pub(crate) struct CacheLock(#[allow(dead_code)] File);

pub(crate) fn lock(name: &str) -> Result<CacheLock> {
    use rustix::fs::{flock, FlockOperation};
    let path = cache::subdir("kernels")?.join(format!(".{name}.lock"));
    let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!(
            "testbed: waiting for another testbed process ({} is locked)",
            path.display()
        );
        flock(&f, FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(CacheLock(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses() {
        assert_eq!(
            "reference".parse::<KernelChoice>().unwrap(),
            KernelChoice::Reference
        );
        assert_eq!(
            "Stock".parse::<KernelChoice>().unwrap(),
            KernelChoice::Stock
        );
        assert_eq!(
            "/boot/vmlinuz-x".parse::<KernelChoice>().unwrap(),
            KernelChoice::Path("/boot/vmlinuz-x".into())
        );
        assert_eq!(
            "./reference".parse::<KernelChoice>().unwrap(),
            KernelChoice::Path("./reference".into())
        );
        assert!("".parse::<KernelChoice>().is_err());
        assert_eq!(
            "AHEAD".parse::<KernelChoice>().unwrap(),
            KernelChoice::Ahead
        );
        for s in ["reference", "stock", "ahead", "/x/bzImage"] {
            assert_eq!(s.parse::<KernelChoice>().unwrap().to_string(), s);
        }
    }
}
