//! Where the testbed keeps what it fetches and builds (kernels, headers, apt lists).
//!
//! `PEERDMA_CACHE` overrides the location; otherwise `$XDG_CACHE_HOME/peerdma` or
//! `~/.cache/peerdma`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The root of the testbed's cache, created if missing.
pub fn dir() -> Result<PathBuf> {
    let dir = if let Some(p) = std::env::var_os("PEERDMA_CACHE") {
        PathBuf::from(p)
    } else if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(p).join("peerdma")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".cache/peerdma")
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the testbed cache {}", dir.display()))?;
    Ok(dir)
}

/// A sub-directory of the cache, created if missing.
pub fn subdir(name: &str) -> Result<PathBuf> {
    let d = dir()?.join(name);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Total size in bytes of everything under `path` (files only, links not followed).
pub fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}
