//! A sysfs tree in a scratch directory for the tools' unit tests: PCI functions under
//! `devices/…` with their `bus/pci/devices/BDF` links, removed on drop. Each test adds
//! what it needs on top (a driver link, an IOMMU group).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

/// The tree; `.0` is its root, what `Sysfs::new` takes.
pub(crate) struct SysfsTree(pub(crate) PathBuf);

impl Drop for SysfsTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl SysfsTree {
    /// An empty tree named after `tag` and this process.
    pub(crate) fn new(tag: &str) -> SysfsTree {
        let dir = std::env::temp_dir().join(format!("peerdma-tools-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bus/pci/devices")).unwrap();
        SysfsTree(dir)
    }

    /// Adds the PCI function at `path` (below `devices/`, its last element the BDF)
    /// with PCI ids `ids`, class code `class` and no BARs, linked from
    /// `bus/pci/devices`; returns its directory.
    pub(crate) fn function(&self, path: &str, ids: (u16, u16), class: u32) -> PathBuf {
        let dir = self.0.join("devices").join(path);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("{:#06x}\n", ids.0)).unwrap();
        fs::write(dir.join("device"), format!("{:#06x}\n", ids.1)).unwrap();
        fs::write(dir.join("class"), format!("{class:#08x}\n")).unwrap();
        fs::write(dir.join("resource"), "").unwrap();
        let bdf = path.rsplit('/').next().unwrap();
        symlink(
            format!("../../../devices/{path}"),
            self.0.join("bus/pci/devices").join(bdf),
        )
        .unwrap();
        dir
    }
}
