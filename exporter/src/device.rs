//! An open vfio-pci device: its fd, what keeps the fd usable (the iommufd, or
//! the group and container), and what VFIO and sysfs say about it.
//!
//! A [`Device`] shares its state with the [`MappedRegion`](crate::MappedRegion)s
//! mapped from it (a mapping keeps the device file open, as the kernel's VMA
//! does) and lends a weak reference to its [`DmaBuf`](crate::DmaBuf)s, which
//! see the device as closed once it is.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use peerdma_uapi::pci::PCI_CFG_SPACE_SIZE;

use crate::bar::Bar;
use crate::error::{Error, Result};
use crate::explain;
use crate::info::{self, DeviceInfo};
use crate::ioctl::{self, VfioIoctl};
use crate::msix::MsixLayout;
use crate::open::{self, AccessPath, OpenOptions, PassedFds, PathFds};
use crate::ranges::BarFacts;
use crate::region::RegionInfo;
use crate::revoke::{Generation, Lifecycle};
use peerdma_host::fdinfo::FdInfo;
use peerdma_host::pci_caps::{self, FlrMethod, PciCap};
use peerdma_host::sysfs::PciDevice;
use peerdma_host::{Bdf, RegionIndex};
use peerdma_uapi::pci::PCI_BASE_ADDRESS_0;

/// Bytes of config space read at open to find capabilities.
pub(crate) const CONFIG_SNAPSHOT_LEN: usize = PCI_CFG_SPACE_SIZE as usize;

/// Where the registers the lifecycle needs live in config space, found once at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigLayout {
    pub(crate) caps: Vec<PciCap>,
    pub(crate) msix: Option<MsixLayout>,
    pub(crate) pmcsr: Option<u16>,
    pub(crate) flr: Option<FlrMethod>,
}

/// State shared by a device, its mappings and (weakly) its dma-bufs.
#[derive(Debug)]
pub(crate) struct DeviceInner {
    // Declared first so it is closed first.
    pub(crate) fd: OwnedFd,
    /// What the access path holds open besides `fd` (iommufd, or group and container).
    pub(crate) path_fds: PathFds,
    pub(crate) bdf: Bdf,
    pub(crate) sys: Option<PciDevice>,
    pub(crate) info: DeviceInfo,
    pub(crate) config_region: RegionInfo,
    pub(crate) layout: ConfigLayout,
    pub(crate) page_size: u64,
    pub(crate) lifecycle: Mutex<Lifecycle>,
    /// The revoke generation, advanced under `lifecycle`'s lock.
    pub(crate) generation: Generation,
    /// What export validation needs about each BAR, read on first use: vfio-pci
    /// fixes a BAR's region info when the device is opened, and sysfs its base.
    pub(crate) bar_facts: [OnceLock<BarFacts>; RegionIndex::NUM_BARS],
}

impl DeviceInner {
    /// The lifecycle bookkeeping, even if a panicking thread poisoned it.
    pub(crate) fn lifecycle(&self) -> MutexGuard<'_, Lifecycle> {
        self.lifecycle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An open vfio-pci device.
///
/// A clone is another handle to the same open device (no new fd): the device
/// file closes, and the kernel revokes its dma-bufs for good, when the last
/// handle and the last [`MappedRegion`](crate::MappedRegion) are gone.
#[derive(Clone, Debug)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl Device {
    /// Opens the device at `bdf` on the running system, picking the access path
    /// automatically.
    ///
    /// # Errors
    ///
    /// As [`Device::open_with`].
    pub fn open(bdf: Bdf) -> Result<Self> {
        Self::open_with(bdf, OpenOptions::default())
    }

    /// Opens the device at `bdf` as `opts` says.
    ///
    /// # Errors
    ///
    /// - From sysfs: [`Error::Host`] (no such device, a sysfs read or parse
    ///   failed), [`Error::NotVfioBound`] (unless a device fd is handed over).
    /// - From the access path: [`Error::NoCdev`], [`Error::NoIommuGroup`],
    ///   [`Error::Open`] (a node could not be opened), [`Error::GroupNotViable`],
    ///   [`Error::IommuTypeUnsupported`], [`Error::Ioctl`] (bind, container and
    ///   group ioctls, with the kernel's errno and a fix).
    /// - [`Error::PassedFdMismatch`] when a handed-over device fd belongs to
    ///   another device.
    /// - From describing the device: [`Error::Ioctl`] (`GET_INFO`,
    ///   `GET_REGION_INFO`), [`Error::CapChain`], [`Error::NotPci`],
    ///   [`Error::ConfigAccess`]/[`Error::ConfigShort`], [`Error::PciCapChain`].
    pub fn open_with(bdf: Bdf, opts: OpenOptions) -> Result<Self> {
        let ready_fd = matches!(
            opts.passed,
            PassedFds::CdevBound { .. }
                | PassedFds::GroupDevice { .. }
                | PassedFds::CdevUnbound { .. }
        );
        let sys = match opts.sysfs.device(bdf) {
            Ok(sys) => Some(sys),
            // A management process may hand over fds to a sandbox without sysfs.
            Err(_) if ready_fd => None,
            Err(e) => return Err(e.into()),
        };
        let (fd, path_fds) = open::open(bdf, sys.as_ref(), opts)?;
        if ready_fd {
            check_passed_fd(bdf, &fd)?;
        }
        Self::from_parts(bdf, fd, path_fds, sys)
    }

    fn from_parts(
        bdf: Bdf,
        fd: OwnedFd,
        path_fds: PathFds,
        sys: Option<PciDevice>,
    ) -> Result<Self> {
        let info = info::device_info(bdf, fd.as_fd())?;
        if !info.is_pci() {
            return Err(Error::NotPci {
                bdf,
                flags: info.flags,
            });
        }
        let config_region = info::region_info(bdf, fd.as_fd(), RegionIndex::CONFIG)?;
        let page_size = rustix::param::page_size() as u64;
        let mut inner = DeviceInner {
            fd,
            path_fds,
            bdf,
            sys,
            info,
            config_region,
            layout: ConfigLayout {
                caps: Vec::new(),
                msix: None,
                pmcsr: None,
                flr: None,
            },
            page_size,
            lifecycle: Mutex::new(Lifecycle::default()),
            generation: Generation::default(),
            bar_facts: Default::default(),
        };
        let mut config = vec![0u8; CONFIG_SNAPSHOT_LEN];
        inner.config_read(0, &mut config)?;
        let caps = pci_caps::capabilities(&config).map_err(|e| Error::PciCapChain {
            bdf,
            offset: u16::try_from(e.offset).unwrap_or(u16::MAX),
            reason: e.reason,
        })?;
        inner.layout = ConfigLayout {
            msix: MsixLayout::find(&config, &caps),
            pmcsr: pci_caps::pmcsr_offset(&caps),
            flr: pci_caps::flr_method(&config, &caps),
            caps,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The device's address.
    pub fn bdf(&self) -> Bdf {
        self.inner.bdf
    }

    /// The VFIO device fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// The access path the device was opened through: [`AccessPath::Cdev`] or
    /// [`AccessPath::Group`], never `Auto`.
    pub fn access_path(&self) -> AccessPath {
        self.inner.path_fds.path()
    }

    /// The iommufd the device is bound to (cdev path), for importers that
    /// attach the device to an IOAS.
    pub fn iommufd(&self) -> Option<BorrowedFd<'_>> {
        match &self.inner.path_fds {
            PathFds::Cdev { iommufd, .. } => Some(iommufd.as_fd()),
            PathFds::Group { .. } => None,
        }
    }

    /// The iommufd device id `VFIO_DEVICE_BIND_IOMMUFD` returned (cdev path,
    /// when this library did the bind).
    pub fn devid(&self) -> Option<u32> {
        match &self.inner.path_fds {
            PathFds::Cdev { devid, .. } => *devid,
            PathFds::Group { .. } => None,
        }
    }

    /// Attaches the device (cdev path, bound to an iommufd) to the IOAS or HWPT
    /// `pt_id` of that iommufd with `VFIO_DEVICE_ATTACH_IOMMUFD_PT`, so that its
    /// own DMA goes through that I/O page table. Returns the id of the page table
    /// the kernel attached it to (the IOAS's, or a HWPT it made for it).
    ///
    /// # Errors
    ///
    /// [`Error::Ioctl`] with the kernel's errno: EINVAL when the device fd is
    /// not bound to an iommufd (group path) or `pt_id` is no IOAS/HWPT, ENOENT
    /// when there is no such object, EBUSY when already attached elsewhere.
    pub fn attach_iommufd_pt(&self, pt_id: u32) -> Result<u32> {
        ioctl::device_attach_iommufd_pt(self.fd(), pt_id).map_err(explain::ioctl_err(
            self.bdf(),
            VfioIoctl::DeviceAttachIommufdPt,
        ))
    }

    /// Detaches the device from the page table it is attached to
    /// (`VFIO_DEVICE_DETACH_IOMMUFD_PT`); its DMA is blocked afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Ioctl`] with the kernel's errno (EINVAL when the device fd is
    /// not bound to an iommufd).
    pub fn detach_iommufd_pt(&self) -> Result<()> {
        ioctl::device_detach_iommufd_pt(self.fd()).map_err(explain::ioctl_err(
            self.bdf(),
            VfioIoctl::DeviceDetachIommufdPt,
        ))
    }

    /// The container fd (group path), for `VFIO_IOMMU_MAP_DMA`.
    pub fn container(&self) -> Option<BorrowedFd<'_>> {
        match &self.inner.path_fds {
            PathFds::Group { container, .. } => container.as_ref().map(|fd| fd.as_fd()),
            PathFds::Cdev { .. } => None,
        }
    }

    /// The group fd (group path).
    pub fn group(&self) -> Option<BorrowedFd<'_>> {
        match &self.inner.path_fds {
            PathFds::Group { group, .. } => group.as_ref().map(|fd| fd.as_fd()),
            PathFds::Cdev { .. } => None,
        }
    }

    /// What `VFIO_DEVICE_GET_INFO` said.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// What sysfs said at open (absent when handed fds without sysfs).
    pub fn sysfs(&self) -> Option<&PciDevice> {
        self.inner.sys.as_ref()
    }

    /// The kernel's page size, which ranges must be aligned to.
    pub fn page_size(&self) -> u64 {
        self.inner.page_size
    }

    /// The standard PCI capabilities found in config space at open.
    pub fn pci_caps(&self) -> &[PciCap] {
        &self.inner.layout.caps
    }

    /// The MSI-X table/PBA layout, if the device has MSI-X.
    pub fn msix(&self) -> Option<MsixLayout> {
        self.inner.layout.msix
    }

    /// Region info of region `index`.
    ///
    /// # Errors
    ///
    /// [`Error::RegionIndex`] when the device has no such region;
    /// [`Error::Ioctl`] when `VFIO_DEVICE_GET_REGION_INFO` fails;
    /// [`Error::CapChain`] when its capability chain is malformed.
    pub fn region_info(&self, index: impl Into<RegionIndex>) -> Result<RegionInfo> {
        let index = index.into();
        let num_regions = self.inner.info.num_regions;
        if index.get() >= num_regions {
            return Err(Error::RegionIndex {
                bdf: self.bdf(),
                region: index,
                num_regions,
            });
        }
        info::region_info(self.bdf(), self.fd(), index)
    }

    /// BAR `index` (0..=5): region info joined with sysfs.
    ///
    /// # Errors
    ///
    /// [`Error::RegionNotBar`] when `index` is not BAR0..BAR5; what
    /// [`Device::region_info`] returns; [`Error::ConfigAccess`] when the BAR
    /// register must be read from config space (no sysfs) and cannot be.
    pub fn bar(&self, index: impl Into<RegionIndex>) -> Result<Bar> {
        let index = index.into();
        if !index.is_bar() {
            return Err(Error::RegionNotBar {
                bdf: self.bdf(),
                region: index,
            });
        }
        let region = self.region_info(index)?;
        let resource = self
            .inner
            .sys
            .as_ref()
            .and_then(|s| s.resource(index.get()));
        let config_bar = if resource.is_none() {
            Some(self.config_read_u32(PCI_BASE_ADDRESS_0 + 4 * index.get() as u16)?)
        } else {
            None
        };
        Ok(Bar::new(region, resource, config_bar))
    }

    /// All six BARs, absent ones included.
    ///
    /// # Errors
    ///
    /// The first error of [`Device::bar`].
    pub fn bars(&self) -> Result<Vec<Bar>> {
        RegionIndex::bars().map(|i| self.bar(i)).collect()
    }

    /// The access path opening `bdf` with `opts` would take ([`AccessPath::Cdev`] or
    /// [`AccessPath::Group`], never `Auto`), without opening anything.
    ///
    /// # Errors
    ///
    /// [`Error::Host`] (no such device, a sysfs read or parse failed) or
    /// [`Error::NotVfioBound`] from sysfs, and [`Error::NoCdev`] or
    /// [`Error::NoIommuGroup`] when no access path applies.
    pub fn access_path_for(bdf: Bdf, opts: &OpenOptions) -> Result<AccessPath> {
        let sys = opts.sysfs.device(bdf)?;
        Ok(open::path_nodes(&sys, opts.access, &opts.dev_dir)?.path())
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

/// Refuses a handed-over device fd whose fdinfo names another device
/// (`vfio-device-syspath`, printed for every VFIO device file).
fn check_passed_fd(bdf: Bdf, fd: &OwnedFd) -> Result<()> {
    let Ok(info) = FdInfo::of(fd) else {
        // No /proc: nothing to check against.
        return Ok(());
    };
    let actual = info
        .vfio_device_syspath
        .as_deref()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<Bdf>().ok());
    match actual {
        Some(actual) if actual != bdf => Err(Error::PassedFdMismatch { bdf, actual }),
        _ => Ok(()),
    }
}

// A device is shared across threads by reference; its fds and bookkeeping allow it.
const _: () = {
    fn assert_send_sync<T: Send + Sync>() {}
    let _ = assert_send_sync::<Device>;
};
