//! The run's scratch directory: ivshmem backing files (named by role), NVMe images,
//! guest.json and testbed.json. Kept when the user named it (the console log then lives in
//! it too); otherwise removed on drop on every path (panic included), and the console log
//! lives beside it in `$TMPDIR/peerdma-testbed-logs/`, kept only when a run failed.

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
