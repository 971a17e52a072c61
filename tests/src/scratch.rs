//! The run's scratch directory: ivshmem backing files (named by role), NVMe images, the
//! console log, guest.json and testbed.json. Kept when the user named it, removed on drop
//! otherwise, on every path (panic included).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

/// A scratch directory, removed on drop unless it is kept.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    /// `dir` (kept afterwards) or a new temporary directory (removed on drop).
    pub fn new(dir: Option<&Path>) -> Result<Scratch> {
        static N: AtomicU32 = AtomicU32::new(0);
        let (path, keep) = match dir {
            Some(d) => (d.to_path_buf(), true),
            None => (
                std::env::temp_dir().join(format!(
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
        // Files from an earlier run in a kept scratch would confuse the host-side checks.
        for stale in [
            crate::manifest::MANIFEST_FILE,
            crate::manifest::EXIT_STATUS_FILE,
        ] {
            let _ = std::fs::remove_file(path.join(stale));
        }
        Ok(Scratch { path, keep })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keep the directory after drop (e.g. to debug a failed run).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Whether it is kept after drop.
    pub fn is_kept(&self) -> bool {
        self.keep
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
