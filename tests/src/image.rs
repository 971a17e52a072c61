//! NVMe backing images, created (and seeded) on the host before boot, in the scratch
//! directory as `<role>.img`: the guest's namespace 1 is this file, so the host can fill
//! it before a run and compare it after.
//!
//! `--nvme-image ROLE=pattern:SEED` fills it with the seeded pattern of
//! [`crate::pattern`] (what `p2pcopy --seed SEED` writes and checks);
//! `--nvme-image ROLE=file:PATH` copies a file in (padded to whole 4 KiB blocks);
//! `--nvme-image ROLE=zero` starts empty. An image already in a kept scratch directory is
//! used as it is unless a seed is given. ivshmem backing files (`<role>.mem`) can be
//! pre-seeded the same way by writing them into `--scratch` before the run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// Size of an NVMe image made without a seed file: 128 MiB (namespace 1 of the guest's
/// controller, 512-byte blocks).
pub const DEFAULT_IMAGE_BYTES: u64 = 128 << 20;

/// What goes into an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// Zeroes.
    Zero,
    /// The seeded pattern over the whole image.
    Pattern(u64),
    /// A host file's bytes, then zeroes.
    File(PathBuf),
}

/// One `--nvme-image ROLE=SOURCE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSeed {
    /// The NVMe device's role (`nvme0`).
    pub role: String,
    /// What to put in it.
    pub source: ImageSource,
}

impl FromStr for ImageSeed {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<ImageSeed> {
        let Some((role, src)) = s.split_once('=') else {
            bail!("--nvme-image {s:?}: use ROLE=pattern:SEED, ROLE=file:PATH or ROLE=zero");
        };
        let source = if src == "zero" {
            ImageSource::Zero
        } else if let Some(seed) = src.strip_prefix("pattern:") {
            let seed = match seed.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => seed.parse(),
            }
            .with_context(|| format!("--nvme-image {s:?}: seed {seed:?} is not a number"))?;
            ImageSource::Pattern(seed)
        } else if let Some(path) = src.strip_prefix("file:") {
            ImageSource::File(PathBuf::from(path))
        } else {
            bail!("--nvme-image {s:?}: use ROLE=pattern:SEED, ROLE=file:PATH or ROLE=zero");
        };
        Ok(ImageSeed {
            role: role.to_string(),
            source,
        })
    }
}

/// The image path of an NVMe device.
pub fn image_path(scratch: &Path, role: &str) -> PathBuf {
    scratch.join(format!("{role}.img"))
}

/// Writes `source` into the image of `role` in `scratch` (replacing what was there).
pub fn seed(scratch: &Path, role: &str, source: &ImageSource) -> Result<PathBuf> {
    let path = image_path(scratch, role);
    let mut f = std::fs::File::create(&path)
        .with_context(|| format!("creating NVMe image {}", path.display()))?;
    let len = match source {
        ImageSource::Zero => DEFAULT_IMAGE_BYTES,
        ImageSource::Pattern(seed) => {
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < DEFAULT_IMAGE_BYTES {
                crate::pattern::fill(*seed, off, &mut buf);
                f.write_all(&buf)?;
                off += buf.len() as u64;
            }
            DEFAULT_IMAGE_BYTES
        }
        ImageSource::File(src) => {
            let mut input = std::fs::File::open(src)
                .with_context(|| format!("reading seed file {}", src.display()))?;
            let n = std::io::copy(&mut input, &mut f)?;
            n.div_ceil(4096).max(1) * 4096
        }
    };
    f.set_len(len)?;
    Ok(path)
}

/// Makes sure the image of `role` exists (zeroed, [`DEFAULT_IMAGE_BYTES`]) without
/// touching one already there.
pub fn ensure(scratch: &Path, role: &str) -> Result<PathBuf> {
    let path = image_path(scratch, role);
    if !path.exists() {
        seed(scratch, role, &ImageSource::Zero)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_and_fill() {
        let s: ImageSeed = "nvme0=pattern:0x10".parse().unwrap();
        assert_eq!(s.source, ImageSource::Pattern(16));
        assert_eq!(
            "disk=file:/x".parse::<ImageSeed>().unwrap().source,
            ImageSource::File("/x".into())
        );
        assert!("nvme0".parse::<ImageSeed>().is_err());
        assert!("nvme0=pattern:zz".parse::<ImageSeed>().is_err());
        let dir = std::env::temp_dir().join(format!("peerdma-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = seed(&dir, "n", &ImageSource::Pattern(7)).unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, DEFAULT_IMAGE_BYTES);
        assert_eq!(crate::pattern::first_mismatch(7, 0, &data[..1 << 20]), None);
        std::fs::write(dir.join("src"), b"hello").unwrap();
        let p = seed(&dir, "f", &ImageSource::File(dir.join("src"))).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
