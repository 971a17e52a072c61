//! Guest side of the export suite (`tests/tests/export.rs`) and of the export latency
//! benchmark: drives peerdma-exporter against the testbed's vfio-pci devices and prints
//! one JSON line per check with the real values (sizes, errnos, fd counts, states), for
//! the host to assert on. It decides nothing itself: a failed check is a line with
//! unexpected values, and the exit status is 0 unless the program could not run.
//!
//! Usage (inside the testbed, as root):
//!
//! ```text
//! peerdma-guest-export [--access auto|cdev|group] [--devices ROLE,..] [--c-lib PATH]
//!                      [--cycles N] [--batches N] SCENARIO..
//! ```
//!
//! Scenarios: `open`, `handover`, `mmap`, `exports`, `errors`, `revoke`, `iommufd`,
//! `leaks`, `all` (all of these), and `bench` (not part of `all`). Every line carries
//! `scenario`, `check` and `access`; per-device lines also `role` and `bdf`.
//!
//! Where `/dev/iommu` exists, whether the kernel really revoked a buffer is asked of the
//! kernel: `IOMMU_IOAS_MAP_FILE` of the buffer into a private IOAS attaches to it, which
//! the exporter refuses with ENODEV while the buffer is revoked (the `kernel` fields).
//!
//! `--c-lib` names the shared object built from `tests/c/export_bench.c` (raw exports
//! with arguments the library never builds, and the benchmark's C baseline); `bench`
//! compiles it with `cc` when it is not given.

use std::ffi::{c_int, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use peerdma_exporter::{
    AccessPath, Bdf, Device, DmaBuf, DmaRange, Errno, Error, ExportOptions, OpenOptions, PassedFds,
    PowerState, RevokeEvent,
};
use peerdma_testbed::manifest::{Manifest, ManifestDevice, GUEST_SCRATCH};
use peerdma_testbed::process::{fd_count as fds, map_count as maps};
use peerdma_uapi::iommufd::{
    iommu_ioas_alloc, iommu_ioas_map, iommu_ioas_map_file, iommu_ioas_unmap, IOMMU_IOAS_ALLOC,
    IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE,
    IOMMU_IOAS_UNMAP,
};
use peerdma_uapi::vfio::{
    vfio_device_attach_iommufd_pt, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_RESET,
};
use rustix::fs::{Mode, OFlags};
use serde_json::{json, Map, Value};

/// Ranges the kernel accepts at most: the range list is copied with one kmalloc, which
/// cannot exceed 4 MiB (KMALLOC_MAX_SIZE on x86-64), 16 bytes per range.
const KMALLOC_RANGES_LIMIT: usize = (4 << 20) / 16;

/// What the command line asks for.
struct Args {
    access: AccessPath,
    access_name: String,
    roles: Option<Vec<String>>,
    c_lib: Option<PathBuf>,
    cycles: u32,
    batches: u32,
    scenarios: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        access: AccessPath::Auto,
        access_name: "auto".into(),
        roles: None,
        c_lib: None,
        cycles: 10_000,
        batches: 40,
        scenarios: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--access" => {
                let v = value()?;
                args.access = match v.as_str() {
                    "auto" => AccessPath::Auto,
                    "cdev" => AccessPath::Cdev,
                    "group" => AccessPath::Group,
                    other => bail!("--access {other}: use auto, cdev or group"),
                };
                args.access_name = v;
            }
            "--devices" => args.roles = Some(value()?.split(',').map(str::to_owned).collect()),
            "--c-lib" => args.c_lib = Some(PathBuf::from(value()?)),
            "--cycles" => args.cycles = value()?.parse().context("--cycles")?,
            "--batches" => args.batches = value()?.parse().context("--batches")?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => args.scenarios.push(s.to_owned()),
        }
    }
    if args.scenarios.iter().any(|s| s == "all") {
        args.scenarios.retain(|s| s != "all");
        for s in [
            "open", "handover", "mmap", "exports", "errors", "revoke", "iommufd", "leaks",
        ] {
            args.scenarios.push(s.into());
        }
    }
    if args.scenarios.is_empty() {
        bail!("name at least one scenario: open exports errors revoke iommufd leaks all bench");
    }
    Ok(args)
}

/// Prints one JSON line.
fn emit(scenario: &str, check: &str, access: &str, dev: Option<&ManifestDevice>, fields: Value) {
    let mut m = Map::new();
    m.insert("scenario".into(), scenario.into());
    m.insert("check".into(), check.into());
    m.insert("access".into(), access.into());
    if let Some(d) = dev {
        m.insert("role".into(), d.role.clone().into());
        m.insert("bdf".into(), d.bdf.clone().into());
    }
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    println!("{}", Value::Object(m));
}

/// The kernel's name of an errno.
fn errno_name(e: Errno) -> String {
    let n = e.raw_os_error();
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("E#{n}"),
    };
    name.to_owned()
}

/// The variant name of an error (`RangeUnaligned`, `Export`, ...).
fn variant(e: &Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// An error as JSON: variant, errno, whether the library predicted it, the message.
fn err_json(e: &Error) -> Value {
    json!({
        "ok": false,
        "variant": variant(e),
        "errno": e.errno().map(errno_name),
        "predicted": e.is_predicted(),
        "message": e.to_string(),
    })
}

/// An export result as JSON.
fn export_json(r: &Result<DmaBuf, Error>) -> Value {
    match r {
        Ok(b) => json!({"ok": true, "size": b.size()}),
        Err(e) => err_json(e),
    }
}

fn state_json<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(s) => format!("{s:?}").into(),
        Err(e) => format!("error: {e}").into(),
    }
}

fn ranges_json(ranges: &[DmaRange]) -> Value {
    if ranges.len() > 4 {
        return json!({"count": ranges.len()});
    }
    ranges
        .iter()
        .map(|r| json!([r.offset, r.length]))
        .collect::<Vec<_>>()
        .into()
}

/// A private IOAS on `/dev/iommu`, used to ask the kernel whether a dma-buf can be
/// attached (live) or not (revoked: ENODEV), and for the iommufd errno checks.
struct KernelProbe {
    iommufd: OwnedFd,
    ioas: u32,
}

impl KernelProbe {
    /// None where the kernel has no iommufd (Debian's stock kernel).
    fn open() -> Result<Option<Self>> {
        if !Path::new("/dev/iommu").exists() {
            return Ok(None);
        }
        let iommufd = rustix::fs::open("/dev/iommu", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .context("opening /dev/iommu")?;
        Self::alloc(iommufd).map(Some)
    }

    /// A new IOAS in `iommufd`.
    fn alloc(iommufd: OwnedFd) -> Result<Self> {
        let mut arg = iommu_ioas_alloc {
            size: size_of::<iommu_ioas_alloc>() as u32,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_ALLOC reads and writes one iommu_ioas_alloc, which `arg`
        // is, with its size field set; the fd is an open iommufd.
        let rc = unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_ALLOC as _, &mut arg) };
        if rc < 0 {
            bail!("IOMMU_IOAS_ALLOC: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            iommufd,
            ioas: arg.out_ioas_id,
        })
    }

    /// IOMMU_IOAS_MAP_FILE of `len` bytes at `start` of `fd`; the IOVA or the errno.
    fn map_file(&self, fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<u64, Errno> {
        let mut arg = iommu_ioas_map_file {
            size: size_of::<iommu_ioas_map_file>() as u32,
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: self.ioas,
            fd: fd.as_raw_fd(),
            start,
            length: len,
            iova: 0,
        };
        // SAFETY: IOMMU_IOAS_MAP_FILE reads and writes one iommu_ioas_map_file, which
        // `arg` is; the fds are open for the duration of the call.
        let rc =
            unsafe { libc::ioctl(self.iommufd.as_raw_fd(), IOMMU_IOAS_MAP_FILE as _, &mut arg) };
        if rc < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(arg.iova)
    }

    /// IOMMU_IOAS_MAP of process memory; the IOVA or the errno.
    fn map_user(&self, ptr: *mut u8, len: u64) -> Result<u64, Errno> {
        let mut arg = iommu_ioas_map {
            size: size_of::<iommu_ioas_map>() as u32,
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: self.ioas,
            user_va: ptr as u64,
            length: len,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_MAP reads and writes one iommu_ioas_map, which `arg` is;
        // the kernel only pins the user range, it does not write through it here.
        let rc = unsafe { libc::ioctl(self.iommufd.as_raw_fd(), IOMMU_IOAS_MAP as _, &mut arg) };
        if rc < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(arg.iova)
    }

    /// IOMMU_IOAS_UNMAP of one mapping.
    fn unmap(&self, iova: u64, len: u64) {
        let mut arg = iommu_ioas_unmap {
            size: size_of::<iommu_ioas_unmap>() as u32,
            ioas_id: self.ioas,
            iova,
            length: len,
        };
        // SAFETY: IOMMU_IOAS_UNMAP reads and writes one iommu_ioas_unmap, which `arg` is.
        unsafe { libc::ioctl(self.iommufd.as_raw_fd(), IOMMU_IOAS_UNMAP as _, &mut arg) };
    }

    /// Whether the kernel lets an importer map the first page of `buf` now:
    /// `"mapped"` or the errno's name (ENODEV while revoked).
    fn probe(&self, buf: &DmaBuf, page: u64) -> String {
        match self.map_file(buf.as_fd(), 0, page) {
            Ok(iova) => {
                self.unmap(iova, page);
                "mapped".into()
            }
            Err(e) => errno_name(e),
        }
    }
}

/// What the probe says, or null without iommufd.
fn probe(kp: Option<&KernelProbe>, buf: &DmaBuf, page: u64) -> Value {
    kp.map_or(Value::Null, |k| k.probe(buf, page).into())
}

/// `peerdma_export_bench(fd, region, pairs, nr, iters, build_each, *export_ns)`.
type BenchFn = unsafe extern "C" fn(c_int, u32, *const u64, u32, u32, u32, *mut u64) -> c_int;
/// `peerdma_export_raw(fd, region, pairs, nr, claimed, flags, argsz_delta)`.
type RawFn = unsafe extern "C" fn(c_int, u32, *const u64, u32, u32, u32, i32) -> c_int;

/// The C helper (`tests/c/export_bench.c`), loaded with dlopen.
struct CLib {
    bench: BenchFn,
    raw: RawFn,
}

impl CLib {
    fn load(path: &Path) -> Result<Self> {
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: dlopen with a NUL-terminated path; the handle is never closed, so
        // the symbols stay valid for the life of the process.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            bail!("dlopen {} failed", path.display());
        }
        let sym = |name: &str| -> Result<*mut libc::c_void> {
            let cname = CString::new(name)?;
            // SAFETY: a valid handle and a NUL-terminated name.
            let p = unsafe { libc::dlsym(handle, cname.as_ptr()) };
            if p.is_null() {
                bail!("{} has no symbol {name}", path.display());
            }
            Ok(p)
        };
        let (bench, raw) = (sym("peerdma_export_bench")?, sym("peerdma_export_raw")?);
        // SAFETY: the symbols are the C functions of export_bench.c, whose signatures
        // are the ones these function pointer types spell.
        unsafe {
            Ok(Self {
                bench: std::mem::transmute::<*mut libc::c_void, BenchFn>(bench),
                raw: std::mem::transmute::<*mut libc::c_void, RawFn>(raw),
            })
        }
    }

    /// Compiles export_bench.c into the scratch directory with `cc`.
    fn compile() -> Result<PathBuf> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/export_bench.c");
        let out = Path::new(GUEST_SCRATCH).join("libpeerdma-export-c.so");
        let status = std::process::Command::new("cc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .context("running cc")?;
        if !status.success() {
            bail!("cc {} failed: {status}", src.display());
        }
        Ok(out)
    }

    /// One raw export: the new fd (closed at once) or the errno.
    fn raw(
        &self,
        dev: &Device,
        region: u32,
        ranges: &[DmaRange],
        claimed: u32,
        flags: u32,
        argsz_delta: i32,
    ) -> Result<(), Errno> {
        let pairs: Vec<u64> = ranges.iter().flat_map(|r| [r.offset, r.length]).collect();
        // SAFETY: the pointer covers `ranges.len()` pairs; the function only reads them
        // and the device fd stays open for the call.
        let rc = unsafe {
            (self.raw)(
                dev.fd().as_raw_fd(),
                region,
                pairs.as_ptr(),
                ranges.len() as u32,
                claimed,
                flags,
                argsz_delta,
            )
        };
        if rc < 0 {
            return Err(Errno::from_raw_os_error(-rc));
        }
        // SAFETY: a non-negative return is a new dma-buf fd that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(rc) });
        Ok(())
    }

    /// `iters` C exports, the argument built once or per export (`build_each`);
    /// nanoseconds per export.
    fn bench(
        &self,
        dev: &Device,
        region: u32,
        ranges: &[DmaRange],
        iters: u32,
        build_each: bool,
    ) -> Result<f64> {
        let pairs: Vec<u64> = ranges.iter().flat_map(|r| [r.offset, r.length]).collect();
        let mut ns = 0u64;
        // SAFETY: the pointer covers `ranges.len()` pairs and `ns` is a valid u64; the
        // device fd stays open for the call.
        let rc = unsafe {
            (self.bench)(
                dev.fd().as_raw_fd(),
                region,
                pairs.as_ptr(),
                ranges.len() as u32,
                iters,
                u32::from(build_each),
                &mut ns,
            )
        };
        if rc < 0 {
            bail!("C export failed: {}", Errno::from_raw_os_error(-rc));
        }
        Ok(ns as f64 / f64::from(iters))
    }
}

/// The devices this run drives.
fn devices(m: &Manifest, roles: &Option<Vec<String>>) -> Vec<ManifestDevice> {
    m.devices
        .iter()
        .filter(|d| d.driver.as_deref() == Some("vfio-pci"))
        .filter(|d| roles.as_ref().is_none_or(|r| r.contains(&d.role)))
        .cloned()
        .collect()
}

fn open(d: &ManifestDevice, access: AccessPath) -> Result<Device, Error> {
    let bdf: Bdf = d.bdf.parse()?;
    Device::open_with(
        bdf,
        OpenOptions {
            access,
            ..OpenOptions::default()
        },
    )
}

/// The largest memory BAR of at least a page: what the checks export from.
fn export_bar(dev: &Device) -> Result<(u32, u64)> {
    let page = dev.page_size();
    dev.bars()?
        .iter()
        .filter(|b| b.is_memory() && b.size() >= page)
        .max_by_key(|b| b.size())
        .map(|b| (b.index, b.size()))
        .context("no memory BAR of at least a page")
}

fn skip() -> ExportOptions {
    ExportOptions {
        skip_validation: true,
        ..ExportOptions::default()
    }
}

/// `open`: the access path the device ends up on, or the refusal.
fn scenario_open(a: &Args, d: &ManifestDevice) {
    let before = fds();
    let r = open(d, a.access);
    let fields = match &r {
        Ok(dev) => json!({
            "ok": true,
            "opened_via": format!("{:?}", dev.opened_via()),
            "iommufd": dev.iommufd().is_some(),
            "devid": dev.devid(),
            "supports_reset": dev.info().supports_reset(),
            "num_regions": dev.info().num_regions,
            "probe": state_json(dev.supports_dma_buf()),
            "page_size": dev.page_size(),
            "bars": dev.bars().map(|bars| bars.iter().map(|b| json!({
                "index": b.index, "size": b.size(), "memory": b.is_memory(), "mappable": b.is_mappable(),
            })).collect::<Vec<_>>()).unwrap_or_default(),
        }),
        Err(e) => err_json(e),
    };
    drop(r);
    let mut fields = fields;
    fields["fds_before"] = before.into();
    fields["fds_after"] = fds().into();
    emit("open", "open", &a.access_name, Some(d), fields);
}

/// `handover`: opening with fds a management process opened (a container for the
/// group path, an iommufd for the cdev path); nothing leaks either way.
fn scenario_handover(a: &Args, d: &ManifestDevice) -> Result<()> {
    let node = match a.access {
        AccessPath::Group => "/dev/vfio/vfio",
        AccessPath::Cdev => "/dev/iommu",
        AccessPath::Auto => return Ok(()),
    };
    let before = fds();
    let fd = rustix::fs::open(node, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {node}"))?;
    let passed = if a.access == AccessPath::Group {
        PassedFds::Container(fd)
    } else {
        PassedFds::Iommufd(fd)
    };
    let bdf: Bdf = d.bdf.parse()?;
    let r = Device::open_with(
        bdf,
        OpenOptions {
            passed,
            ..OpenOptions::default()
        },
    );
    let mut f = match &r {
        Ok(dev) => json!({
            "ok": true,
            "opened_via": format!("{:?}", dev.opened_via()),
            "exports": dev.export_dma_buf(export_bar(dev)?.0, &[DmaRange::new(0, dev.page_size())]).is_ok(),
        }),
        Err(e) => err_json(e),
    };
    drop(r);
    f["node"] = node.into();
    f["fds_before"] = before.into();
    f["fds_after"] = fds().into();
    emit("handover", "passed fd", &a.access_name, Some(d), f);
    Ok(())
}

/// `mmap`: the BAR through the VFIO region mmap (the CPU path the dma-buf lacks):
/// ivshmem RAM written and read back, edu's identification register, NVMe's CAP; an
/// access past the mapping is refused.
fn scenario_mmap(a: &Args, d: &ManifestDevice, dev: &Device) -> Result<()> {
    use peerdma_testbed::devices::DeviceKind;
    let (bar, _) = export_bar(dev)?;
    let bar = if d.kind == DeviceKind::Nvme { 0 } else { bar };
    let map = dev.map_region(bar)?;
    let mut f = json!({"bar": bar, "len": map.len()});
    match d.kind {
        DeviceKind::Ivshmem => {
            map.write::<u32>(0x100, 0xdead_beef)?;
            f["read_back"] = map.read::<u32>(0x100)?.into();
        }
        DeviceKind::Nvme => f["cap"] = map.read::<u64>(0)?.into(),
        _ => f["id"] = map.read::<u32>(0)?.into(),
    }
    f["past_the_end"] = match map.read::<u32>(map.len()) {
        Ok(v) => json!({"ok": true, "value": v}),
        Err(e) => err_json(&e),
    };
    emit("mmap", "region", &a.access_name, Some(d), f);
    Ok(())
}

/// `exports`: 1, 3 and 1024 ranges and the whole BAR, with what fdinfo says.
fn scenario_exports(a: &Args, d: &ManifestDevice, dev: &Device) -> Result<()> {
    let page = dev.page_size();
    let (bar, size) = export_bar(dev)?;
    let pages = size / page;
    let many: Vec<DmaRange> = (0..1024u64)
        .map(|i| {
            let at = if pages >= 2048 { 2 * i } else { i % pages };
            DmaRange::new(at * page, page)
        })
        .collect();
    let cases: Vec<(&str, Vec<DmaRange>)> = vec![
        ("1 range", vec![DmaRange::new(0, page)]),
        (
            "3 ranges",
            vec![
                DmaRange::new(0, page),
                DmaRange::new(4 * page, 2 * page),
                DmaRange::new(size - page, page),
            ],
        ),
        ("1024 ranges", many),
        ("whole BAR", vec![DmaRange::new(0, size)]),
    ];
    for (what, ranges) in cases {
        let before = fds();
        let sum: u64 = ranges.iter().map(|r| r.length).sum();
        let r = dev.export_dma_buf(bar, &ranges);
        let mut f = json!({
            "what": what, "bar": bar, "bar_size": size, "nr_ranges": ranges.len(),
            "ranges_sum": sum, "page_size": page,
        });
        match &r {
            Ok(buf) => {
                f["ok"] = true.into();
                f["size"] = buf.size().into();
                // The buffer's record of its ranges is the argument it was exported with.
                f["ranges_recorded"] = (buf.ranges() == ranges.as_slice()).into();
                f["fds_during"] = fds().into();
                match buf.fdinfo() {
                    Ok(info) => {
                        f["fdinfo_size"] = info.size.into();
                        f["exp_name"] = info.exp_name.clone().into();
                        f["flags_octal"] = format!("{:o}", info.flags).into();
                        f["cloexec"] = info.cloexec().into();
                        f["access_mode"] = info.access_mode().into();
                    }
                    Err(e) => f["fdinfo_error"] = e.to_string().into(),
                }
                // The 7.2 exporter has no mmap: CPU access to the buffer is refused.
                // SAFETY: a fresh shared mapping request on the buffer's fd; if the
                // kernel ever grants it, it is unmapped at once and never touched.
                let m = unsafe {
                    rustix::mm::mmap(
                        std::ptr::null_mut(),
                        page as usize,
                        rustix::mm::ProtFlags::READ,
                        rustix::mm::MapFlags::SHARED,
                        buf,
                        0,
                    )
                };
                f["mmap"] = match m {
                    Ok(p) => {
                        // SAFETY: `p` is the mapping just made, `page` bytes long.
                        let _ = unsafe { rustix::mm::munmap(p, page as usize) };
                        "mapped".into()
                    }
                    Err(e) => errno_name(e).into(),
                };
            }
            Err(e) => f["error"] = err_json(e),
        }
        drop(r);
        f["fds_before"] = before.into();
        f["fds_after"] = fds().into();
        emit("exports", "export", &a.access_name, Some(d), f);
    }
    Ok(())
}

/// One rule: the library's refusal, then the kernel's answer to the same request.
fn rule(a: &Args, d: &ManifestDevice, dev: &Device, name: &str, region: u32, ranges: &[DmaRange]) {
    let before = fds();
    let lib = dev.export_dma_buf(region, ranges);
    let lib_json = export_json(&lib);
    drop(lib);
    let mid = fds();
    let kernel = dev.export_dma_buf_with(region, ranges, &skip());
    let kernel_json = export_json(&kernel);
    drop(kernel);
    emit(
        "errors",
        "rule",
        &a.access_name,
        Some(d),
        json!({
            "rule": name, "region": region, "ranges": ranges_json(ranges),
            "library": lib_json, "kernel": kernel_json,
            "fds_before": before, "fds_between": mid, "fds_after": fds(),
        }),
    );
}

/// `errors`: every pre-validation rule, predicted and then asked of the kernel; the
/// MSI-X rule; raw arguments the library never builds; an unknown BDF.
fn scenario_errors(a: &Args, d: &ManifestDevice, dev: &Device, c: Option<&CLib>) -> Result<()> {
    let page = dev.page_size();
    let (big, size) = export_bar(dev)?;
    let bars = dev.bars()?;
    let p = |o, l| DmaRange::new(o, l);
    rule(a, d, dev, "no ranges", big, &[]);
    rule(a, d, dev, "zero length", big, &[p(0, page), p(page, 0)]);
    rule(a, d, dev, "unaligned offset", big, &[p(page / 2, page)]);
    rule(a, d, dev, "unaligned length", big, &[p(0, page + page / 2)]);
    rule(
        a,
        d,
        dev,
        "total overflow",
        big,
        &[p(0, !(page - 1)), p(0, page)],
    );
    rule(
        a,
        d,
        dev,
        "total bit 63",
        big,
        &[p(0, 1 << 62), p(0, 1 << 62)],
    );
    rule(a, d, dev, "offset overflow", big, &[p(!(page - 1), page)]);
    rule(
        a,
        d,
        dev,
        "offset+length overflow",
        big,
        &[p(1 << 63, (1 << 63) - page)],
    );
    rule(a, d, dev, "past the end", big, &[p(size, page)]);
    rule(
        a,
        d,
        dev,
        "second range past the end",
        big,
        &[p(0, page), p(size - page, 2 * page)],
    );
    rule(a, d, dev, "ROM", 6, &[p(0, page)]);
    rule(a, d, dev, "config", 7, &[p(0, page)]);
    rule(a, d, dev, "VGA", 8, &[p(0, page)]);
    if let Some(absent) = bars.iter().find(|b| b.size() == 0) {
        rule(a, d, dev, "absent BAR", absent.index, &[p(0, page)]);
    }
    if let Some(small) = bars
        .iter()
        .find(|b| b.is_memory() && b.size() > 0 && b.size() < page)
    {
        rule(a, d, dev, "sub-page BAR", small.index, &[p(0, page)]);
    }
    // More ranges than one kmalloc can copy: the library does not predict it.
    let too_many: Vec<DmaRange> = (0..=KMALLOC_RANGES_LIMIT).map(|_| p(0, page)).collect();
    rule(a, d, dev, "more ranges than kmalloc allows", big, &too_many);

    if let Some(msix) = dev.msix() {
        let region = u32::from(msix.table_bir);
        let bar = dev.bar(region)?;
        let table_page = u64::from(msix.table_offset) / page * page;
        let ranges = [p(table_page, page)];
        let before = fds();
        let strict = dev.export_dma_buf(region, &ranges);
        let strict_json = export_json(&strict);
        drop(strict);
        let allowed = dev.export_dma_buf_with(
            region,
            &ranges,
            &ExportOptions {
                allow_msix_overlap: true,
                ..ExportOptions::default()
            },
        );
        let allowed_json = export_json(&allowed);
        drop(allowed);
        emit(
            "errors",
            "msix",
            &a.access_name,
            Some(d),
            json!({
                "region": region, "table_offset": msix.table_offset,
                "msix_mappable": bar.msix_mappable(),
                "strict": strict_json, "allowed": allowed_json,
                "fds_before": before, "fds_after": fds(),
            }),
        );
    }

    if let Some(c) = c {
        let one = [p(0, page)];
        let cases: [(&str, &[DmaRange], u32, u32, i32); 5] = [
            ("well-formed", &one, 1, 0, 0),
            ("flags not 0", &one, 1, 1, 0),
            ("argsz shorter than the header", &one, 1, 0, -17),
            ("argsz without room for the ranges", &one, 1, 0, -16),
            ("nr_ranges beyond the array", &one, 2, 0, 0),
        ];
        for (what, ranges, claimed, flags, delta) in cases {
            let before = fds();
            let r = c.raw(dev, big, ranges, claimed, flags, delta);
            emit(
                "errors",
                "raw",
                &a.access_name,
                Some(d),
                json!({
                    "what": what,
                    "kernel": match r { Ok(()) => "fd".to_string(), Err(e) => errno_name(e) },
                    "fds_before": before, "fds_after": fds(),
                }),
            );
        }
    }
    Ok(())
}

/// Device-independent refusals: an unknown BDF.
fn scenario_unknown_bdf(a: &Args) {
    let before = fds();
    let bdf: Bdf = "0000:0e:00.0".parse().expect("a valid BDF");
    let r = Device::open_with(
        bdf,
        OpenOptions {
            access: a.access,
            ..OpenOptions::default()
        },
    );
    let f = match &r {
        Ok(_) => json!({"ok": true}),
        Err(e) => err_json(e),
    };
    drop(r);
    let mut f = f;
    f["fds_before"] = before.into();
    f["fds_after"] = fds().into();
    emit("errors", "unknown bdf", &a.access_name, None, f);
}

/// One step of the revoke walk: what the library and the kernel say afterwards.
fn step(
    a: &Args,
    d: &ManifestDevice,
    dev: Option<&Device>,
    kp: Option<&KernelProbe>,
    bufs: &[(&str, &DmaBuf)],
    name: &str,
    result: Value,
) {
    let page = rustix::param::page_size() as u64;
    let mut f = json!({"step": name, "result": result});
    if let Some(dev) = dev {
        f["device"] = state_json(dev.revoke_state());
        f["power"] = state_json(dev.power_state());
        f["decode"] = state_json(dev.memory_decode());
    }
    for (label, buf) in bufs {
        f[format!("{label}_state")] = state_json(buf.state());
        f[format!("{label}_kernel")] = probe(kp, buf, page);
    }
    emit("revoke", "step", &a.access_name, Some(d), f);
}

fn unit_json(r: Result<(), Error>) -> Value {
    match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => err_json(&e),
    }
}

fn event_json(e: &RevokeEvent) -> Value {
    match e {
        RevokeEvent::Revoked { generation, reason } => {
            json!({"kind": "revoked", "generation": generation, "reason": format!("{reason:?}")})
        }
        RevokeEvent::Restored { generation } => {
            json!({"kind": "restored", "generation": generation})
        }
    }
}

/// `revoke`: decode off/on, born revoked, reset, D3hot/D0, FLR, close; the events.
fn scenario_revoke(
    a: &Args,
    d: &ManifestDevice,
    dev: Device,
    kp: Option<&KernelProbe>,
) -> Result<()> {
    let page = dev.page_size();
    let (bar, _) = export_bar(&dev)?;
    let events = dev.subscribe();
    let buf = dev.export_dma_buf(bar, &[DmaRange::new(0, page)])?;
    step(
        a,
        d,
        Some(&dev),
        kp,
        &[("buf", &buf)],
        "export",
        json!({"ok": true}),
    );

    let r = dev.set_memory_decode(false);
    step(
        a,
        d,
        Some(&dev),
        kp,
        &[("buf", &buf)],
        "decode off",
        unit_json(r),
    );
    let born = dev.export_dma_buf(bar, &[DmaRange::new(0, page)]);
    let born = match born {
        Ok(b) => b,
        Err(e) => {
            emit(
                "revoke",
                "step",
                &a.access_name,
                Some(d),
                json!({"step": "born revoked", "result": err_json(&e)}),
            );
            dev.set_memory_decode(true)?;
            return Ok(());
        }
    };
    let both = [("buf", &buf), ("born", &born)];
    step(
        a,
        d,
        Some(&dev),
        kp,
        &both,
        "born revoked",
        json!({"ok": true, "size": born.size()}),
    );
    let r = dev.set_memory_decode(true);
    step(a, d, Some(&dev), kp, &both, "decode on", unit_json(r));

    let supports = dev.info().supports_reset();
    let r = dev.reset();
    let mut res = unit_json(r);
    res["supports_reset"] = supports.into();
    res["last_reset"] = format!(
        "{:?}",
        dev.last_reset().map(|r| (r.method, r.generation, r.errno))
    )
    .into();
    if !supports {
        // What the kernel itself says to VFIO_DEVICE_RESET on this device.
        // SAFETY: VFIO_DEVICE_RESET takes no argument; the device fd is open.
        let rc = unsafe { libc::ioctl(dev.fd().as_raw_fd(), VFIO_DEVICE_RESET as _) };
        res["kernel_errno"] = if rc < 0 {
            errno_name(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
                .into()
        } else {
            Value::Null
        };
    }
    step(a, d, Some(&dev), kp, &both, "reset", res);

    let has_pm = dev.pci_caps().iter().any(|c| c.id == 0x01);
    let r = dev.set_power_state(PowerState::D3hot);
    let d3_ok = r.is_ok();
    let mut res = unit_json(r);
    res["has_pm"] = has_pm.into();
    step(a, d, Some(&dev), kp, &both, "D3hot", res);
    if d3_ok {
        let r = dev.set_power_state(PowerState::D0);
        step(a, d, Some(&dev), kp, &both, "D0", unit_json(r));
    }

    let r = dev.flr();
    step(a, d, Some(&dev), kp, &both, "flr", unit_json(r));

    drop(dev);
    step(a, d, None, kp, &both, "close", json!({"ok": true}));
    let got: Vec<Value> = events.try_iter().map(|e| event_json(&e)).collect();
    let fdinfo_size = buf.fdinfo().ok().and_then(|i| i.size);
    emit(
        "revoke",
        "events",
        &a.access_name,
        Some(d),
        json!({"events": got, "buf_fdinfo_size_after_close": fdinfo_size}),
    );
    Ok(())
}

/// `iommufd`: the MAP_FILE errnos an importer meets.
fn scenario_iommufd(a: &Args, d: &ManifestDevice, dev: &Device, kp: &KernelProbe) -> Result<()> {
    let page = dev.page_size();
    let (bar, size) = export_bar(dev)?;
    let mut f = json!({"bar": bar});
    let one = dev.export_dma_buf(bar, &[DmaRange::new(0, 2 * page)])?;
    let map = |buf: &DmaBuf, start, len| -> Value {
        match kp.map_file(buf.as_fd(), start, len) {
            Ok(iova) => {
                kp.unmap(iova, len);
                "mapped".into()
            }
            Err(e) => errno_name(e).into(),
        }
    };
    f["one_range"] = map(&one, 0, 2 * page);
    f["one_range_second_page"] = map(&one, page, page);
    f["unaligned_start"] = map(&one, page / 2, page);
    f["unaligned_length"] = map(&one, 0, page / 2);
    f["longer_than_buffer"] = map(&one, 0, 3 * page);
    let three = dev.export_dma_buf(
        bar,
        &[
            DmaRange::new(0, page),
            DmaRange::new(2 * page, page),
            DmaRange::new(size - page, page),
        ],
    )?;
    f["three_ranges"] = map(&three, 0, page);
    dev.set_memory_decode(false)?;
    f["revoked"] = map(&one, 0, page);
    dev.set_memory_decode(true)?;
    f["restored"] = map(&one, 0, page);
    let map_user = |kp: &KernelProbe, ptr, len| -> Value {
        match kp.map_user(ptr, len) {
            Ok(iova) => {
                kp.unmap(iova, len);
                "mapped".into()
            }
            Err(e) => errno_name(e).into(),
        }
    };
    let m = dev.map_region_range(bar, 0, page)?;
    // The private IOAS has no device, hence no IOMMU domain: nothing is pinned at MAP.
    f["bar_mmap_map_no_domain"] = map_user(kp, m.as_ptr(), page);
    // On the cdev path, attach the device to an IOAS of its own iommufd: MAP now pins
    // the pages for the domain, and a BAR mmap has none to pin.
    if let Some(own) = dev.iommufd() {
        let attached = KernelProbe::alloc(own.try_clone_to_owned()?)?;
        let mut arg = vfio_device_attach_iommufd_pt {
            argsz: size_of::<vfio_device_attach_iommufd_pt>() as u32,
            pt_id: attached.ioas,
            ..Default::default()
        };
        // SAFETY: VFIO_DEVICE_ATTACH_IOMMUFD_PT reads and writes one
        // vfio_device_attach_iommufd_pt, which `arg` is; the device fd is open and bound.
        let rc = unsafe {
            libc::ioctl(
                dev.fd().as_raw_fd(),
                VFIO_DEVICE_ATTACH_IOMMUFD_PT as _,
                &mut arg,
            )
        };
        if rc < 0 {
            f["attach"] = errno_name(
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO),
            )
            .into();
        } else {
            f["attach"] = "attached".into();
            f["bar_mmap_map_attached"] = map_user(&attached, m.as_ptr(), page);
            f["one_range_attached"] = match attached.map_file(one.as_fd(), 0, page) {
                Ok(iova) => {
                    attached.unmap(iova, page);
                    "mapped".into()
                }
                Err(e) => errno_name(e).into(),
            };
        }
    }
    drop(m);
    emit("iommufd", "map_file", &a.access_name, Some(d), f);
    Ok(())
}

/// `leaks`: fds and mappings across many exports, failed exports and opens.
fn scenario_leaks(a: &Args, d: &ManifestDevice) -> Result<()> {
    let cycle = |dev: &Device, bar: u32, page: u64| -> Result<()> {
        let ranges = [
            DmaRange::new(0, page),
            DmaRange::new(2 * page, page),
            DmaRange::new(4 * page, page),
        ];
        drop(dev.export_dma_buf(bar, &ranges)?);
        let bad = [DmaRange::new(page / 2, page)];
        anyhow::ensure!(
            dev.export_dma_buf(bar, &bad).is_err(),
            "an unaligned export succeeded"
        );
        anyhow::ensure!(
            dev.export_dma_buf_with(bar, &bad, &skip()).is_err(),
            "the kernel took an unaligned export"
        );
        Ok(())
    };
    // Warm up what the process keeps on purpose (allocator arenas, the std's caches).
    {
        let dev = open(d, a.access)?;
        let (bar, _) = export_bar(&dev)?;
        cycle(&dev, bar, dev.page_size())?;
    }
    let (fd0, map0) = (fds(), maps());
    let dev = open(d, a.access)?;
    let (bar, _) = export_bar(&dev)?;
    let page = dev.page_size();
    let fd_open = fds();
    let t = Instant::now();
    let ranges = [
        DmaRange::new(0, page),
        DmaRange::new(2 * page, page),
        DmaRange::new(4 * page, page),
    ];
    for _ in 0..a.cycles {
        drop(dev.export_dma_buf(bar, &ranges)?);
    }
    let export_time = t.elapsed();
    let fd_cycles = fds();
    let failed = a.cycles / 10;
    let bad = [DmaRange::new(page / 2, page)];
    let mut refused = 0u32;
    for _ in 0..failed {
        refused += u32::from(dev.export_dma_buf(bar, &bad).is_err());
        refused += u32::from(dev.export_dma_buf_with(bar, &bad, &skip()).is_err());
    }
    let fd_failed = fds();
    drop(dev);
    let opens = 50u32;
    for _ in 0..opens {
        drop(open(d, a.access)?);
    }
    emit(
        "leaks",
        "cycles",
        &a.access_name,
        Some(d),
        json!({
            "cycles": a.cycles, "failed_exports": 2 * failed, "refused": refused, "opens": opens,
            "fds_before": fd0, "fds_device_open": fd_open, "fds_after_cycles": fd_cycles,
            "fds_after_failed": fd_failed, "fds_after": fds(),
            "maps_before": map0, "maps_after": maps(),
            "us_per_export_close": export_time.as_secs_f64() * 1e6 / f64::from(a.cycles.max(1)),
        }),
    );
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds, read as `now_ns` in tests/c/export_bench.c reads it,
/// so that both sides of the benchmark pay the same for their clock reads.
#[inline(always)]
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel (vDSO) to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn rounded(v: f64) -> Value {
    v.round().into()
}

/// `bench`: export latency of the library against the same ioctl from C, on the same
/// device fd in the same run, for 1, 16 and 1024 ranges. Small batches of each kind
/// alternate (C with its argument built once, C building it per export, the library,
/// the library without validation; the order flips every batch) so that drift and
/// neighbours' load hit all of them alike. The ratio is the median over batches of
/// library / C-per-export of adjacent batches; medians and the fastest batches are
/// reported beside it.
fn scenario_bench(a: &Args, d: &ManifestDevice, c: &CLib) -> Result<()> {
    let dev = open(d, a.access)?;
    let (bar, size) = export_bar(&dev)?;
    let page = dev.page_size();
    anyhow::ensure!(
        size >= 2048 * page,
        "the bench needs a BAR of 2048 pages at least"
    );
    let batches = a.batches.max(1);
    let mut per_count = Vec::new();
    for (nr, batch) in [(1u64, 50u32), (16, 50), (1024, 10)] {
        let ranges: Vec<DmaRange> = (0..nr).map(|i| DmaRange::new(2 * i * page, page)).collect();
        let rust = |opts: &ExportOptions| -> Result<f64> {
            let mut total = 0u64;
            for _ in 0..batch {
                // Like the C side: the same clock read (clock_gettime, as its
                // now_ns), the argument buffer (kept by the DmaBuf as its record of
                // the ranges) freed inside the timed part, the fd closed outside it.
                let t0 = now_ns();
                let fd = dev.export_dma_buf_with(bar, &ranges, opts)?.into_fd();
                let t1 = now_ns();
                total += t1 - t0;
                drop(fd);
            }
            Ok(total as f64 / f64::from(batch))
        };
        // Warm-up, not counted.
        c.bench(&dev, bar, &ranges, batch, false)?;
        c.bench(&dev, bar, &ranges, batch, true)?;
        rust(&ExportOptions::default())?;
        rust(&skip())?;
        // C with the argument built once, C building it per export, the library, the
        // library without validation; the order flips every batch.
        let mut t: [Vec<f64>; 4] = Default::default();
        for i in 0..batches {
            for k in 0..4 {
                let k = if i % 2 == 0 { k } else { 3 - k };
                t[k].push(match k {
                    0 => c.bench(&dev, bar, &ranges, batch, false)?,
                    1 => c.bench(&dev, bar, &ranges, batch, true)?,
                    2 => rust(&ExportOptions::default())?,
                    _ => rust(&skip())?,
                });
            }
        }
        let med: Vec<f64> = t.iter().map(|v| median(v.clone())).collect();
        let fast: Vec<f64> = t.iter().map(|v| min(v)).collect();
        let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
        // Batches that ran side by side shared whatever load the host had: the median
        // of their ratios is the figure least moved by it.
        let paired = median(t[2].iter().zip(&t[1]).map(|(r, c)| r / c).collect());
        per_count.push((nr, med[1], med[2]));
        emit(
            "bench",
            "latency",
            &a.access_name,
            Some(d),
            json!({
                "nr_ranges": nr, "batch": batch, "batches": batches, "bar": bar,
                "opened_via": format!("{:?}", dev.opened_via()),
                "c_prebuilt_ns": rounded(med[0]), "c_ns": rounded(med[1]),
                "rust_ns": rounded(med[2]), "rust_unvalidated_ns": rounded(med[3]),
                "ratio": ratio(paired, 1.0),
                "ratio_of_medians": ratio(med[2], med[1]),
                "ratio_to_prebuilt": ratio(med[2], med[0]),
                "fastest_ns": fast.iter().map(|v| rounded(*v)).collect::<Vec<_>>(),
                "ratio_fastest": ratio(fast[2], fast[1]),
            }),
        );
        eprintln!(
            "export {nr:>4} ranges: C {:>9.0} ns (prebuilt {:>9.0})  Rust {:>9.0} ns \
             (unvalidated {:>9.0})  ratio {:.3} (paired batches; of medians {:.3}, \
             to prebuilt {:.3}, fastest batches {:.3})",
            med[1],
            med[0],
            med[2],
            med[3],
            paired,
            med[2] / med[1],
            med[2] / med[0],
            fast[2] / fast[1]
        );
    }
    let (first, last) = (per_count[0], per_count[per_count.len() - 1]);
    let span = (last.0 - first.0) as f64;
    emit(
        "bench",
        "growth",
        &a.access_name,
        Some(d),
        json!({
            "from_ranges": first.0, "to_ranges": last.0,
            "c_ns_per_range": rounded((last.1 - first.1) / span),
            "rust_ns_per_range": rounded((last.2 - first.2) / span),
        }),
    );
    Ok(())
}

fn run() -> Result<()> {
    let a = parse_args()?;
    let m = Manifest::load_in_guest()?;
    let devs = devices(&m, &a.roles);
    let has = |s: &str| a.scenarios.iter().any(|x| x == s);
    emit(
        "meta",
        "run",
        &a.access_name,
        None,
        json!({
            "kernel": m.kernel, "release": m.kernel_release, "iommufd": m.iommufd,
            "roles": devs.iter().map(|d| d.role.clone()).collect::<Vec<_>>(),
            "scenarios": a.scenarios,
        }),
    );
    let c = match (&a.c_lib, has("bench")) {
        (Some(p), _) => Some(CLib::load(p)?),
        (None, true) => Some(CLib::load(&CLib::compile()?)?),
        (None, false) => None,
    };
    let kp = KernelProbe::open()?;
    if has("errors") {
        scenario_unknown_bdf(&a);
    }
    let mut leak_done = false;
    for d in &devs {
        if has("open") {
            scenario_open(&a, d);
        }
        // Each scenario opens the device afresh, so revoke generations start at 0; a
        // device that does not open on this path was reported by `open`.
        if open(d, a.access).is_err() {
            continue;
        }
        if has("handover") {
            scenario_handover(&a, d)?;
        }
        if has("mmap") {
            scenario_mmap(&a, d, &open(d, a.access)?)?;
        }
        if has("exports") {
            scenario_exports(&a, d, &open(d, a.access)?)?;
        }
        if has("errors") {
            scenario_errors(&a, d, &open(d, a.access)?, c.as_ref())?;
        }
        if let (true, Some(kp)) = (has("iommufd"), &kp) {
            scenario_iommufd(&a, d, &open(d, a.access)?, kp)?;
        }
        if has("revoke") {
            scenario_revoke(&a, d, open(d, a.access)?, kp.as_ref())?;
        }
        if has("leaks") && !leak_done && d.kind == peerdma_testbed::devices::DeviceKind::Ivshmem {
            scenario_leaks(&a, d)?;
            leak_done = true;
        }
    }
    if has("bench") {
        let d = devs
            .iter()
            .find(|d| d.kind == peerdma_testbed::devices::DeviceKind::Ivshmem)
            .context("the bench needs an ivshmem device")?;
        scenario_bench(&a, d, c.as_ref().context("no C library")?)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerdma-guest-export: {e:#}");
            ExitCode::FAILURE
        }
    }
}
