//! The testbed's stand-in for /dev/udmabuf inside QEMU, for hosts whose kernel has no
//! udmabuf module (these machines): QEMU refuses `virtio-gpu-pci,blob=true` without it
//! ("need rutabaga or udmabuf for blob resources"). The guest's virtio-gpu then has no
//! `resource_blob` and cannot import a peer BAR, so the DRM suite could not test its
//! positive path.
//!
//! What QEMU 10 does with /dev/udmabuf (ui/udmabuf.c, hw/display/virtio-gpu-udmabuf.c):
//! it opens the fixed path once; at realize it wants that fd and a memfd memory backend
//! (the testbed gives guest RAM one when a GPU is present); for each blob resource it
//! calls UDMABUF_CREATE_LIST with the RAM blocks' fds, offsets and sizes, and mmaps the
//! returned dma-buf read-only to read the pixels (display surface, `screendump`).
//! `tests/c/udmabuf_preload.c` answers those calls in-process: the "dma-buf" is a
//! placeholder fd whose mmap maps the same pages of the RAM blocks, so nothing is copied.
//! It is host plumbing, not code under test, used only where /dev/udmabuf is missing and
//! [`VmOptions::emulate_udmabuf`](crate::vm::VmOptions::emulate_udmabuf) is on; the run
//! says so on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The library's source, compiled at run time (never committed as a binary).
pub const SOURCE: &str = include_str!("../c/udmabuf_preload.c");

/// Compiles the library into `dir` (`libpeerdma_udmabuf_emulation.so`) with `cc`.
///
/// # Errors
///
/// When `cc` is missing or fails (its output is in the error).
pub fn build(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("udmabuf_preload.c");
    let lib = dir.join("libpeerdma_udmabuf_emulation.so");
    std::fs::write(&src, SOURCE).with_context(|| format!("writing {}", src.display()))?;
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .context("running cc to build the udmabuf emulation (apt-get install build-essential)")?;
    if !out.status.success() {
        bail!(
            "building the udmabuf emulation failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(lib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulation_builds_and_names_what_it_emulates() {
        assert!(SOURCE.contains("UDMABUF_CREATE_LIST") && SOURCE.contains("/dev/udmabuf"));
        let dir = std::env::temp_dir().join(format!("peerdma-udmabuf-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = build(&dir).expect("cc builds the emulation");
        assert!(lib.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
