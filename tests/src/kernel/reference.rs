//! The reference kernel and its "ahead" flavour: `PEERDMA_REFERENCE_KERNEL` /
//! `PEERDMA_AHEAD_KERNEL`, the shared prebuilt, the cache, or a build here from Debian's
//! `linux-source-7.2` with the project's fragment (and, for the ahead kernel, the carried
//! diff of `tests/kernel/ahead.md` applied first).

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

/// The two posted series of the ahead kernel as one diff against [`SOURCE_PACKAGE`]
/// 7.2.13 (`tests/kernel/ahead.md` names them and their authors).
pub const AHEAD_DIFF: &str = "tests/kernel/ahead-7.2.13.diff";

/// The Debian source package of the reference kernel.
pub const SOURCE_PACKAGE: &str = "linux-source-7.2";

/// File name of the shared prebuilt reference kernel (in `<workspace>/../shared/testbed/`).
pub const PREBUILT_NAME: &str = "bzImage-7.2.13-peerdma";

/// File name of the shared prebuilt ahead kernel (in `<workspace>/../shared/testbed/`).
pub const AHEAD_PREBUILT_NAME: &str = "bzImage-7.2.13-ahead";

/// Which of the two kernels built from the project's fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Debian's 7.2 source as is.
    Reference,
    /// With [`AHEAD_DIFF`] applied.
    Ahead,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Reference => "reference",
            Flavor::Ahead => "ahead",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Flavor::Reference => "PEERDMA_REFERENCE_KERNEL",
            Flavor::Ahead => "PEERDMA_AHEAD_KERNEL",
        }
    }

    fn prebuilt(self) -> &'static str {
        match self {
            Flavor::Reference => PREBUILT_NAME,
            Flavor::Ahead => AHEAD_PREBUILT_NAME,
        }
    }

    fn kind(self) -> KernelKind {
        match self {
            Flavor::Reference => KernelKind::Reference,
            Flavor::Ahead => KernelKind::Ahead,
        }
    }

    /// The carried diff's text (ahead only).
    fn patch(self) -> Result<Option<String>> {
        match self {
            Flavor::Reference => Ok(None),
            Flavor::Ahead => {
                let p = workspace_root().join(AHEAD_DIFF);
                std::fs::read_to_string(&p)
                    .map(Some)
                    .with_context(|| format!("reading {}", p.display()))
            }
        }
    }
}

/// The shared prebuilt reference kernel's path (it may not exist).
pub fn shared_prebuilt() -> PathBuf {
    shared_prebuilt_of(Flavor::Reference)
}

fn shared_prebuilt_of(flavor: Flavor) -> PathBuf {
    let p = workspace_root()
        .join("../shared/testbed")
        .join(flavor.prebuilt());
    p.canonicalize().unwrap_or(p)
}

pub(crate) fn resolve(flavor: Flavor) -> Result<Kernel> {
    let kind = flavor.kind();
    if let Some(p) = std::env::var_os(flavor.env()) {
        let p = PathBuf::from(p);
        let (version, has_iommufd, note) =
            inspect_image(&p).with_context(|| format!("{} must name a bzImage", flavor.env()))?;
        return Ok(Kernel {
            kind,
            image: p.clone(),
            initrd: None,
            version,
            modules_root: None,
            has_iommufd,
            source: format!("{}={}{note}", flavor.env(), p.display()),
        });
    }
    let shared = shared_prebuilt_of(flavor);
    if shared.exists() {
        match inspect_image(&shared).and_then(|i| shared_matches_fragment(&shared, i)) {
            Ok((version, has_iommufd, note)) => {
                return Ok(Kernel {
                    kind,
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
    let entry = cache_entry(flavor)?;
    if let Some(k) = cached(&entry, kind)? {
        return Ok(k);
    }
    let lock = lock(&format!("{}-build", flavor.name()))?;
    if let Some(k) = cached(&entry, kind)? {
        return Ok(k); // another process built it while we waited
    }
    let build = ReferenceBuild::configure_locked(lock, flavor)?;
    build.build()?;
    cached(&entry, kind)?.context("the kernel build finished but left no cache entry")
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
    cache_entry(Flavor::Reference)
}

/// The cache directory of a flavour's build: keyed by the fragment, and the diff if any.
fn cache_entry(flavor: Flavor) -> Result<PathBuf> {
    let mut key = FRAGMENT.to_string();
    if let Some(diff) = flavor.patch()? {
        key.push_str(&diff);
    }
    Ok(cache::subdir("kernels")?.join(format!(
        "{}-{:016x}",
        flavor.name(),
        fnv1a64(key.as_bytes())
    )))
}

fn cached(entry: &Path, kind: KernelKind) -> Result<Option<Kernel>> {
    if !entry.join(".complete").exists() {
        return Ok(None);
    }
    let image = entry.join("bzImage");
    let config = std::fs::read_to_string(entry.join("config"))?;
    let (version, _, _) = inspect_image(&image)?;
    let from = std::fs::read_to_string(entry.join("source.txt")).unwrap_or_default();
    Ok(Some(Kernel {
        kind,
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
    /// Which kernel this builds.
    pub flavor: Flavor,
    log: PathBuf,
    _lock: CacheLock,
}

impl ReferenceBuild {
    /// Fetches and unpacks Debian's kernel source, then configures it: `make defconfig
    /// kvm_guest.config`, merge [`FRAGMENT`], `make olddefconfig`, and verifies that every
    /// option of the fragment made it.
    /// Holds the cache's build lock (other testbed processes wait) until dropped.
    pub fn configure() -> Result<Self> {
        Self::configure_locked(lock("reference-build")?, Flavor::Reference)
    }

    fn configure_locked(lock: CacheLock, flavor: Flavor) -> Result<Self> {
        eprintln!(
            "testbed: no {} kernel found (no {}, no {}, no cache entry): building it from \
             Debian's {SOURCE_PACKAGE}. This takes about 15 minutes on 2 cores and is done once.",
            flavor.name(),
            flavor.env(),
            shared_prebuilt_of(flavor).display()
        );
        host::ensure_packages(host::KERNEL_BUILD_DEPS)?;
        let apt = PrivateApt::new(SUITE)?;
        let source_version = apt.version(SOURCE_PACKAGE)?;
        eprintln!("testbed: fetching {SOURCE_PACKAGE} {source_version} from Debian {SUITE}");
        let pkg = apt.unpack(SOURCE_PACKAGE)?;
        let kernels = cache::subdir("kernels")?;
        let src_root = kernels.join(format!(
            "src-{SOURCE_PACKAGE}_{source_version}-{}",
            flavor.name()
        ));
        let src = untar_source(&pkg, &src_root)?;
        if let Some(diff) = flavor.patch()? {
            apply_once(&src, &diff)?;
        }
        let entry = cache_entry(flavor)?;
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
            flavor,
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
            "testbed: compiling the {} kernel with {jobs} jobs (about 15 minutes on 2 cores; \
             log: {})",
            self.flavor.name(),
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
                "built here from Debian {SUITE} {SOURCE_PACKAGE} {} with tests/kernel/peerdma.config{}\n",
                self.source_version,
                match self.flavor {
                    Flavor::Reference => String::new(),
                    Flavor::Ahead => format!(" and {AHEAD_DIFF}"),
                }
            ),
        )?;
        std::fs::write(self.entry.join(".complete"), b"")?;
        eprintln!(
            "testbed: {} kernel built in {:.0?}: {}",
            self.flavor.name(),
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

/// Applies `diff` (`patch -p1`) to the unpacked tree once: a marker file records it.
fn apply_once(tree: &Path, diff: &str) -> Result<()> {
    use std::io::Write as _;
    let marker = tree.join(".peerdma-patched");
    if marker.exists() {
        return Ok(());
    }
    eprintln!("testbed: applying {AHEAD_DIFF} to {}", tree.display());
    let mut child = Command::new("patch")
        .args(["-p1", "--forward", "--batch", "--quiet"])
        .current_dir(tree)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running patch (install it: apt-get install patch)")?;
    child
        .stdin
        .take()
        .context("patch's stdin")?
        .write_all(diff.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "{AHEAD_DIFF} does not apply to {} ({status}): delete that tree and run again",
            tree.display()
        );
    }
    std::fs::write(&marker, b"")?;
    Ok(())
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

    /// The ahead prebuilt is the same fragment plus what the two series add, and the
    /// carried diff is the one it was built from.
    #[test]
    fn the_ahead_prebuilt_is_the_fragment_plus_the_carried_series() {
        let shared = workspace_root().join("../shared/testbed");
        let text = std::fs::read_to_string(shared.join("config-7.2.13-ahead")).unwrap();
        verify_fragment(FRAGMENT, &text).unwrap();
        assert!(config_enables(&text, "CONFIG_PCI_P2PDMA_CORE"));
        assert!(config_enables(&text, "CONFIG_DMABUF_TOKEN"));
        let carried = Flavor::Ahead.patch().unwrap().unwrap();
        let theirs = std::fs::read_to_string(shared.join("ahead/ahead-7.2.13.diff")).unwrap();
        assert!(
            carried == theirs,
            "{AHEAD_DIFF} differs from ../shared/testbed/ahead"
        );
        assert!(cache_entry(Flavor::Ahead).unwrap() != cache_entry(Flavor::Reference).unwrap());
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
