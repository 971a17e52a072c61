//! Debian's stock kernel: which packages make it up, fetching them through a private apt,
//! and laying out its module tree for the guest's `modprobe -d`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::debian::{PrivateApt, SUITE};
use crate::initramfs;
use crate::{cache, host};

use super::image::config_enables;
use super::{lock, Kernel, KernelKind};

/// The Debian kernel ABI used when the sid metapackage cannot be read.
pub const FALLBACK_STOCK_ABI: &str = "7.2.13+deb14-amd64";

/// The metapackage whose dependencies name the current Debian kernel.
pub const STOCK_METAPACKAGE: &str = "linux-image-amd64";

/// The Debian packages that make up one stock kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockPackages {
    /// The kernel ABI / release, e.g. `7.2.13+deb14-amd64`.
    pub abi: String,
    /// `linux-binary-ABI`: the vmlinuz.
    pub binary: String,
    /// `linux-modules-ABI`: the modules.
    pub modules: String,
    /// `linux-base-ABI`: config, `modules.builtin`, `modules.order`.
    pub base: String,
}

impl StockPackages {
    /// The package names for one kernel ABI.
    pub fn for_abi(abi: &str) -> Self {
        StockPackages {
            abi: abi.to_string(),
            binary: format!("linux-binary-{abi}"),
            modules: format!("linux-modules-{abi}"),
            base: format!("linux-base-{abi}"),
        }
    }
}

/// The package names in a Debian `Depends:` value (versions and alternatives dropped:
/// every alternative is listed).
pub fn parse_depends(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(|n| n.split(':').next().unwrap_or(n).to_string())
        .collect()
}

fn deb_depends(deb: &Path) -> Result<Vec<String>> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg("Depends")
        .output()
        .context("running dpkg-deb -f")?;
    if !out.status.success() {
        bail!("dpkg-deb -f {} Depends failed", deb.display());
    }
    Ok(parse_depends(&String::from_utf8_lossy(&out.stdout)))
}

/// The ABI of the current kernel in Debian's metapackage: `linux-image-amd64` depends on
/// `linux-image-ABI`. `PEERDMA_STOCK_ABI` pins one instead.
fn stock_packages(apt: &PrivateApt) -> StockPackages {
    if let Some(abi) = std::env::var("PEERDMA_STOCK_ABI")
        .ok()
        .filter(|a| !a.is_empty())
    {
        return StockPackages::for_abi(&abi);
    }
    let from_meta = || -> Result<StockPackages> {
        let deps = deb_depends(&apt.download(STOCK_METAPACKAGE)?)?;
        let image = deps
            .iter()
            .find(|d| d.starts_with("linux-image-") && d.as_str() != STOCK_METAPACKAGE)
            .with_context(|| format!("{STOCK_METAPACKAGE} depends on no linux-image-ABI"))?;
        let abi = image.trim_start_matches("linux-image-");
        let p = StockPackages::for_abi(abi);
        // Check the split layout (binary/modules/base) is what the image package pulls in.
        let deps = deb_depends(&apt.download(image)?)?;
        for n in [&p.binary, &p.modules, &p.base] {
            if !deps.contains(n) {
                bail!("{image} does not depend on {n}; its dependencies: {deps:?}");
            }
        }
        Ok(p)
    };
    match from_meta() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "testbed: could not derive the stock kernel from {STOCK_METAPACKAGE} ({e:#}); \
                 using {FALLBACK_STOCK_ABI}"
            );
            StockPackages::for_abi(FALLBACK_STOCK_ABI)
        }
    }
}

pub(crate) fn resolve_stock() -> Result<Kernel> {
    host::ensure_packages(&[host::KMOD, host::XZ, host::GZIP, host::BUSYBOX_STATIC])?;
    let _lock = lock("stock")?;
    let kernels = cache::subdir("kernels")?;
    let current = kernels.join("stock-current");
    let assembled = match recent_stock(&current, &kernels) {
        Some(entry) => Ok(entry),
        None => PrivateApt::new(SUITE)
            .and_then(|apt| assemble_stock(&apt, &kernels))
            .inspect(|entry| {
                let name = entry.file_name().unwrap_or_default().to_string_lossy();
                let _ = std::fs::write(&current, format!("{name}\n"));
            }),
    };
    let entry = match assembled {
        Ok(entry) => entry,
        Err(e) => {
            // Offline: fall back on the newest complete stock entry, if any.
            let newest = std::fs::read_dir(&kernels)
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("stock-"))
                        && p.join(".complete").exists()
                })
                .max_by_key(|p| {
                    std::fs::metadata(p.join(".complete"))
                        .and_then(|m| m.modified())
                        .ok()
                });
            match newest {
                Some(p) => {
                    eprintln!(
                        "testbed: cannot reach Debian {SUITE} ({e:#}); using the cached stock \
                         kernel {}",
                        p.display()
                    );
                    p
                }
                None => return Err(e.context("getting Debian's stock kernel")),
            }
        }
    };
    let info = read_info(&entry.join("stock.info"))?;
    let get = |k: &str| {
        info.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{} has no {k}", entry.join("stock.info").display()))
    };
    let version = get("version")?;
    let modules_root = entry.join("modroot");
    let moddir = modules_root.join("lib/modules").join(&version);
    let initrd = initramfs::build_9p_initramfs(&moddir, &entry)?;
    let config = std::fs::read_to_string(moddir.join("config"))?;
    Ok(Kernel {
        kind: KernelKind::Stock,
        image: PathBuf::from(get("image")?),
        initrd: Some(initrd),
        version,
        modules_root: Some(modules_root),
        has_iommufd: config_enables(&config, "CONFIG_IOMMUFD"),
        source: get("source")?,
    })
}

/// The stock entry that Debian's lists named less than a day ago (`stock-current`), so that
/// every boot does not ask apt again; `PEERDMA_STOCK_ABI` must match it when set.
fn recent_stock(current: &Path, kernels: &Path) -> Option<PathBuf> {
    let age = std::fs::metadata(current)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .ok()?;
    if age.as_secs() >= 24 * 3600 {
        return None;
    }
    let name = std::fs::read_to_string(current).ok()?;
    let name = name.trim();
    if let Ok(abi) = std::env::var("PEERDMA_STOCK_ABI") {
        if !abi.is_empty() && !name.starts_with(&format!("stock-{abi}_")) {
            return None;
        }
    }
    let entry = kernels.join(name);
    entry.join(".complete").exists().then_some(entry)
}

fn read_info(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Downloads and unpacks the stock kernel's packages and lays out its module tree in a
/// cache entry (`stock-ABI_VERSION/`: `modroot/lib/modules/ABI/` with depmod's indexes,
/// `stock.info`); returns the entry.
fn assemble_stock(apt: &PrivateApt, kernels: &Path) -> Result<PathBuf> {
    let p = stock_packages(apt);
    let ver = apt.version(&p.binary)?;
    let entry = kernels.join(format!("stock-{}_{ver}", p.abi));
    if entry.join(".complete").exists() {
        return Ok(entry);
    }
    eprintln!(
        "testbed: fetching Debian {SUITE}'s kernel {} ({}, {}, {}; about 125 MB)",
        p.abi, p.binary, p.modules, p.base
    );
    let mut roots = Vec::new();
    let mut versions = Vec::new();
    for pkg in [&p.binary, &p.modules, &p.base] {
        roots.push(apt.unpack(pkg)?);
        versions.push(format!("{pkg} {}", apt.version(pkg)?));
    }
    let (bin, mods, base) = (&roots[0], &roots[1], &roots[2]);
    let release = find_release(bin, &p.abi)?;
    let vmlinuz = [
        bin.join("usr/lib/modules").join(&release).join("vmlinuz"),
        bin.join("boot").join(format!("vmlinuz-{release}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no vmlinuz for {release} in {}", bin.display()))?;
    let in_pkg = |root: &Path, file: &str| -> Option<PathBuf> {
        [
            root.join("usr/lib/modules").join(&release).join(file),
            root.join("lib/modules").join(&release).join(file),
        ]
        .into_iter()
        .find(|p| p.exists())
    };
    let kernel_dir = in_pkg(mods, "kernel")
        .with_context(|| format!("no lib/modules/{release}/kernel in {}", mods.display()))?;
    let config = in_pkg(base, "config")
        .or_else(|| {
            let p = base.join("boot").join(format!("config-{release}"));
            p.exists().then_some(p)
        })
        .with_context(|| format!("no config for {release} in {}", base.display()))?;

    let _ = std::fs::remove_dir_all(&entry);
    let modroot = entry.join("modroot");
    let moddir = modroot.join("lib/modules").join(&release);
    std::fs::create_dir_all(&moddir)?;
    std::os::unix::fs::symlink(&kernel_dir, moddir.join("kernel"))?;
    std::fs::copy(&config, moddir.join("config"))?;
    for f in [
        "modules.builtin",
        "modules.order",
        "modules.builtin.modinfo",
        "System.map",
    ] {
        if let Some(src) = in_pkg(base, f).or_else(|| in_pkg(mods, f)) {
            std::fs::copy(&src, moddir.join(f))?;
        }
    }
    let depmod = host::find_command("depmod").context("depmod is missing: apt-get install kmod")?;
    let out = Command::new(&depmod)
        .arg("-b")
        .arg(&modroot)
        .arg(&release)
        .output()
        .context("running depmod")?;
    if !out.status.success() || !moddir.join("modules.dep").exists() {
        bail!(
            "depmod -b {} {release} failed: {}",
            modroot.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let source = format!(
        "Debian {SUITE} packages {} (modules_root {})",
        versions.join(", "),
        modroot.display()
    );
    std::fs::write(
        entry.join("stock.info"),
        format!(
            "version={release}\nimage={}\nsource={source}\n",
            vmlinuz.display()
        ),
    )?;
    std::fs::write(entry.join(".complete"), b"")?;
    Ok(entry)
}

/// The kernel release directory in an unpacked `linux-binary-*` package (prefers `abi`).
fn find_release(bin: &Path, abi: &str) -> Result<String> {
    let dir = bin.join("usr/lib/modules");
    if dir.join(abi).is_dir() {
        return Ok(abi.to_string());
    }
    let found: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "cannot tell the kernel release in {} (found {found:?}, wanted {abi})",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{modules_for_guest, modules_on_demand, resolve, KernelChoice};
    use super::*;

    #[test]
    fn depends_parse() {
        let d = "linux-base-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)";
        assert_eq!(
            parse_depends(d),
            ["linux-base-amd64", "linux-image-7.2.13+deb14-amd64"]
        );
        let d = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, kmod:any";
        assert_eq!(
            parse_depends(d),
            ["dracut", "initramfs-tools", "linux-initramfs-tool", "kmod"]
        );
    }

    #[test]
    fn stock_names() {
        let p = StockPackages::for_abi("7.2.13+deb14-amd64");
        assert_eq!(p.binary, "linux-binary-7.2.13+deb14-amd64");
        assert_eq!(p.modules, "linux-modules-7.2.13+deb14-amd64");
        assert_eq!(p.base, "linux-base-7.2.13+deb14-amd64");
    }

    /// Fetches Debian's stock kernel (network, ~125 MB once) and checks that modprobe can
    /// resolve every module the guest loads. `cargo test -- --ignored stock_kernel`.
    #[test]
    #[ignore = "downloads Debian's stock kernel packages (network, ~125 MB once)"]
    fn stock_kernel_resolves_and_its_modules_are_found() {
        let k = resolve(&KernelChoice::Stock).unwrap();
        assert_eq!(k.kind, KernelKind::Stock);
        assert!(!k.has_iommufd);
        assert!(k.initrd.as_ref().unwrap().exists());
        let root = k.modules_root.unwrap();
        let modprobe = host::find_command("modprobe").unwrap();
        for m in modules_for_guest().iter().chain(modules_on_demand()) {
            let out = Command::new(&modprobe)
                .arg("-d")
                .arg(&root)
                .args(["-S", &k.version, "-n", "-q", m])
                .output()
                .unwrap();
            assert!(out.status.success(), "modprobe -n {m}: {out:?}");
        }
    }
}
