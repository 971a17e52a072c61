//! Which Linux kernel the testbed boots, and getting it onto this machine.
//!
//! - [`KernelChoice::Reference`]: the project's own 7.2 build with everything built in (vIOMMU,
//!   IOMMUFD, VFIO cdev + container, P2PDMA, 9p, ...), from `PEERDMA_REFERENCE_KERNEL`, the
//!   shared prebuilt, the cache, or built here from Debian's `linux-source-7.2` with
//!   `tests/kernel/peerdma.config` (about 15 minutes on 2 cores, done once).
//! - [`KernelChoice::Stock`]: Debian sid's own kernel packages, unmodified: a modular kernel
//!   without IOMMUFD that boots through the 9p-root initramfs of [`crate::initramfs`].
//! - [`KernelChoice::Path`]: any bzImage (e.g. a developer's tree), booted as is.
//!
//! Progress goes to stderr as lines starting with `testbed:`.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};

use crate::debian::{PrivateApt, SUITE};
use crate::initramfs::{self, fnv1a64};
use crate::{cache, host};

/// The project's kernel config fragment, applied on `make defconfig kvm_guest.config`.
pub const FRAGMENT: &str = include_str!("../kernel/peerdma.config");

/// The Debian source package of the reference kernel.
pub const SOURCE_PACKAGE: &str = "linux-source-7.2";

/// File name of the shared prebuilt reference kernel (in `<workspace>/../shared/testbed/`).
pub const PREBUILT_NAME: &str = "bzImage-7.2.13-peerdma";

/// The Debian kernel ABI used when the sid metapackage cannot be read.
pub const FALLBACK_STOCK_ABI: &str = "7.2.13+deb14-amd64";

/// The metapackage whose dependencies name the current Debian kernel.
pub const STOCK_METAPACKAGE: &str = "linux-image-amd64";

/// Which kernel to boot, as chosen by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// The project's own kernel with everything built in.
    Reference,
    /// Debian's stock kernel from sid.
    Stock,
    /// A bzImage at this path.
    Path(PathBuf),
}

impl FromStr for KernelChoice {
    type Err = anyhow::Error;

    /// `reference`, `stock` (any case), or a path to a bzImage (anything else that is not
    /// empty; it need not exist yet).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "" => bail!("empty kernel choice: use `reference`, `stock` or a bzImage path"),
            r if r.eq_ignore_ascii_case("reference") => Ok(KernelChoice::Reference),
            r if r.eq_ignore_ascii_case("stock") => Ok(KernelChoice::Stock),
            p => Ok(KernelChoice::Path(PathBuf::from(p))),
        }
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelChoice::Reference => f.write_str("reference"),
            KernelChoice::Stock => f.write_str("stock"),
            KernelChoice::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What kind of kernel a [`Kernel`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// The project's reference build (everything built in, no initrd).
    Reference,
    /// Debian's stock kernel (modules, booted through the 9p-root initramfs).
    Stock,
    /// A user-supplied bzImage.
    Custom,
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Which kind it is.
    pub kind: KernelKind,
    /// The bzImage / vmlinuz to pass to QEMU's `-kernel`.
    pub image: PathBuf,
    /// The initramfs to pass to `-initrd` (stock only); see [`crate::initramfs`] for the
    /// command line it expects.
    pub initrd: Option<PathBuf>,
    /// The kernel release (`uname -r` in the guest), e.g. `7.2.13` or `7.2.13+deb14-amd64`.
    pub version: String,
    /// Stock only: a directory `D` with `D/lib/modules/VERSION/modules.dep`, so that
    /// `modprobe -d D MODULE` works in the guest (whose root is the host's).
    pub modules_root: Option<PathBuf>,
    /// Whether the kernel's config has `CONFIG_IOMMUFD` (built in or as a module).
    pub has_iommufd: bool,
    /// Where it came from, for humans and for test records.
    pub source: String,
}

/// Resolves a choice to a bootable kernel, fetching or building what is missing.
pub fn resolve(choice: &KernelChoice) -> Result<Kernel> {
    match choice {
        KernelChoice::Reference => resolve_reference(),
        KernelChoice::Stock => resolve_stock(),
        KernelChoice::Path(p) => {
            let (version, has_iommufd, config_note) = inspect_image(p)?;
            Ok(Kernel {
                kind: KernelKind::Custom,
                image: p.clone(),
                initrd: None,
                version,
                modules_root: None,
                has_iommufd,
                source: format!("user-supplied bzImage {}{config_note}", p.display()),
            })
        }
    }
}

/// The modules the guest init must `modprobe -d <modules_root>` on the stock kernel, in
/// this order, before binding devices. Each was checked to load in a stock 7.2.13 guest.
///
/// Not listed: the 9p root's modules (the initramfs loaded them), and what Debian builds in:
/// the Intel IOMMU, virtio-pci and `udmabuf` (a `bool` option, so it is not even in
/// `modules.builtin` and `modprobe udmabuf` fails). On the reference kernel everything is
/// built in and nothing needs loading.
///
/// Only what binding the devices needs is loaded at boot (each modprobe reads over 9p under
/// TCG, about a second apiece); [`modules_on_demand`] lists what a command may load itself
/// with `modprobe -d "$PEERDMA_MODULES_ROOT" NAME`.
pub fn modules_for_guest() -> &'static [&'static str] {
    &["vfio", "vfio_iommu_type1", "vfio-pci"]
}

/// Modules a stock guest has but does not load at boot: DRM and RDMA importers, veth.
/// Each was checked to load in a stock 7.2.13 guest.
pub fn modules_on_demand() -> &'static [&'static str] {
    &[
        "virtio_gpu",
        "vgem",
        "veth",
        "ib_uverbs",
        "rdma_rxe",
        "rdma_ucm",
    ]
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared prebuilt reference kernel's path (it may not exist).
pub fn shared_prebuilt() -> PathBuf {
    let p = workspace_root()
        .join("../shared/testbed")
        .join(PREBUILT_NAME);
    p.canonicalize().unwrap_or(p)
}

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
fn inspect_image(path: &Path) -> Result<(String, bool, String)> {
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
fn config_for_image(path: &Path, version: &str) -> Option<PathBuf> {
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

/// An exclusive lock on a file in the cache, held until dropped.
#[derive(Debug)]
struct CacheLock(#[allow(dead_code)] File);

fn lock(name: &str) -> Result<CacheLock> {
    use rustix::fs::{flock, FlockOperation};
    let path = cache::subdir("kernels")?.join(format!(".{name}.lock"));
    let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        eprintln!(
            "testbed: waiting for another testbed process ({} is locked)",
            path.display()
        );
        flock(&f, FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(CacheLock(f))
}

// ---------------------------------------------------------------------------------------
// Reference kernel

fn resolve_reference() -> Result<Kernel> {
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

// ---------------------------------------------------------------------------------------
// Stock kernel

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

fn resolve_stock() -> Result<Kernel> {
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
    use super::*;

    #[test]
    fn choice_parses() {
        assert_eq!(
            "reference".parse::<KernelChoice>().unwrap(),
            KernelChoice::Reference
        );
        assert_eq!(
            "Stock".parse::<KernelChoice>().unwrap(),
            KernelChoice::Stock
        );
        assert_eq!(
            "/boot/vmlinuz-x".parse::<KernelChoice>().unwrap(),
            KernelChoice::Path("/boot/vmlinuz-x".into())
        );
        assert_eq!(
            "./reference".parse::<KernelChoice>().unwrap(),
            KernelChoice::Path("./reference".into())
        );
        assert!("".parse::<KernelChoice>().is_err());
        for s in ["reference", "stock", "/x/bzImage"] {
            assert_eq!(s.parse::<KernelChoice>().unwrap().to_string(), s);
        }
    }

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
    fn the_project_fragment_matches_the_shared_prebuilt_config() {
        let cfg = workspace_root().join("../shared/testbed/config-7.2.13-peerdma");
        if let Ok(text) = std::fs::read_to_string(cfg) {
            verify_fragment(FRAGMENT, &text).unwrap();
            assert!(config_enables(&text, "CONFIG_IOMMUFD"));
        }
    }

    #[test]
    fn config_option_lookup() {
        let c = "CONFIG_IOMMUFD_TEST=y\n# CONFIG_IOMMUFD is not set\n";
        assert!(!config_enables(c, "CONFIG_IOMMUFD"));
        assert!(config_enables("CONFIG_IOMMUFD=m\n", "CONFIG_IOMMUFD"));
        assert!(config_enables("CONFIG_IOMMUFD=y\n", "CONFIG_IOMMUFD"));
    }

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

    /// Fetches Debian's stock kernel (network, ~125 MB once) and checks that modprobe can
    /// resolve every module the guest loads. `cargo test -- --ignored stock_kernel`.
    #[test]
    #[ignore]
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

    /// Fetches Debian's kernel source and configures it with the fragment (no compile).
    /// `cargo test -- --ignored reference_config`.
    #[test]
    #[ignore]
    fn reference_config_from_source_has_the_fragment() {
        let b = ReferenceBuild::configure().unwrap();
        let cfg = std::fs::read_to_string(b.out.join(".config")).unwrap();
        assert!(config_enables(&cfg, "CONFIG_IOMMUFD"));
    }

    #[test]
    fn stock_names() {
        let p = StockPackages::for_abi("7.2.13+deb14-amd64");
        assert_eq!(p.binary, "linux-binary-7.2.13+deb14-amd64");
        assert_eq!(p.modules, "linux-modules-7.2.13+deb14-amd64");
        assert_eq!(p.base, "linux-base-7.2.13+deb14-amd64");
    }
}
