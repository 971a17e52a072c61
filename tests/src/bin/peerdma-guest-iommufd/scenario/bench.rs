//! `bench`: map/unmap of a dma-buf, Rust library against the same ioctls from C
//! (`--c-lib`: importer/benches/iommufd_map_unmap.c built with `-shared -fPIC`).

use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use peerdma_importer::iommufd::{Iova, Prot};
use serde_json::{json, Value};

use crate::rig::{at, Rig};
use crate::Opts;

/// The C baseline, `peerdma_c_map_unmap` from importer/benches/iommufd_map_unmap.c
/// built as a shared object.
pub(crate) type CMapUnmap = unsafe extern "C" fn(i32, u32, i32, u64, u64) -> i32;

pub(crate) fn load_c(path: &str) -> Result<CMapUnmap> {
    let cpath = std::ffi::CString::new(path)?;
    // SAFETY: dlopen with a valid C string; the library is a plain C object with
    // no constructors of consequence. The handle is never closed (the function
    // pointer must stay valid for the life of the process).
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        bail!("dlopen {path} failed");
    }
    // SAFETY: a valid handle and a NUL-terminated symbol name.
    let sym = unsafe { libc::dlsym(handle, c"peerdma_c_map_unmap".as_ptr()) };
    if sym.is_null() {
        bail!("{path} has no peerdma_c_map_unmap");
    }
    // SAFETY: the symbol is the C function
    // `int peerdma_c_map_unmap(int, uint32_t, int, uint64_t, uint64_t)`, whose
    // ABI is exactly CMapUnmap.
    Ok(unsafe { std::mem::transmute::<*mut libc::c_void, CMapUnmap>(sym) })
}

/// Map/unmap of a dma-buf: this library against the same two ioctls from C,
/// one cycle of each in turn (the order flipped every cycle) in one process, so
/// that host noise under TCG hits both alike.
pub(crate) fn bench(rig: &mut Rig, opts: &Opts) -> Result<Value> {
    let lib = opts.c_lib.as_ref().context("bench needs --c-lib PATH")?;
    let c_map_unmap = load_c(lib)?;
    let len = opts.len;
    let buf = rig.export_dma_buf(at::BENCH, len)?;
    // A fixed IOVA inside the usable range, clear of everything else.
    let probe = rig.map_bar(&buf, Iova::Guarded)?;
    let iova = probe.iova();
    drop(probe);
    let (ifd, bfd, ioas) = (
        rig.iommufd.as_fd().as_raw_fd(),
        buf.as_fd().as_raw_fd(),
        rig.ioas.id(),
    );
    let c = || -> Result<u64> {
        let t = Instant::now();
        // SAFETY: the function only issues two ioctls on fds this process keeps
        // open for the whole loop.
        let rc = unsafe { c_map_unmap(ifd, ioas, bfd, len, iova) };
        let ns = t.elapsed().as_nanos() as u64;
        if rc != 0 {
            bail!("C map/unmap failed: errno {rc}");
        }
        Ok(ns)
    };
    let rust = |at: Iova| -> Result<u64> {
        let t = Instant::now();
        let m = rig.ioas.map_dmabuf(&buf, 0, len, at, Prot::ReadWrite)?;
        drop(m);
        Ok(t.elapsed().as_nanos() as u64)
    };
    let warmup = opts.iters / 10;
    let (mut rf, mut ra, mut cc) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + opts.iters {
        let (f, a, k) = if i % 2 == 0 {
            (rust(Iova::Fixed(iova))?, rust(Iova::Guarded)?, c()?)
        } else {
            let k = c()?;
            let a = rust(Iova::Guarded)?;
            (rust(Iova::Fixed(iova))?, a, k)
        };
        if i >= warmup {
            rf.push(f);
            ra.push(a);
            cc.push(k);
        }
    }
    let q = |v: &[u64], p: f64| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p) as usize] as f64
    };
    let pair = |r: &[u64]| -> Vec<u64> {
        // Per-cycle ratio × 1000, to take its median.
        r.iter()
            .zip(&cc)
            .map(|(a, b)| a * 1000 / (*b).max(1))
            .collect()
    };
    Ok(json!({
        "ok": true,
        "len": len,
        "iters": opts.iters,
        "rust_fixed_ns": q(&rf, 0.5),
        "rust_auto_ns": q(&ra, 0.5),
        "c_ns": q(&cc, 0.5),
        "rust_fixed_p10_ns": q(&rf, 0.1),
        "rust_auto_p10_ns": q(&ra, 0.1),
        "c_p10_ns": q(&cc, 0.1),
        "ratio_fixed": q(&rf, 0.5) / q(&cc, 0.5),
        "ratio_auto": q(&ra, 0.5) / q(&cc, 0.5),
        "ratio_fixed_p10": q(&rf, 0.1) / q(&cc, 0.1),
        "ratio_auto_p10": q(&ra, 0.1) / q(&cc, 0.1),
        "ratio_fixed_paired_median": q(&pair(&rf), 0.5) / 1000.0,
        "ratio_auto_paired_median": q(&pair(&ra), 0.5) / 1000.0,
    }))
}
