//! Which processes hold a device node open (a VFIO cdev or group, a DRM card): what a
//! user needs when the kernel says a device is busy (a VFIO cdev opens once, a group
//! once), read from `/proc/PID/fd`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A process holding a node open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), "?" when unreadable.
    pub comm: String,
    /// The fd number it holds the node at.
    pub fd: u32,
    /// The node it holds.
    pub node: PathBuf,
}

/// The holders of nodes, for messages: "pid 85 (peerdma) holds /dev/vfio/devices/vfio0
/// at fd 4, …", or "another
/// process (not visible from here)" when none was found (no permission to read other
/// processes' fds, or another PID namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holders(pub Vec<Holder>);

impl fmt::Display for Holders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("another process (not visible from here)");
        }
        let me = std::process::id();
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "pid {} ({}) holds {} at fd {}",
                h.pid,
                h.comm,
                h.node.display(),
                h.fd
            )?;
            if h.pid == me {
                f.write_str(" — this process")?;
            }
        }
        Ok(())
    }
}

/// Every process under `proc_root` (normally `/proc`) with an fd open on one of `nodes`.
pub fn holders_in(proc_root: &Path, nodes: &[PathBuf]) -> Holders {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Holders(found);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(n) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if nodes.contains(&target) {
                let comm = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_else(|_| "?".to_string());
                found.push(Holder {
                    pid,
                    comm,
                    fd: n,
                    node: target,
                });
            }
        }
    }
    found.sort_by_key(|h| (h.pid, h.fd));
    Holders(found)
}

/// [`holders_in`] `/proc`.
pub fn holders(nodes: &[PathBuf]) -> Holders {
    holders_in(Path::new("/proc"), nodes)
}

/// The nodes through which a VFIO group's devices can be held: the group node itself
/// and the cdev (`/dev/vfio/devices/vfioN`) of every device in the group, from
/// `sys_root` (normally `/sys`). A group opens only while none of its devices is open
/// through its cdev (`vfio_group_fops_open` returns EBUSY).
pub fn group_nodes_in(sys_root: &Path, group_node: &Path, group: u32) -> Vec<PathBuf> {
    let mut nodes = vec![group_node.to_owned()];
    let devices = sys_root.join(format!("kernel/iommu_groups/{group}/devices"));
    for dev in std::fs::read_dir(devices).into_iter().flatten().flatten() {
        for cdev in std::fs::read_dir(dev.path().join("vfio-dev"))
            .into_iter()
            .flatten()
            .flatten()
        {
            nodes.push(Path::new("/dev/vfio/devices").join(cdev.file_name()));
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn holders_are_found_by_their_fd_links_with_their_names() {
        let root = std::env::temp_dir().join(format!("peerdma-holders-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let node = [PathBuf::from("/dev/vfio/devices/vfio3")];
        for (pid, comm, fds) in [
            (
                "85",
                "peerdma\n",
                vec![("4", "/dev/vfio/devices/vfio3"), ("5", "/dev/iommu")],
            ),
            ("90", "qemu\n", vec![("7", "/dev/vfio/devices/vfio30")]),
            ("self", "x\n", vec![("3", "/dev/vfio/devices/vfio3")]),
        ] {
            let dir = root.join(pid).join("fd");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(root.join(pid).join("comm"), comm).unwrap();
            for (n, target) in fds {
                symlink(target, dir.join(n)).unwrap();
            }
        }
        let h = holders_in(&root, &node);
        assert_eq!(
            h.0,
            vec![Holder {
                pid: 85,
                comm: "peerdma".into(),
                fd: 4,
                node: node[0].clone(),
            }],
            "vfio30 is another node; `self` is no pid"
        );
        assert_eq!(
            h.to_string(),
            "pid 85 (peerdma) holds /dev/vfio/devices/vfio3 at fd 4"
        );
        let sys = root.join("sys");
        let dev = sys.join("kernel/iommu_groups/7/devices/0000:00:11.0/vfio-dev/vfio1");
        std::fs::create_dir_all(&dev).unwrap();
        let nodes = group_nodes_in(&sys, Path::new("/dev/vfio/7"), 7);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            nodes,
            [
                PathBuf::from("/dev/vfio/7"),
                PathBuf::from("/dev/vfio/devices/vfio1")
            ]
        );
        assert_eq!(
            Holders(vec![]).to_string(),
            "another process (not visible from here)"
        );
    }
}
