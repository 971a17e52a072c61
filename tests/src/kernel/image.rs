//! Reading kernels: the release string in a bzImage's header, and the options of a kernel
//! `.config` (and of the project's fragment) next to it.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// The kernel release string in a bzImage's setup header (`7.2.13` from
/// `7.2.13 (root@vm) #2 SMP ...`); fails if `data` is no bzImage.
pub fn bzimage_version(data: &[u8]) -> Result<String> {
    if data.len() < 0x220 || &data[0x202..0x206] != b"HdrS" || data[0x1fe..0x200] != [0x55, 0xaa] {
        bail!("not a bzImage (no 'HdrS' boot header)");
    }
    let ptr = u16::from_le_bytes([data[0x20e], data[0x20f]]) as usize;
    let start = ptr + 0x200;
    let text = data
        .get(start..)
        .filter(|_| ptr != 0)
        .ok_or_else(|| anyhow!("bzImage has no kernel version string"))?;
    let end = text
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(text.len().min(256));
    let s = String::from_utf8_lossy(&text[..end]);
    s.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("bzImage has an empty kernel version string"))
}

/// Whether a kernel `.config` text sets `option` (e.g. `CONFIG_IOMMUFD`) to `y` or `m`.
pub fn config_enables(config: &str, option: &str) -> bool {
    config.lines().any(|l| {
        l.strip_prefix(option)
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|v| v == "y" || v == "m")
    })
}

/// The options a fragment sets to `y` and to `n`.
pub fn fragment_options(fragment: &str) -> (Vec<&str>, Vec<&str>) {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for l in fragment.lines().map(str::trim) {
        if let Some(opt) = l.strip_suffix("=y") {
            on.push(opt);
        } else if let Some(opt) = l.strip_suffix("=n") {
            off.push(opt);
        } else if let Some(opt) = l
            .strip_prefix("# ")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            off.push(opt);
        }
    }
    (on, off)
}

/// Checks that a generated `.config` has every `=y` of the fragment and none of its `=n`
/// options enabled; the error names each option that did not make it.
pub fn verify_fragment(fragment: &str, config: &str) -> Result<()> {
    let (on, off) = fragment_options(fragment);
    let mut bad = Vec::new();
    for opt in on {
        if !config.lines().any(|l| l.strip_prefix(opt) == Some("=y")) {
            bad.push(format!(
                "{opt}=y is not in .config (a dependency is missing?)"
            ));
        }
    }
    for opt in off {
        if config_enables(config, opt) {
            bad.push(format!("{opt} should be off but is enabled"));
        }
    }
    if !bad.is_empty() {
        bail!(
            "the kernel config does not match the fragment: {}",
            bad.join("; ")
        );
    }
    Ok(())
}

/// Version, IOMMUFD and a note on where the config came from, for a bzImage at `path`.
pub(crate) fn inspect_image(path: &Path) -> Result<(String, bool, String)> {
    let mut head = Vec::new();
    use std::io::Read;
    File::open(path)
        .with_context(|| format!("opening the kernel image {}", path.display()))?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    let version = bzimage_version(&head).with_context(|| format!("{}", path.display()))?;
    match config_for_image(path, &version) {
        Some(cfg) => {
            let text = std::fs::read_to_string(&cfg)?;
            Ok((
                version,
                config_enables(&text, "CONFIG_IOMMUFD"),
                format!(" (config {})", cfg.display()),
            ))
        }
        None => Ok((
            version,
            false,
            " (no config found next to it: assuming no IOMMUFD)".into(),
        )),
    }
}

/// A config file that belongs to the image at `path`: `config-X` for `bzImage-X` or
/// `vmlinuz-X`, `<image>.config`, `config-VERSION`, `config` or `.config` beside it, or the
/// tree's `.config` for `arch/x86/boot/bzImage`.
pub(crate) fn config_for_image(path: &Path, version: &str) -> Option<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let mut c = Vec::new();
    for prefix in ["bzImage-", "vmlinuz-"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            c.push(dir.join(format!("config-{rest}")));
        }
    }
    c.push(dir.join(format!("{name}.config")));
    c.push(dir.join(format!("config-{version}")));
    c.push(dir.join("config"));
    c.push(dir.join(".config"));
    if path.ends_with("arch/x86/boot/bzImage") {
        c.push(dir.join("../../../.config"));
    }
    c.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_verification() {
        let frag = "# c\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_C=n\n# CONFIG_D is not set\n";
        let good = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n";
        verify_fragment(frag, good).unwrap();
        let err = verify_fragment(frag, "CONFIG_A=y\nCONFIG_B=m\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_B=y"), "{err}");
        assert!(!err.contains("CONFIG_A"), "{err}");
        let err = verify_fragment(frag, "CONFIG_A=y\nCONFIG_B=y\nCONFIG_D=y\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_D"), "{err}");
        // CONFIG_AB=y must not satisfy CONFIG_A=y
        assert!(verify_fragment("CONFIG_A=y\n", "CONFIG_AB=y\n").is_err());
    }

    #[test]
    fn config_option_lookup() {
        let c = "CONFIG_IOMMUFD_TEST=y\n# CONFIG_IOMMUFD is not set\n";
        assert!(!config_enables(c, "CONFIG_IOMMUFD"));
        assert!(config_enables("CONFIG_IOMMUFD=m\n", "CONFIG_IOMMUFD"));
        assert!(config_enables("CONFIG_IOMMUFD=y\n", "CONFIG_IOMMUFD"));
    }

    #[test]
    fn bzimage_header() {
        let mut img = vec![0u8; 0x400];
        img[0x1fe] = 0x55;
        img[0x1ff] = 0xaa;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let s = b"7.2.13-peerdma (root@vm) #2 SMP\0";
        img[0x300..0x300 + s.len()].copy_from_slice(s);
        assert_eq!(bzimage_version(&img).unwrap(), "7.2.13-peerdma");
        assert!(bzimage_version(&img[..0x100]).is_err());
        assert!(bzimage_version(b"\x7fELF not a kernel").is_err());
    }
}
