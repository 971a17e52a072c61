//! What can be known about a held BAR dma-buf from outside its exporter: the device's
//! registers (memory decode, power state: what a revoke follows) and the kernel's own
//! view, asked of the kernel by mapping the buffer into a private iommufd IOAS, which
//! vfio-pci refuses with ENODEV while the buffer is revoked (Linux 7.2,
//! `vfio_pci_dma_buf_attach` and `vfio_pci_dma_buf_iommufd_map` check `revoked` first).
//!
//! The two can differ: a revoke happens only through VFIO (its config region, its reset
//! ioctls, low-power entry, close); decode turned off through sysfs or a reset started
//! through sysfs changes the device but not the buffer (docs/importers.md). Such a reset
//! does show in one place: config-space reads block while it runs ([`read_registers`]).

use std::fmt;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use peerdma_exporter::{DmaBuf, RevokeState};

use peerdma_importer::iommufd::{Error as ImportError, Ioas, Iommufd, Iova, Prot};

/// The kernel's view of a dma-buf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelView {
    /// The exporter admits importers: not revoked.
    Live,
    /// The exporter refuses importers with ENODEV: revoked.
    Revoked,
    /// The kernel could not be asked (no iommufd, or another error), and why.
    Unknown(String),
}

impl fmt::Display for KernelView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelView::Live => f.write_str("live"),
            KernelView::Revoked => f.write_str("revoked"),
            KernelView::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// Asks the kernel whether `buf` (a vfio-pci dma-buf of at least `page` bytes) is
/// revoked, by mapping its first page into a fresh IOAS and unmapping it at once.
/// A multi-range buffer is refused after the revoke check (EOPNOTSUPP), so that
/// answer means live too.
pub fn kernel_view(buf: BorrowedFd<'_>, page: u64) -> KernelView {
    let iommufd = match Iommufd::open() {
        Ok(i) => i,
        Err(e) => return KernelView::Unknown(e.to_string()),
    };
    let ioas = match Ioas::alloc(&iommufd) {
        Ok(i) => i,
        Err(e) => return KernelView::Unknown(e.to_string()),
    };
    match ioas.map_dmabuf(buf, 0, page, Iova::Guarded, Prot::Read) {
        Ok(mapping) => {
            drop(mapping);
            KernelView::Live
        }
        Err(ImportError::DmaBufRevoked { .. }) => KernelView::Revoked,
        Err(ImportError::DmaBufMultiRange { .. }) => KernelView::Live,
        Err(e) => KernelView::Unknown(e.to_string()),
    }
}

/// How long a config-space read must sleep in the kernel before it counts as blocked:
/// a read normally takes microseconds; the PCI core's shortest reset keeps config
/// access locked for two 10 ms D3hot delays (`pci_pm_reset`), an FLR for at least
/// 100 ms (`pcie_flr`).
pub const CONFIG_BLOCKED: Duration = Duration::from_millis(15);

/// The device's registers, read once, and whether that read was held up.
#[derive(Debug)]
pub struct RegisterRead {
    /// The revoke state the registers show.
    pub state: peerdma_exporter::Result<RevokeState>,
    /// How long the read slept in the kernel, when it slept at least
    /// [`CONFIG_BLOCKED`]: the PCI core had locked the device's config space
    /// (`pci_cfg_access_lock`, taken by `pci_dev_lock` for a reset: user config
    /// reads wait in `pci_wait_cfg`, drivers/pci/access.c), so a reset ran.
    pub blocked: Option<Duration>,
}

/// Reads `buf`'s device registers ([`DmaBuf::state`]) and times the read. A read that
/// took [`CONFIG_BLOCKED`] or longer *and* slept (this thread's voluntary context
/// switches went up: it waited, it was not merely preempted) was blocked by a config
/// lock. This is how a reset started outside VFIO (`/sys/bus/pci/devices/BDF/reset`, a
/// bus reset by another driver) shows: the PCI core turns decode off for the reset and
/// restores it before it lets config reads through, so the registers alone never show
/// it, and vfio-pci does not revoke for it (no reset handlers in 7.2).
pub fn read_registers(buf: &DmaBuf) -> RegisterRead {
    let switches = || {
        getrusage(UsageWho::RUSAGE_THREAD)
            .map(|u| u.voluntary_context_switches())
            .ok()
    };
    let before = switches();
    let start = Instant::now();
    let state = buf.state();
    let took = start.elapsed();
    let slept = matches!((before, switches()), (Some(b), Some(a)) if a > b);
    RegisterRead {
        state,
        blocked: (took >= CONFIG_BLOCKED && slept).then_some(took),
    }
}
