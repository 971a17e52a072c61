//! Which kernel driver runs an RDMA device, read from sysfs, and whether Linux 7.2
//! lets that driver register a vfio-pci BAR dma-buf as an MR: the table is
//! [`crate::rdma_driver`] (always built, shared with the atlas); the acceptance table,
//! with the source lines, is in `docs/rdma.md`.

use std::path::Path;

pub use crate::rdma_driver::{BarDmabuf, Driver, ACCEPTANCE_TABLE};

impl Driver {
    /// Reads `/sys/class/infiniband/IBDEV`.
    pub fn of_device(ibdev: &str) -> Driver {
        Self::of_device_in(Path::new("/sys/class/infiniband"), ibdev)
    }

    fn of_device_in(class: &Path, ibdev: &str) -> Driver {
        let dir = class.join(ibdev);
        let pci = std::fs::read_link(dir.join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let node = std::fs::read_to_string(dir.join("node_type")).ok();
        Self::from_names(
            pci.as_deref(),
            ibdev,
            dir.join("parent").exists(),
            node.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sysfs_tree_gives_the_driver() {
        let dir = std::env::temp_dir().join(format!("peerdma-ibclass-{}", std::process::id()));
        let dev = dir.join("rxe_a");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("parent"), "veth0\n").unwrap();
        assert_eq!(Driver::of_device_in(&dir, "rxe_a"), Driver::Rxe);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
