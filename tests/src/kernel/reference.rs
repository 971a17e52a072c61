//! The reference kernel: `PEERDMA_REFERENCE_KERNEL`, the shared prebuilt, the cache, or a
//! build here from Debian's `linux-source-7.2` with the project's fragment.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::debian::{PrivateApt, SUITE};
use crate::initramfs::fnv1a64;
use crate::{cache, host};

use super::image::{config_enables, config_for_image, inspect_image, verify_fragment};
use super::{lock, workspace_root, CacheLock, Kernel, KernelKind};

/// The project's kernel config fragment, applied on `make defconfig kvm_guest.config`.
pub const FRAGMENT: &str = include_str!("../../kernel/peerdma.config");

/// The Debian source package of the reference kernel.
pub const SOURCE_PACKAGE: &str = "linux-source-7.2";

/// File name of the shared prebuilt reference kernel (in `<workspace>/../shared/testbed/`).
pub const PREBUILT_NAME: &str = "bzImage-7.2.13-peerdma";

/// The shared prebuilt reference kernel's path (it may not exist).
pub fn shared_prebuilt() -> PathBuf {
    let p = workspace_root()
        .join("../shared/testbed")
        .join(PREBUILT_NAME);
    p.canonicalize().unwrap_or(p)
}

pub(crate) fn resolve_reference() -> Result<Kernel> {
    if let Some(p) = std::env::var_os("PEERDMA_REFERENCE_KERNEL") {
        let p = PathBuf::from(p);
        let (version, has_iommufd, note) =
            inspect_image(&p).context("PEERDMA_REFERENCE_KERNEL must name a bzImage")?;
        return Ok(Kernel {
            kind: KernelKind::Reference,
            image: p.clone(),
            initrd: None,
            version,
            modules_root: None,
            has_iommufd,
            source: format!("PEERDMA_REFERENCE_KERNEL={}{note}", p.display()),
        });
    }
    let shared = shared_prebuilt();
    if shared.exists() {
        match inspect_image(&shared).and_then(|i| shared_matches_fragment(&shared, i)) {
            Ok((version, has_iommufd, note)) => {
                return Ok(Kernel {
                    kind: KernelKind::Reference,
                    source: format!("shared prebuilt {}{note}", shared.display()),
                    image: shared,
                    initrd: None,
                    version,
                    modules_root: None,
                    has_iommufd,
                });
            }
            Err(e) => eprintln!(
                "testbed: ignoring the shared prebuilt {}: {e:#}",
                shared.display()
            ),
        }
    }
    let entry = reference_cache_entry()?;
    if let Some(k) = cached_reference(&entry)? {
        return Ok(k);
    }
    let lock = lock("reference-build")?;
    if let Some(k) = cached_reference(&entry)? {
        return Ok(k); // another process built it while we waited
    }
    let build = ReferenceBuild::configure_locked(lock)?;
    build.build()?;
    cached_reference(&entry)?.context("the reference build finished but left no cache entry")
}

/// Accepts the shared prebuilt only if its config has everything [`FRAGMENT`] asks for, so
/// that a change to `tests/kernel/peerdma.config` is not silently ignored.
fn shared_matches_fragment(
    image: &Path,
    info: (String, bool, String),
) -> Result<(String, bool, String)> {
    let cfg = config_for_image(image, &info.0)
        .with_context(|| format!("no config next to {}", image.display()))?;
    let text = std::fs::read_to_string(&cfg)?;
    verify_fragment(FRAGMENT, &text).with_context(|| {
        format!(
            "{} was not built with the current tests/kernel/peerdma.config",
            cfg.display()
        )
    })?;
    Ok(info)
}

/// The cache directory of the reference build for the current fragment.
pub fn reference_cache_entry() -> Result<PathBuf> {
    Ok(cache::subdir("kernels")?.join(format!("reference-{:016x}", fnv1a64(FRAGMENT.as_bytes()))))
}

fn cached_reference(entry: &Path) -> Result<Option<Kernel>> {
    if !entry.join(".complete").exists() {
        return Ok(None);
    }
    let image = entry.join("bzImage");
    let config = std::fs::read_to_string(entry.join("config"))?;
    let (version, _, _) = inspect_image(&image)?;
    let from = std::fs::read_to_string(entry.join("source.txt")).unwrap_or_default();
    Ok(Some(Kernel {
        kind: KernelKind::Reference,
        image,
        initrd: None,
        version,
        modules_root: None,
        has_iommufd: config_enables(&config, "CONFIG_IOMMUFD"),
        source: format!("cached build {} ({})", entry.display(), from.trim()),
    }))
}

/// A configured (not yet compiled) reference kernel build tree.
#[derive(Debug)]
pub struct ReferenceBuild {
    /// The unpacked kernel source.
    pub src: PathBuf,
    /// The out-of-tree build directory (`make O=`), holding `.config`.
    pub out: PathBuf,
    /// Where the finished bzImage and config are cached.
    pub entry: PathBuf,
    /// Debian's version of the source package.
    pub source_version: String,
    log: PathBuf,
    _lock: CacheLock,
}

impl ReferenceBuild {
    /// Fetches and unpacks Debian's kernel source, then configures it: `make defconfig
    /// kvm_guest.config`, merge [`FRAGMENT`], `make olddefconfig`, and verifies that every
    /// option of the fragment made it.
    /// Holds the cache's build lock (other testbed processes wait) until dropped.
    pub fn configure() -> Result<Self> {
        Self::configure_locked(lock("reference-build")?)
    }

    fn configure_locked(lock: CacheLock) -> Result<Self> {
        eprintln!(
            "testbed: no reference kernel found (no PEERDMA_REFERENCE_KERNEL, no {}, no cache \
             entry): building it from Debian's {SOURCE_PACKAGE}. This takes about 15 minutes on \
             2 cores and is done once.",
            shared_prebuilt().display()
        );
        host::ensure_packages(host::KERNEL_BUILD_DEPS)?;
        let apt = PrivateApt::new(SUITE)?;
        let source_version = apt.version(SOURCE_PACKAGE)?;
        eprintln!("testbed: fetching {SOURCE_PACKAGE} {source_version} from Debian {SUITE}");
        let pkg = apt.unpack(SOURCE_PACKAGE)?;
        let kernels = cache::subdir("kernels")?;
        let src_root = kernels.join(format!("src-{SOURCE_PACKAGE}_{source_version}"));
        let src = untar_source(&pkg, &src_root)?;
        let entry = reference_cache_entry()?;
        let out = kernels.join(format!(
            "build-{}",
            entry.file_name().unwrap().to_string_lossy()
        ));
        std::fs::create_dir_all(&out)?;
        std::fs::create_dir_all(&entry)?;
        let log = entry.join("build.log");
        let b = ReferenceBuild {
            src,
            out,
            entry,
            source_version,
            log,
            _lock: lock,
        };
        std::fs::write(&b.log, b"")?;
        eprintln!(
            "testbed: configuring in {} (log: {})",
            b.out.display(),
            b.log.display()
        );
        b.make(&["defconfig", "kvm_guest.config"])?;
        let frag = b.out.join("peerdma.config");
        std::fs::write(&frag, FRAGMENT)?;
        b.run(
            Command::new(b.src.join("scripts/kconfig/merge_config.sh"))
                .current_dir(&b.src)
                .arg("-m")
                .arg("-O")
                .arg(&b.out)
                .arg(b.out.join(".config"))
                .arg(&frag),
            "merge_config.sh",
        )?;
        b.make(&["olddefconfig"])?;
        let config = std::fs::read_to_string(b.out.join(".config"))?;
        verify_fragment(FRAGMENT, &config)
            .with_context(|| format!("checking {}", b.out.join(".config").display()))?;
        eprintln!("testbed: kernel config verified against tests/kernel/peerdma.config");
        Ok(b)
    }

    /// Compiles the bzImage (`make -j$(nproc) bzImage`) and stores it with its config in
    /// the cache; the build tree and the unpacked source are removed afterwards unless
    /// `PEERDMA_KEEP_KERNEL_BUILD` is set.
    pub fn build(&self) -> Result<()> {
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        let started = std::time::Instant::now();
        eprintln!(
            "testbed: compiling the reference kernel with {jobs} jobs (about 15 minutes on 2 \
             cores; log: {})",
            self.log.display()
        );
        self.make(&[&format!("-j{jobs}"), "bzImage"])?;
        let image = self.out.join("arch/x86/boot/bzImage");
        std::fs::copy(&image, self.entry.join("bzImage"))
            .with_context(|| format!("copying {}", image.display()))?;
        std::fs::copy(self.out.join(".config"), self.entry.join("config"))?;
        std::fs::write(
            self.entry.join("source.txt"),
            format!(
                "built here from Debian {SUITE} {SOURCE_PACKAGE} {} with tests/kernel/peerdma.config\n",
                self.source_version
            ),
        )?;
        std::fs::write(self.entry.join(".complete"), b"")?;
        eprintln!(
            "testbed: reference kernel built in {:.0?}: {}",
            started.elapsed(),
            self.entry.join("bzImage").display()
        );
        if std::env::var_os("PEERDMA_KEEP_KERNEL_BUILD").is_none() {
            let _ = std::fs::remove_dir_all(&self.out);
            if let Some(root) = self.src.parent() {
                let _ = std::fs::remove_dir_all(root);
            }
        }
        Ok(())
    }

    fn make(&self, targets: &[&str]) -> Result<()> {
        self.run(
            Command::new("make")
                .current_dir(&self.src)
                .arg(format!("O={}", self.out.display()))
                .args(targets),
            &format!("make {}", targets.join(" ")),
        )
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new().append(true).open(&self.log)?;
        let status = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("running {what}"))?;
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{what} failed ({status}) in {}; last lines of {}:\n{}",
                self.out.display(),
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

/// Untars the source tarball in an unpacked `linux-source-*` package into `dest` (once) and
/// returns the tree's top directory.
fn untar_source(pkg: &Path, dest: &Path) -> Result<PathBuf> {
    let marker = dest.join(".peerdma-untarred");
    let usr_src = pkg.join("usr/src");
    let tarball = std::fs::read_dir(&usr_src)
        .with_context(|| format!("reading {}", usr_src.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".tar"))
        .with_context(|| format!("no kernel source tarball in {}", usr_src.display()))?;
    let top = tarball
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split(".tar")
        .next()
        .unwrap()
        .to_string();
    if !marker.exists() {
        eprintln!(
            "testbed: unpacking {} into {}",
            tarball.display(),
            dest.display()
        );
        let _ = std::fs::remove_dir_all(dest);
        std::fs::create_dir_all(dest)?;
        let status = Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(dest)
            .status()
            .context("running tar")?;
        if !status.success() {
            bail!("tar -xf {} failed ({status})", tarball.display());
        }
        std::fs::write(&marker, b"")?;
    }
    let tree = dest.join(&top);
    if !tree.join("Makefile").exists() {
        bail!("{} has no kernel Makefile", tree.display());
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prebuilt beside the repository (`../shared/testbed`, where the suite finds its
    /// reference kernel) must match the fragment, or the testbed would build its own.
    #[test]
    fn the_project_fragment_matches_the_shared_prebuilt_config() {
        let cfg = workspace_root().join("../shared/testbed/config-7.2.13-peerdma");
        let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the shared prebuilt reference kernel and its config belong there",
                cfg.display()
            )
        });
        verify_fragment(FRAGMENT, &text).unwrap();
        assert!(config_enables(&text, "CONFIG_IOMMUFD"));
    }

    /// Fetches Debian's kernel source and configures it with the fragment (no compile).
    /// `cargo test -- --ignored reference_config`.
    #[test]
    #[ignore = "downloads Debian's kernel source package (network, ~150 MB once)"]
    fn reference_config_from_source_has_the_fragment() {
        let b = ReferenceBuild::configure().unwrap();
        let cfg = std::fs::read_to_string(b.out.join(".config")).unwrap();
        assert!(config_enables(&cfg, "CONFIG_IOMMUFD"));
    }
}
