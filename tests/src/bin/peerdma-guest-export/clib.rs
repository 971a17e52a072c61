//! The C helper (`tests/c/export_bench.c`): raw exports with arguments the library never
//! builds, and the benchmark's C baseline; loaded with dlopen, compiled with `cc` if needed.

use std::ffi::{c_int, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use peerdma_exporter::{Device, DmaRange, Errno};
use peerdma_testbed::manifest::GUEST_SCRATCH;

/// `peerdma_export_bench(fd, region, pairs, nr, iters, build_each, *export_ns)`.
pub(crate) type BenchFn =
    unsafe extern "C" fn(c_int, u32, *const u64, u32, u32, u32, *mut u64) -> c_int;
/// `peerdma_export_raw(fd, region, pairs, nr, claimed, flags, argsz_delta)`.
pub(crate) type RawFn = unsafe extern "C" fn(c_int, u32, *const u64, u32, u32, u32, i32) -> c_int;

/// The C helper (`tests/c/export_bench.c`), loaded with dlopen.
pub(crate) struct CLib {
    pub(crate) bench: BenchFn,
    pub(crate) raw: RawFn,
}

impl CLib {
    pub(crate) fn load(path: &Path) -> Result<Self> {
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
    pub(crate) fn compile() -> Result<PathBuf> {
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
    pub(crate) fn raw(
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
    pub(crate) fn bench(
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
