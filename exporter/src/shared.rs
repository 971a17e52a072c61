//! What one process shares between the devices it opens (without handed-over
//! fds): one iommufd for every device opened through its cdev, and one group
//! and container fd for the devices of one IOMMU group opened through the group
//! path.
//!
//! Linux 7.2 lets one iommufd bind several devices of one IOMMU group
//! (`iommufd_device_bind` in drivers/iommu/iommufd/device.c finds the group's
//! `iommufd_group` in that context; the DMA ownership claim,
//! `iommu_device_claim_dma_owner`, succeeds again for the same owner, the
//! context), but refuses a second context for a group already owned by the
//! first (EPERM). Two functions of one multifunction slot therefore open in one
//! process only through one iommufd. The context lives while a device or an
//! importer holds it; the next open after the last one closed opens a new one.
//!
//! A group node opens once (`vfio_group_fops_open`: EBUSY for a second open, in
//! this process too); its other devices come from `VFIO_GROUP_GET_DEVICE_FD` on
//! the same group fd, which [`shared_group`] hands out while a device holds it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// The live shared iommufds, by node path (one in practice: `/dev/iommu`).
static SHARED: Mutex<Vec<(PathBuf, Weak<OwnedFd>)>> = Mutex::new(Vec::new());

/// The process's shared iommufd opened from `node` (`/dev/iommu`): the one
/// already open while anything holds it, otherwise a new open of `node`.
///
/// # Errors
///
/// The errno of opening `node` (ENOENT: a kernel without `CONFIG_IOMMUFD`;
/// EACCES: the node's mode refuses this user).
pub fn shared_iommufd(node: &Path) -> Result<Arc<OwnedFd>, Errno> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    shared.retain(|(_, weak)| weak.strong_count() > 0);
    if let Some(fd) = shared
        .iter()
        .find(|(path, _)| path == node)
        .and_then(|(_, weak)| weak.upgrade())
    {
        return Ok(fd);
    }
    let fd = Arc::new(rustix::fs::open(
        node,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?);
    shared.push((node.to_owned(), Arc::downgrade(&fd)));
    Ok(fd)
}

/// An open group node and the container it is attached to, shared by the
/// devices of the group.
pub(crate) type GroupFds = (Arc<OwnedFd>, Arc<OwnedFd>);

/// A group node path with its group and container fds, held by devices.
type HeldGroup = (PathBuf, Weak<OwnedFd>, Weak<OwnedFd>);

/// The live group fds, by group node path.
static GROUPS: Mutex<Vec<HeldGroup>> = Mutex::new(Vec::new());

/// The group node `node` and its container when a device of this process holds
/// them open; `None` otherwise.
pub(crate) fn shared_group(node: &Path) -> Option<GroupFds> {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    groups.retain(|(_, g, c)| g.strong_count() > 0 && c.strong_count() > 0);
    groups
        .iter()
        .find(|(path, ..)| path == node)
        .and_then(|(_, g, c)| Some((g.upgrade()?, c.upgrade()?)))
}

/// Records `fds` as the open group node `node` for the next device of the group.
pub(crate) fn remember_group(node: &Path, fds: &GroupFds) {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    groups.retain(|(path, g, c)| path != node && g.strong_count() > 0 && c.strong_count() > 0);
    groups.push((
        node.to_owned(),
        Arc::downgrade(&fds.0),
        Arc::downgrade(&fds.1),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_open_file_while_held_a_new_one_after() {
        let dir = std::env::temp_dir().join(format!("peerdma-iommufd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let node = dir.join("iommu");
        std::fs::write(&node, b"").unwrap();
        let a = shared_iommufd(&node).unwrap();
        let b = shared_iommufd(&node).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same open file while held");
        drop((a, b));
        let c = shared_iommufd(&node).unwrap();
        assert_eq!(
            Arc::strong_count(&c),
            1,
            "a fresh open after the last closed"
        );
        assert_eq!(
            shared_iommufd(&dir.join("missing")).unwrap_err(),
            Errno::NOENT
        );
        drop(c);
        let group = dir.join("3");
        assert!(shared_group(&group).is_none());
        let open = || Arc::new(OwnedFd::from(std::fs::File::open(&node).unwrap()));
        let fds = (open(), open());
        remember_group(&group, &fds);
        let again = shared_group(&group).expect("held");
        assert!(Arc::ptr_eq(&again.0, &fds.0) && Arc::ptr_eq(&again.1, &fds.1));
        drop((again, fds));
        assert!(shared_group(&group).is_none(), "gone with its last device");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
