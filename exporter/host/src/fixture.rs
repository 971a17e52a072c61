//! Scratch directory trees for tests that read a fake `/sys`, `/proc` or `/dev`
//! (feature `testing`): the one fixture helper of the host readers and of the tools'
//! tests. The static tree of real sysfs dumps is `tests/fixtures/sys` beside it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A scratch directory under the system temp dir, removed on drop. Paths given to
/// its methods are relative to it (`sys/class/drm/renderD128/device/driver`).
///
/// Setup failures panic: it is for tests only.
#[derive(Debug)]
pub struct TempTree(pub PathBuf);

impl TempTree {
    /// A new, empty directory named after `tag`, this process and a counter.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "peerdma-host-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempTree(dir)
    }

    /// The root of the tree.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `rel`, creating its parent directories.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    /// Creates the directory `rel` and its parents.
    pub fn dir(&self, rel: &str) {
        fs::create_dir_all(self.0.join(rel)).unwrap();
    }

    /// Adds a PCI function at `devices/PATH` of a sysfs tree rooted here (the last
    /// element of `path` is its BDF: `pci0000:00/0000:00:1c.0/0000:01:00.0`), with PCI
    /// ids `ids` (vendor, device), class code `class`, no BARs, linked from
    /// `bus/pci/devices/BDF`; returns its directory, for what a test adds on top (a
    /// driver link, an IOMMU group, a config-space dump).
    pub fn function(&self, path: &str, ids: (u16, u16), class: u32) -> PathBuf {
        let dir = self.0.join("devices").join(path);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), format!("{:#06x}\n", ids.0)).unwrap();
        fs::write(dir.join("device"), format!("{:#06x}\n", ids.1)).unwrap();
        fs::write(dir.join("class"), format!("{class:#08x}\n")).unwrap();
        fs::write(dir.join("resource"), "").unwrap();
        let bdf = path.rsplit('/').next().unwrap();
        self.link(
            &format!("bus/pci/devices/{bdf}"),
            &format!("../../../devices/{path}"),
        );
        dir
    }

    /// Makes `rel` a symbolic link to `target` (kept as given, relative or not),
    /// creating its parent directories.
    pub fn link(&self, rel: &str, target: &str) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
