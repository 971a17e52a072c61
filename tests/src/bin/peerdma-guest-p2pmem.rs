//! The kernel's own NVMe peer-to-peer path, the p2pmem-test shape, as the baseline the
//! user-space NVMe engine is measured against: `O_DIRECT` reads from one controller's
//! namespace (a block device of the kernel nvme driver) into a mapping of another
//! controller's controller memory buffer, which the nvme driver published as p2pmem
//! (`/sys/bus/pci/devices/BDF/p2pmem/allocate`), and the same reads into host memory.
//!
//! Usage (in the testbed, both controllers on the kernel driver: `--devices
//! nvme-kernel:16M,nvme-kernel --topology switch`): `peerdma-guest-p2pmem CMB-ROLE
//! SOURCE-ROLE [BUFFER-MIB]`. One JSON line per (target, queue depth, transfer size),
//! then one with the 4 KiB queue-depth-1 latencies. Queue depth is that many threads each
//! with one read in flight.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_testbed::manifest::Manifest;

/// A shared mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory (p2pmem or anonymous pages) owned by this value;
// threads write disjoint spans of it through the kernel (pread), never through Rust
// references.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` shared (p2pmem), or anonymous memory when `None`.
    fn new(file: Option<&File>, len: usize) -> Result<Mapping> {
        let (fd, flags) = match file {
            Some(f) => (f.as_raw_fd(), libc::MAP_SHARED),
            None => (
                -1,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            ),
        };
        // SAFETY: a fresh mapping at an address the kernel picks, aliasing nothing; this
        // value owns it until drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of {len} bytes: {}", std::io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The span `[off, off + n)` as a mutable slice for one pread.
    ///
    /// # Safety
    ///
    /// No other live slice may overlap the span.
    #[allow(clippy::mut_from_ref)]
    unsafe fn span(&self, off: usize, n: usize) -> &mut [u8] {
        assert!(off + n <= self.len);
        // SAFETY: inside the mapping (asserted); the caller keeps spans disjoint.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), n) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly what mmap returned; no slice into it outlives this value.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The block device of the controller at `bdf` (`/dev/nvmeXn1`), waited for (the driver
/// probes asynchronously).
fn block_device(bdf: &str) -> Result<PathBuf> {
    let dir = Path::new("/sys/bus/pci/devices").join(bdf).join("nvme");
    let start = Instant::now();
    loop {
        if let Ok(ctrls) = std::fs::read_dir(&dir) {
            for c in ctrls.flatten() {
                let name = c.file_name().to_string_lossy().into_owned();
                let dev = PathBuf::from(format!("/dev/{name}n1"));
                if dev.exists() {
                    return Ok(dev);
                }
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{bdf}: no /dev/nvmeXn1 within 30 s (is it on the kernel nvme driver?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `total` bytes of `dev` in `transfer`-byte O_DIRECT reads, `qd` threads each with
/// one in flight, into `buf` (cycling through it); returns seconds and per-read latencies.
fn stream(
    dev: &File,
    buf: &Mapping,
    total: usize,
    transfer: usize,
    qd: usize,
) -> Result<(f64, Vec<Duration>)> {
    let ops = total / transfer;
    let slots = buf.len / transfer;
    let start = Instant::now();
    let lats = std::thread::scope(|s| -> Result<Vec<Duration>> {
        let handles: Vec<_> = (0..qd)
            .map(|t| {
                s.spawn(move || -> Result<Vec<Duration>> {
                    let mut lat = Vec::new();
                    for op in (t..ops).step_by(qd) {
                        // Each thread owns the slots congruent to it modulo qd.
                        let slot = (op % (slots / qd).max(1)) * qd + t % slots;
                        // SAFETY: slot ≡ t (mod qd) when slots ≥ qd, so no two threads
                        // share a slot; one read per slot at a time in this thread.
                        let dst = unsafe { buf.span(slot * transfer, transfer) };
                        let t0 = Instant::now();
                        let n = dev
                            .read_at(dst, (op * transfer) as u64)
                            .with_context(|| format!("O_DIRECT read at {:#x}", op * transfer))?;
                        lat.push(t0.elapsed());
                        if n != transfer {
                            bail!("short read: {n} of {transfer}");
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("reader thread")?);
        }
        Ok(all)
    })?;
    Ok((start.elapsed().as_secs_f64(), lats))
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e6
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = Manifest::load_in_guest()?;
    let bdf = |role: &str| -> Result<String> {
        Ok(m.device(role)
            .with_context(|| format!("no role {role}"))?
            .bdf
            .clone())
    };
    let (cmb, src) = (bdf(&args[0])?, bdf(&args[1])?);
    let mib: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let p2pmem = Path::new("/sys/bus/pci/devices").join(&cmb).join("p2pmem");
    let read = |f: &str| std::fs::read_to_string(p2pmem.join(f)).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({"p2pmem": cmb, "size": read("size").trim(),
            "available": read("available").trim(), "published": read("published").trim()})
    );
    let alloc = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p2pmem.join("allocate"))
        .with_context(|| format!("{cmb} publishes no p2pmem (no CMB, or no P2PDMA)"))?;
    let len = mib << 20;
    let p2p = Mapping::new(Some(&alloc), len).context("mapping p2pmem")?;
    let host = Mapping::new(None, len)?;
    let dev_path = block_device(&src)?;
    let dev = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev_path)
        .with_context(|| format!("opening {} O_DIRECT", dev_path.display()))?;
    // Correctness first: the same 1 MiB read into both must match.
    stream(&dev, &p2p, 1 << 20, 1 << 20, 1)?;
    stream(&dev, &host, 1 << 20, 1 << 20, 1)?;
    // SAFETY: no reads are in flight; these are the only views.
    let same = unsafe { p2p.span(0, 1 << 20) == host.span(0, 1 << 20) };
    if !same {
        bail!("the O_DIRECT read into p2pmem differs from the one into host memory");
    }
    for qd in [1usize, 4, 16, 64] {
        for kib in [4usize, 16, 64, 256, 1024] {
            let transfer = kib << 10;
            if transfer * qd > len {
                continue;
            }
            let total = (transfer * 512).clamp(4 << 20, 32 << 20);
            let mut row = serde_json::json!({"qd": qd, "transfer": transfer, "bytes": total});
            for (name, buf) in [("p2pmem", &p2p), ("host", &host)] {
                let mut best = Vec::new();
                for _ in 0..3 {
                    let (secs, _) = stream(&dev, buf, total, transfer, qd)?;
                    best.push(total as f64 / secs / 1e9);
                }
                best.sort_by(f64::total_cmp);
                row[format!("{name}_gbps")] = best[1].into();
            }
            println!("{row}");
        }
    }
    let (_, mut lp) = stream(&dev, &p2p, 2000 * 4096, 4096, 1)?;
    let (_, mut lh) = stream(&dev, &host, 2000 * 4096, 4096, 1)?;
    println!(
        "{}",
        serde_json::json!({"latency_4k_qd1": {
            "p2pmem_p50_us": pct(&mut lp, 0.5), "p2pmem_p99_us": pct(&mut lp, 0.99),
            "host_p50_us": pct(&mut lh, 0.5), "host_p99_us": pct(&mut lh, 0.99)}})
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerdma-guest-p2pmem: {e:#}");
            ExitCode::FAILURE
        }
    }
}
