//! The run's scratch directory: ivshmem backing files (named by role), NVMe images,
//! guest.json and testbed.json. Kept when the user named it (the console log then lives in
//! it too); otherwise removed on drop on every path (panic included), and the console log
//! lives beside it in `$TMPDIR/peerdma-testbed-logs/`, kept only when a run failed.
//!
//! A temporary scratch is made on a tmpfs (`$TMPDIR` where that is one, else `/dev/shm`):
//! QEMU maps each ivshmem BAR's backing file there `MAP_SHARED`, and on a disk file
//! system every DMA into the BAR dirties page-cache pages that the host's writeback
//! cleans and write-protects again, so the next DMA write faults on each page (and the
//! file goes to disk): a BAR slower than guest RAM for reasons no device has. On tmpfs
//! the pages stay mapped and writable, as guest RAM's do (docs/testbed.md).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

/// A scratch directory, removed on drop unless it is kept.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
    console: PathBuf,
    keep_console: bool,
}

impl Scratch {
    /// `dir` (kept afterwards) or a new temporary directory (removed on drop).
    pub fn new(dir: Option<&Path>) -> Result<Scratch> {
        static N: AtomicU32 = AtomicU32::new(0);
        let (path, keep) = match dir {
            Some(d) => (d.to_path_buf(), true),
            None => (
                temp_base().join(format!(
                    "peerdma-testbed-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                )),
                false,
            ),
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating scratch directory {}", path.display()))?;
        let path = path.canonicalize()?;
        let console = if keep {
            path.join("console.log")
        } else {
            let logs = std::env::temp_dir().join("peerdma-testbed-logs");
            std::fs::create_dir_all(&logs)
                .with_context(|| format!("creating {}", logs.display()))?;
            logs.join(format!(
                "{}.console.log",
                path.file_name().unwrap_or_default().to_string_lossy()
            ))
        };
        // Files from an earlier run in a kept scratch would confuse the host-side checks.
        for stale in [
            crate::manifest::MANIFEST_FILE,
            crate::manifest::EXIT_STATUS_FILE,
        ] {
            let _ = std::fs::remove_file(path.join(stale));
        }
        Ok(Scratch {
            path,
            keep,
            console,
            keep_console: keep,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory after drop.
    pub fn keep(&mut self) {
        self.keep = true;
        self.keep_console = true;
    }

    /// Where the kernel's console log goes.
    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// Keep the console log after drop (the run failed): the directory still goes.
    pub fn keep_console(&mut self) {
        self.keep_console = true;
    }

    /// Whether it is kept after drop.
    pub fn is_kept(&self) -> bool {
        self.keep
    }
}

/// `TMPFS_MAGIC` (include/uapi/linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Whether `dir` is on a tmpfs.
pub fn is_tmpfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|st| st.f_type as u64 == TMPFS_MAGIC)
}

/// Where a temporary scratch goes: `$TMPDIR` where it is a tmpfs, else `/dev/shm` where
/// that is a writable tmpfs, else `$TMPDIR`.
pub fn temp_base() -> PathBuf {
    let tmp = std::env::temp_dir();
    let shm = Path::new("/dev/shm");
    if is_tmpfs(&tmp) {
        tmp
    } else if is_tmpfs(shm) && rustix::fs::access(shm, rustix::fs::Access::WRITE_OK).is_ok() {
        shm.to_path_buf()
    } else {
        tmp
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
        if !self.keep_console {
            let _ = std::fs::remove_file(&self.console);
        }
    }
}
