//! Opening a device through one of the two VFIO access paths.
//!
//! - cdev + iommufd: open `/dev/iommu` and `/dev/vfio/devices/vfioN` (named in
//!   sysfs `vfio-dev/`), then `VFIO_DEVICE_BIND_IOMMUFD`. PathFds is what grants
//!   access to the device fd (`vfio_df_ioctl_bind_iommufd` sets
//!   `access_granted`); attaching to an IOAS is not needed to export a dma-buf,
//!   only for the device's own DMA, which the importer sets up.
//! - group/container: open `/dev/vfio/vfio` and `/dev/vfio/GROUP` (or
//!   `noiommu-GROUP`), `VFIO_GROUP_SET_CONTAINER`, `VFIO_SET_IOMMU` (type1 v2,
//!   or the noiommu type), then `VFIO_GROUP_GET_DEVICE_FD` with the BDF.
//!
//! Without handed-over fds, every device a process opens through its cdev is bound
//! to the process's one iommufd, and the devices of one IOMMU group opened through
//! the group path share its group and container fds (`shared.rs`): the kernel binds
//! a group to one iommufd and opens a group node once.
//!
//! A management process may hand over fds it opened ([`PassedFds`]); the
//! library then completes only the missing steps.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerdma_uapi::vfio::{
    VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION, VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_NOIOMMU_IOMMU,
};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::explain::{self, Node};
use crate::ioctl::{self, VfioIoctl};
use peerdma_host::sysfs::{PciDevice, Sysfs};
use peerdma_host::Bdf;

/// A VFIO access path: how a process reaches a vfio-pci device's fd (kernel
/// `Documentation/driver-api/vfio.rst`, "VFIO Usage Example" for the group path and
/// "VFIO Device cdev" for the cdev path). In this library "path" means this and
/// nothing else.
///
/// As a request ([`OpenOptions::access`]) it may be [`Auto`](AccessPath::Auto); as
/// the answer of [`Device::access_path`](crate::Device::access_path) it is never
/// `Auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessPath {
    /// The cdev path when `/dev/iommu` and the device's vfio cdev exist, else
    /// the group path.
    #[default]
    Auto,
    /// `/dev/vfio/devices/vfioN` bound to an iommufd.
    Cdev,
    /// `/dev/vfio/GROUP` in a `/dev/vfio/vfio` container.
    Group,
}

/// File descriptors a management process opened and handed over.
#[derive(Debug, Default)]
pub enum PassedFds {
    /// Nothing: the library opens every node itself.
    #[default]
    None,
    /// An iommufd: the library opens the device's cdev and binds it to this.
    Iommufd(OwnedFd),
    /// A cdev device fd not yet bound, and the iommufd to bind it to.
    CdevUnbound {
        /// The `/dev/vfio/devices/vfioN` fd.
        device: OwnedFd,
        /// The iommufd.
        iommufd: OwnedFd,
    },
    /// A cdev device fd the caller already bound to `iommufd`.
    CdevBound {
        /// The bound device fd.
        device: OwnedFd,
        /// The iommufd it is bound to (kept open, lent to importers).
        iommufd: OwnedFd,
    },
    /// A container fd: the library opens the group and attaches it.
    Container(OwnedFd),
    /// A group fd and a container fd; the library attaches the group if it is
    /// not attached yet and sets the IOMMU if the container has none.
    Group {
        /// The `/dev/vfio/GROUP` fd.
        group: OwnedFd,
        /// The container fd.
        container: OwnedFd,
    },
    /// A device fd from `VFIO_GROUP_GET_DEVICE_FD`, with the group and
    /// container it came from when the caller has them (kept open).
    GroupDevice {
        /// The device fd.
        device: OwnedFd,
        /// Its group fd.
        group: Option<OwnedFd>,
        /// Its container fd.
        container: Option<OwnedFd>,
    },
}

/// How to open a device.
#[derive(Debug)]
pub struct OpenOptions {
    /// Access path.
    pub access: AccessPath,
    /// Where sysfs is.
    pub sysfs: Sysfs,
    /// Where the device nodes are (`/dev`).
    pub dev_dir: PathBuf,
    /// Fds handed over by a management process.
    pub passed: PassedFds,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            access: AccessPath::Auto,
            sysfs: Sysfs::system(),
            dev_dir: PathBuf::from("/dev"),
            passed: PassedFds::None,
        }
    }
}

/// The fds an opened device's access path holds besides the device fd, which keep
/// the device fd usable: the iommufd it is bound to, or its group and container.
#[derive(Debug)]
pub(crate) enum PathFds {
    /// cdev: the iommufd the device is bound to, and the device id (unknown
    /// when the caller bound it).
    Cdev {
        iommufd: Arc<OwnedFd>,
        devid: Option<u32>,
    },
    /// group: the group and container fds (absent when the caller kept them).
    Group {
        group: Option<Arc<OwnedFd>>,
        container: Option<Arc<OwnedFd>>,
    },
}

/// The device nodes an access path will open, decided before opening any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathNodes {
    /// The cdev path.
    Cdev {
        /// `/dev/iommu`.
        iommu: PathBuf,
        /// `/dev/vfio/devices/vfioN`.
        cdev: PathBuf,
    },
    /// The group path.
    Group {
        /// `/dev/vfio/vfio`.
        container: PathBuf,
        /// `/dev/vfio/N` or `/dev/vfio/noiommu-N`.
        group: PathBuf,
        /// IOMMU group number.
        group_id: u32,
        /// Whether it is a noiommu group.
        noiommu: bool,
    },
}

impl PathFds {
    /// The access path (never `Auto`).
    pub(crate) fn path(&self) -> AccessPath {
        match self {
            PathFds::Cdev { .. } => AccessPath::Cdev,
            PathFds::Group { .. } => AccessPath::Group,
        }
    }
}

impl PathNodes {
    /// The access path (never `Auto`).
    pub(crate) fn path(&self) -> AccessPath {
        match self {
            PathNodes::Cdev { .. } => AccessPath::Cdev,
            PathNodes::Group { .. } => AccessPath::Group,
        }
    }
}

/// Decides the access path and its nodes, from the request `access`, sysfs and what
/// exists under `dev_dir`.
pub(crate) fn path_nodes(sys: &PciDevice, access: AccessPath, dev_dir: &Path) -> Result<PathNodes> {
    // No IOMMU group and no no-IOMMU mode: vfio-pci cannot take the device at all, so
    // that comes first (binding it would fail).
    if sys.iommu_group.is_none() && !sys.unsafe_noiommu_mode {
        return Err(Error::NoIommuGroup { bdf: sys.bdf });
    }
    // A bridge (PCI base class 0x06) is not a device VFIO hands to user space: say so
    // rather than advise binding it.
    if !sys.is_vfio_bound() && sys.class >> 16 == 0x06 {
        return Err(Error::Host(peerdma_host::HostError::NotAnEndpoint {
            bdf: sys.bdf,
            kind: match sys.class >> 8 {
                0x0600 => "host bridge",
                0x0604 => "PCI-to-PCI bridge",
                _ => "bridge",
            },
        }));
    }
    if !sys.is_vfio_bound() {
        return Err(Error::NotVfioBound {
            bdf: sys.bdf,
            driver: sys.driver.clone(),
        });
    }
    let use_cdev = match access {
        AccessPath::Cdev => true,
        AccessPath::Group => false,
        AccessPath::Auto => cdev_nodes(sys, dev_dir).is_ok(),
    };
    if use_cdev {
        cdev_nodes(sys, dev_dir)
    } else {
        group_nodes(sys, dev_dir)
    }
}

/// The cdev path's nodes, or why that path is unavailable.
fn cdev_nodes(sys: &PciDevice, dev_dir: &Path) -> Result<PathNodes> {
    let bdf = sys.bdf;
    let no_cdev = |reason, fix| Error::NoCdev { bdf, reason, fix };
    const KERNEL_FIX: &str = "use a kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV, or \
                              open the device through the VFIO group/container access path";
    // A no-IOMMU device never gets a cdev (drivers/vfio/vfio_main.c, vfio_device_add):
    // say that, not "the kernel lacks the option".
    let noiommu = sys
        .iommu_group
        .is_some_and(|g| dev_dir.join(format!("vfio/noiommu-{g}")).exists());
    if noiommu {
        return Err(no_cdev(
            "the device is in vfio's unsafe no-IOMMU mode (no IOMMU translates its DMA), and \
             no-IOMMU devices have no cdev",
            "open it through the VFIO group/container access path (iommufd imports and DMA \
             engines need an IOMMU: enable one with intel_iommu=on / amd_iommu=on)",
        ));
    }
    let name = sys.vfio_dev.as_ref().ok_or(no_cdev(
        "sysfs has no vfio-dev/ directory for the device",
        KERNEL_FIX,
    ))?;
    let cdev = dev_dir.join("vfio/devices").join(name);
    let iommu = dev_dir.join("iommu");
    if !iommu.exists() {
        return Err(no_cdev("/dev/iommu does not exist", KERNEL_FIX));
    }
    if !cdev.exists() {
        return Err(no_cdev(
            "the device's /dev/vfio/devices/ node does not exist",
            KERNEL_FIX,
        ));
    }
    Ok(PathNodes::Cdev { iommu, cdev })
}

/// The group path's nodes.
fn group_nodes(sys: &PciDevice, dev_dir: &Path) -> Result<PathNodes> {
    let group_id = sys
        .iommu_group
        .ok_or(Error::NoIommuGroup { bdf: sys.bdf })?;
    let vfio = dev_dir.join("vfio");
    let normal = vfio.join(group_id.to_string());
    let noiommu_node = vfio.join(format!("noiommu-{group_id}"));
    let noiommu = !normal.exists() && noiommu_node.exists();
    Ok(PathNodes::Group {
        container: vfio.join("vfio"),
        group: if noiommu { noiommu_node } else { normal },
        group_id,
        noiommu,
    })
}

fn open_node(bdf: Bdf, path: &Path, node: Node) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|errno| {
        Error::Open {
            bdf,
            path: path.to_owned(),
            errno,
            fix: explain::open(node, errno),
        }
    })
}

/// Opens group node `path` of IOMMU group `group_id`. A group opens once, and not
/// while a device of it is open through its cdev (`vfio_group_fops_open`: EBUSY): then
/// the error names who holds the group or the cdev.
fn open_group(bdf: Bdf, path: &Path, group_id: u32) -> Result<OwnedFd> {
    open_node(bdf, path, Node::Group).map_err(|e| match e {
        Error::Open { errno, .. } if errno == Errno::BUSY => {
            let nodes = peerdma_host::holders::group_nodes_in(Path::new("/sys"), path, group_id);
            held_elsewhere(bdf, &nodes, None, "open", errno).unwrap_or(e)
        }
        e => e,
    })
}

/// [`Error::HeldElsewhere`] when some process holds one of `nodes` open, not counting `ours`
/// (an fd of this process on it, just opened); `None` when none is visible (the
/// plain error, with its general fix, is then the better message).
fn held_elsewhere(
    bdf: Bdf,
    nodes: &[PathBuf],
    ours: Option<BorrowedFd<'_>>,
    op: &'static str,
    errno: Errno,
) -> Option<Error> {
    let me = std::process::id();
    let mut holders = peerdma_host::holders::holders(nodes);
    if let Some(fd) = ours {
        let fd = fd.as_raw_fd();
        holders
            .0
            .retain(|h| !(h.pid == me && i64::from(h.fd) == i64::from(fd)));
    }
    (!holders.0.is_empty()).then(|| Error::HeldElsewhere {
        bdf,
        node: nodes[0].clone(),
        holders,
        op,
        errno,
    })
}

/// Binds a cdev device fd to an iommufd; `cdev` is the node it was opened from, when
/// known, to name who else holds it on EINVAL.
fn bind(bdf: Bdf, cdev: Option<&Path>, device: &OwnedFd, iommufd: &OwnedFd) -> Result<u32> {
    ioctl::device_bind_iommufd(device.as_fd(), iommufd.as_fd()).map_err(|errno| {
        // A cdev device opens once: a second bind fails with EINVAL (vfio_df_open).
        let op = VfioIoctl::DeviceBindIommufd;
        let held = (errno == Errno::INVAL)
            .then_some(cdev)
            .flatten()
            .and_then(|node| {
                held_elsewhere(
                    bdf,
                    &[node.to_owned()],
                    Some(device.as_fd()),
                    op.name(),
                    errno,
                )
            });
        held.unwrap_or_else(|| explain::ioctl_err(bdf, op)(errno))
    })
}

/// Opens the cdev node `cdev` and binds it to `iommufd`.
fn open_cdev(bdf: Bdf, cdev: &Path, iommufd: Arc<OwnedFd>) -> Result<(OwnedFd, PathFds)> {
    let device = open_node(bdf, cdev, Node::Cdev)?;
    let devid = bind(bdf, Some(cdev), &device, &iommufd)?;
    Ok((
        device,
        PathFds::Cdev {
            iommufd,
            devid: Some(devid),
        },
    ))
}

/// Attaches `group` to `container` (unless already attached), sets the IOMMU
/// type (unless the container already has one), checks viability and gets the
/// device fd.
fn group_device(
    bdf: Bdf,
    group_id: u32,
    group: OwnedFd,
    container: OwnedFd,
    noiommu: bool,
    container_is_fresh: bool,
) -> Result<(OwnedFd, PathFds)> {
    let status = ioctl::group_get_status(group.as_fd())
        .map_err(explain::ioctl_err(bdf, VfioIoctl::GroupGetStatus))?;
    if status & VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err(Error::GroupNotViable {
            bdf,
            group: group_id,
        });
    }
    if status & VFIO_GROUP_FLAGS_CONTAINER_SET == 0 {
        let iommu_type = if noiommu {
            VFIO_NOIOMMU_IOMMU
        } else {
            VFIO_TYPE1v2_IOMMU
        };
        let version = ioctl::get_api_version(container.as_fd())
            .map_err(explain::ioctl_err(bdf, VfioIoctl::GetApiVersion))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(Error::Ioctl {
                bdf,
                ioctl: VfioIoctl::GetApiVersion.name(),
                errno: Errno::PROTO,
                fix: "the container speaks another VFIO API version than 0",
            });
        }
        let supported = ioctl::check_extension(container.as_fd(), iommu_type)
            .map_err(explain::ioctl_err(bdf, VfioIoctl::CheckExtension))?;
        if supported <= 0 {
            return Err(Error::IommuTypeUnsupported { bdf, iommu_type });
        }
        ioctl::group_set_container(group.as_fd(), container.as_fd())
            .map_err(explain::ioctl_err(bdf, VfioIoctl::GroupSetContainer))?;
        match ioctl::set_iommu(container.as_fd(), iommu_type) {
            Ok(()) => {}
            // A container handed over may already have its IOMMU set by an
            // earlier group; the kernel says EINVAL then and attached our group
            // to it in SET_CONTAINER.
            Err(Errno::INVAL) if !container_is_fresh => {}
            Err(errno) => return Err(explain::ioctl_err(bdf, VfioIoctl::SetIommu)(errno)),
        }
    }
    let name = CString::new(bdf.to_string()).expect("a BDF's text has no NUL byte");
    let device = ioctl::group_get_device_fd(group.as_fd(), &name)
        .map_err(explain::ioctl_err(bdf, VfioIoctl::GroupGetDeviceFd))?;
    Ok((
        device,
        PathFds::Group {
            group: Some(Arc::new(group)),
            container: Some(Arc::new(container)),
        },
    ))
}

/// Opens the device fd and the fds its access path holds, following `opts`.
///
/// `sys` is what sysfs says about the device; it is required unless the caller
/// passed a ready device fd.
pub(crate) fn open(
    bdf: Bdf,
    sys: Option<&PciDevice>,
    opts: OpenOptions,
) -> Result<(OwnedFd, PathFds)> {
    let OpenOptions {
        access,
        sysfs,
        dev_dir,
        passed,
    } = opts;
    let need_sys = || -> Result<&PciDevice> {
        sys.ok_or_else(|| {
            Error::Host(peerdma_host::HostError::Sysfs {
                path: sysfs.device_path(bdf),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        })
    };
    match passed {
        PassedFds::CdevBound { device, iommufd } => Ok((
            device,
            PathFds::Cdev {
                iommufd: Arc::new(iommufd),
                devid: None,
            },
        )),
        PassedFds::GroupDevice {
            device,
            group,
            container,
        } => Ok((
            device,
            PathFds::Group {
                group: group.map(Arc::new),
                container: container.map(Arc::new),
            },
        )),
        PassedFds::CdevUnbound { device, iommufd } => {
            let devid = bind(bdf, None, &device, &iommufd)?;
            Ok((
                device,
                PathFds::Cdev {
                    iommufd: Arc::new(iommufd),
                    devid: Some(devid),
                },
            ))
        }
        PassedFds::Iommufd(iommufd) => match path_nodes(need_sys()?, AccessPath::Cdev, &dev_dir)? {
            PathNodes::Cdev { cdev, .. } => open_cdev(bdf, &cdev, Arc::new(iommufd)),
            PathNodes::Group { .. } => Err(Error::NoCdev {
                bdf,
                reason: "an iommufd was passed but the cdev path is unavailable",
                fix: "pass the device's cdev fd with the iommufd, or a container fd instead",
            }),
        },
        PassedFds::Container(container) => {
            match path_nodes(need_sys()?, AccessPath::Group, &dev_dir)? {
                PathNodes::Group {
                    group,
                    group_id,
                    noiommu,
                    ..
                } => {
                    let group = open_group(bdf, &group, group_id)?;
                    group_device(bdf, group_id, group, container, noiommu, false)
                }
                PathNodes::Cdev { .. } => Err(Error::NoIommuGroup { bdf }),
            }
        }
        PassedFds::Group { group, container } => {
            match path_nodes(need_sys()?, AccessPath::Group, &dev_dir)? {
                PathNodes::Group {
                    group_id, noiommu, ..
                } => group_device(bdf, group_id, group, container, noiommu, false),
                PathNodes::Cdev { .. } => Err(Error::NoIommuGroup { bdf }),
            }
        }
        PassedFds::None => match path_nodes(need_sys()?, access, &dev_dir)? {
            PathNodes::Cdev { iommu, cdev } => {
                // One iommufd for every device this process opens: the kernel binds
                // several devices of one IOMMU group to one iommufd, never to two.
                let iommufd = crate::shared_iommufd(&iommu).map_err(|errno| Error::Open {
                    bdf,
                    path: iommu.clone(),
                    errno,
                    fix: explain::open(Node::Iommu, errno),
                })?;
                open_cdev(bdf, &cdev, iommufd)
            }
            PathNodes::Group {
                container,
                group,
                group_id,
                noiommu,
            } => {
                // Another device of this group open in this process: the group node
                // opens once, its devices all come from that one group fd.
                if let Some((group_fd, container_fd)) = crate::shared::shared_group(&group) {
                    let name = CString::new(bdf.to_string()).expect("a BDF's text has no NUL byte");
                    let device = ioctl::group_get_device_fd(group_fd.as_fd(), &name)
                        .map_err(explain::ioctl_err(bdf, VfioIoctl::GroupGetDeviceFd))?;
                    return Ok((
                        device,
                        PathFds::Group {
                            group: Some(group_fd),
                            container: Some(container_fd),
                        },
                    ));
                }
                let container = open_node(bdf, &container, Node::Container)?;
                let group_fd = open_group(bdf, &group, group_id)?;
                let opened = group_device(bdf, group_id, group_fd, container, noiommu, true)?;
                if let (
                    _,
                    PathFds::Group {
                        group: Some(g),
                        container: Some(c),
                    },
                ) = &opened
                {
                    crate::shared::remember_group(&group, &(Arc::clone(g), Arc::clone(c)));
                }
                Ok(opened)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdma_host::fixture::TempTree;
    use std::fs;

    fn sys(driver: Option<&str>, group: Option<u32>, vfio_dev: Option<&str>) -> PciDevice {
        PciDevice {
            bdf: "0000:00:03.0".parse().unwrap(),
            path: PathBuf::from("/sys/bus/pci/devices/0000:00:03.0"),
            vendor: 0x1af4,
            device: 0x1110,
            class: 0x050000,
            driver: driver.map(str::to_owned),
            iommu_group: group,
            resources: vec![],
            vfio_dev: vfio_dev.map(str::to_owned),
            is_virtfn: false,
            unsafe_noiommu_mode: false,
        }
    }

    fn dev_tree(iommu: bool, cdev: bool, group: Option<&str>) -> TempTree {
        let t = TempTree::new("dev");
        fs::create_dir_all(t.0.join("vfio/devices")).unwrap();
        fs::write(t.0.join("vfio/vfio"), "").unwrap();
        if iommu {
            fs::write(t.0.join("iommu"), "").unwrap();
        }
        if cdev {
            fs::write(t.0.join("vfio/devices/vfio0"), "").unwrap();
        }
        if let Some(g) = group {
            fs::write(t.0.join("vfio").join(g), "").unwrap();
        }
        t
    }

    #[test]
    fn auto_prefers_cdev_when_everything_exists() {
        let t = dev_tree(true, true, Some("7"));
        let p = path_nodes(
            &sys(Some("vfio-pci"), Some(7), Some("vfio0")),
            AccessPath::Auto,
            &t.0,
        )
        .unwrap();
        assert_eq!(
            p,
            PathNodes::Cdev {
                iommu: t.0.join("iommu"),
                cdev: t.0.join("vfio/devices/vfio0")
            }
        );
    }

    #[test]
    fn auto_falls_back_to_group() {
        for (iommu, cdev, vfio_dev) in [
            (false, true, Some("vfio0")),
            (true, false, Some("vfio0")),
            (true, true, None),
        ] {
            let t = dev_tree(iommu, cdev, Some("7"));
            let p = path_nodes(
                &sys(Some("vfio-pci"), Some(7), vfio_dev),
                AccessPath::Auto,
                &t.0,
            )
            .unwrap();
            assert_eq!(
                p,
                PathNodes::Group {
                    container: t.0.join("vfio/vfio"),
                    group: t.0.join("vfio/7"),
                    group_id: 7,
                    noiommu: false
                },
                "iommu {iommu} cdev {cdev} vfio_dev {vfio_dev:?}"
            );
        }
    }

    #[test]
    fn noiommu_group_node() {
        let t = dev_tree(false, false, Some("noiommu-0"));
        let p = path_nodes(
            &sys(Some("vfio-pci"), Some(0), None),
            AccessPath::Group,
            &t.0,
        )
        .unwrap();
        assert!(
            matches!(p, PathNodes::Group { noiommu: true, group_id: 0, ref group, .. } if group.ends_with("noiommu-0"))
        );
    }

    #[test]
    fn a_noiommu_device_is_told_it_has_no_iommu_not_that_the_kernel_lacks_options() {
        let t = dev_tree(true, false, Some("noiommu-0"));
        let err = path_nodes(
            &sys(Some("vfio-pci"), Some(0), None),
            AccessPath::Cdev,
            &t.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no-IOMMU mode"), "{err}");
        assert!(!err.contains("CONFIG_IOMMUFD"), "{err}");
        assert!(!err.contains("AccessPath"), "{err}");
    }

    #[test]
    fn without_a_group_the_missing_iommu_comes_before_binding_advice() {
        let t = dev_tree(false, false, None);
        for driver in [None, Some("e1000e")] {
            let err = path_nodes(&sys(driver, None, None), AccessPath::Auto, &t.0).unwrap_err();
            assert!(matches!(err, Error::NoIommuGroup { .. }), "{err:?}");
            assert!(!err.to_string().contains("driver_override"), "{err}");
        }
        // In no-IOMMU mode vfio-pci can take a group-less device: binding advice is right.
        let d = PciDevice {
            unsafe_noiommu_mode: true,
            ..sys(None, None, None)
        };
        let err = path_nodes(&d, AccessPath::Auto, &t.0).unwrap_err();
        assert!(matches!(err, Error::NotVfioBound { .. }), "{err:?}");
    }

    #[test]
    fn a_bridge_is_named_as_one_not_given_binding_advice() {
        let t = dev_tree(false, false, None);
        let d = PciDevice {
            class: 0x060000,
            ..sys(None, Some(0), None)
        };
        let err = path_nodes(&d, AccessPath::Auto, &t.0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Host(peerdma_host::HostError::NotAnEndpoint {
                    kind: "host bridge",
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("driver_override"), "{err}");
    }

    #[test]
    fn explicit_cdev_reports_what_is_missing() {
        let t = dev_tree(false, true, None);
        let err = path_nodes(
            &sys(Some("vfio-pci"), Some(7), Some("vfio0")),
            AccessPath::Cdev,
            &t.0,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::NoCdev { reason, .. } if reason.contains("/dev/iommu")),
            "{err:?}"
        );
        let err = path_nodes(
            &sys(Some("vfio-pci"), Some(7), None),
            AccessPath::Cdev,
            &t.0,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::NoCdev { reason, .. } if reason.contains("vfio-dev")),
            "{err:?}"
        );
        let t = dev_tree(true, false, None);
        let err = path_nodes(
            &sys(Some("vfio-pci"), Some(7), Some("vfio0")),
            AccessPath::Cdev,
            &t.0,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::NoCdev { reason, .. } if reason.contains("node")),
            "{err:?}"
        );
    }

    #[test]
    fn group_path_needs_a_group() {
        let t = dev_tree(false, false, None);
        let err =
            path_nodes(&sys(Some("vfio-pci"), None, None), AccessPath::Auto, &t.0).unwrap_err();
        assert!(matches!(err, Error::NoIommuGroup { .. }), "{err:?}");
    }

    #[test]
    fn must_be_bound_to_vfio() {
        let t = dev_tree(true, true, Some("7"));
        for driver in [None, Some("nvme")] {
            let err = path_nodes(&sys(driver, Some(7), Some("vfio0")), AccessPath::Auto, &t.0)
                .unwrap_err();
            assert!(matches!(err, Error::NotVfioBound { .. }), "{err:?}");
            assert!(err.to_string().contains("driver_override"));
        }
        // Variant drivers count as vfio.
        assert!(path_nodes(
            &sys(Some("mlx5_vfio_pci"), Some(7), Some("vfio0")),
            AccessPath::Auto,
            &t.0
        )
        .is_ok());
    }

    #[test]
    fn missing_group_node_is_an_open_error_with_a_fix() {
        let t = dev_tree(false, false, None);
        let bdf: Bdf = "0000:00:03.0".parse().unwrap();
        let err = open(
            bdf,
            Some(&sys(Some("vfio-pci"), Some(7), None)),
            OpenOptions {
                dev_dir: t.0.clone(),
                ..OpenOptions::default()
            },
        )
        .unwrap_err();
        // /dev/vfio/vfio is a plain file here, so the container opens and the
        // group node is what is missing.
        assert!(
            matches!(&err, Error::Open { errno: Errno::NOENT, path, .. } if path.ends_with("vfio/7")),
            "{err:?}"
        );
        assert!(err.to_string().contains("bind every device"));
    }

    #[test]
    fn passed_fds_need_sysfs_only_when_the_library_opens_nodes() {
        let bdf: Bdf = "0000:00:03.0".parse().unwrap();
        let file = fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let err = open(
            bdf,
            None,
            OpenOptions {
                passed: PassedFds::Iommufd(file.into()),
                ..OpenOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Host(peerdma_host::HostError::Sysfs { .. })),
            "{err:?}"
        );
        let file = fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let (fd, fds) = open(
            bdf,
            None,
            OpenOptions {
                passed: PassedFds::GroupDevice {
                    device: file.into(),
                    group: None,
                    container: None,
                },
                ..OpenOptions::default()
            },
        )
        .unwrap();
        drop(fd);
        assert!(matches!(
            fds,
            PathFds::Group {
                group: None,
                container: None
            }
        ));
    }
}
