//! The kernel's own NVMe driver as an engine: O_DIRECT I/O on a raw NVMe block device
//! (`/dev/nvme0n1`, controller left on nvme-pci) straight into, or out of, a dma-buf
//! registered with io_uring. Needs the kernel series [`SERIES`] (not upstream yet).
//!
//! [`KernelNvme::open`] checks that the path is a whole NVMe namespace on nvme-pci,
//! reads its limits from sysfs ([`BlockLimits`]), sets up an io_uring with a one-slot
//! sparse buffer table, confirms by behaviour that the kernel takes extended buffer
//! descriptors (an `IO_REGBUF_TYPE_EMPTY` update, which 7.2 refuses with `EINVAL`), then
//! installs the dma-buf in slot 0 (`IO_REGBUF_TYPE_DMABUF`, `size` 0: the whole buffer,
//! `target_fd` the block device). [`KernelNvme::transfer`] then issues
//! `IORING_OP_READ_FIXED` / `IORING_OP_WRITE_FIXED` whose `addr` is a byte offset into
//! the dma-buf, at the queue depth, each I/O at most `max_hw_sectors_kb`.
//!
//! Two hangs of the posted v3 series are kept clear of: an I/O longer than
//! `max_hw_sectors_kb` submitted without `IOSQE_ASYNC` leaks a dma-buf mapping reference
//! (after which the exporter's close and REVOKE block forever), so no I/O here is
//! longer; and a task that REVOKEs with its own dma-buf I/O in flight can deadlock, so
//! [`KernelNvme::transfer`] returns only once every I/O it submitted has completed
//! (also on error): between calls nothing is in flight.
//!
//! A REVOKE of the dma-buf (from any task, with nothing in flight) is safe: the next
//! I/O fails with `ENODEV`, [`KernelNvmeError::Revoked`]. A REVOKE from another thread
//! during a [`KernelNvme::transfer`] waits for its I/Os (seen on the ahead kernel; docs/
//! nvme.md has the reproducers of both hangs).
//!
//! The P2P distance check applies (nvme-pci maps the dma-buf through the DMA API): when
//! it refuses the route the registration still succeeds and every I/O fails with
//! `EINVAL`; that is [`KernelNvmeError::P2pRefused`].

mod error;
pub mod plan;
mod ring;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peerdma_uapi::ahead::{io_uring_regbuf_desc, IO_REGBUF_TYPE_DMABUF, IO_REGBUF_TYPE_EMPTY};
use rustix::fs::{fstat, open, FileType, Mode, OFlags};
use rustix::io::Errno;

pub use error::KernelNvmeError;
pub use plan::{BlockLimits, Direction, FixedIo, DMABUF_ALIGN};

use error::{io_error, registration_error};
use ring::Ring;

/// The kernel series this engine needs.
pub const SERIES: &str = "\"Add dmabuf read/write via io_uring\" (Pavel Begunkov, posted v3 \
                          2026-04-29, not upstream yet)";

/// Result type of this module.
pub type Result<T, E = KernelNvmeError> = std::result::Result<T, E>;

/// How to drive the device.
#[derive(Clone, Copy, Debug)]
pub struct KernelNvmeOptions {
    /// I/Os in flight at once (the io_uring's size); at least 1.
    pub queue_depth: u32,
}

impl Default for KernelNvmeOptions {
    fn default() -> Self {
        KernelNvmeOptions { queue_depth: 32 }
    }
}

/// What one [`KernelNvme::transfer`] did.
#[derive(Clone, Debug, Default)]
pub struct KernelIoReport {
    /// Bytes moved.
    pub bytes: u64,
    /// I/Os issued.
    pub ios: u32,
    /// Wall time from the first submission to the last completion.
    pub elapsed: Duration,
    /// Each I/O's time from submission to completion, in completion order.
    pub latencies: Vec<Duration>,
}

/// A raw NVMe namespace on the kernel's nvme driver with a dma-buf registered for
/// io_uring fixed I/O (see the [module](self) docs).
pub struct KernelNvme {
    ring: Ring,
    file: OwnedFd,
    name: String,
    controller: String,
    limits: BlockLimits,
    buf_size: u64,
    depth: u32,
    any_good: bool,
}

/// The registered buffer slot the dma-buf sits in.
const SLOT: u16 = 0;

impl KernelNvme {
    /// Opens `path` (a whole NVMe namespace such as `/dev/nvme0n1`) O_DIRECT and
    /// registers `dmabuf` (any dma-buf fd, e.g. a [`peerdma_exporter::DmaBuf`] of a
    /// BAR) for I/O on it.
    ///
    /// # Errors
    /// [`KernelNvmeError::NotNvmeBlockDevice`], [`KernelNvmeError::Sysfs`] and
    /// [`KernelNvmeError::Open`] for the device; [`KernelNvmeError::Ring`] when io_uring
    /// cannot be set up; [`KernelNvmeError::FeatureMissing`] on a kernel without
    /// [`SERIES`] (7.2: `EINVAL`); [`KernelNvmeError::Registration`] when the kernel
    /// has the series but refuses this dma-buf or device.
    pub fn open(path: &Path, dmabuf: BorrowedFd<'_>, opts: KernelNvmeOptions) -> Result<Self> {
        let (name, controller) = namespace(path)?;
        let limits = limits(&name)?;
        let file = open(
            path,
            OFlags::RDWR | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| KernelNvmeError::Open {
            path: path.to_owned(),
            errno,
        })?;
        let st = fstat(&file).map_err(|errno| KernelNvmeError::Open {
            path: path.to_owned(),
            errno,
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
            return Err(KernelNvmeError::NotNvmeBlockDevice {
                path: path.to_owned(),
                why: "not a block device".into(),
            });
        }
        let buf_size = rustix::fs::seek(dmabuf, rustix::fs::SeekFrom::End(0)).map_err(|e| {
            registration_error(&name, if e == Errno::SPIPE { Errno::BADF } else { e })
        })?;
        let depth = opts.queue_depth.max(1);
        let ring = Ring::new(depth).map_err(|source| KernelNvmeError::Ring {
            what: "io_uring_setup",
            source,
        })?;
        if let Some(errno) = extended_update_refused(&ring)? {
            return Err(KernelNvmeError::FeatureMissing {
                device: name.clone(),
                errno,
            });
        }
        let desc = io_uring_regbuf_desc {
            type_: IO_REGBUF_TYPE_DMABUF,
            dmabuf_fd: dmabuf.as_raw_fd(),
            target_fd: file.as_raw_fd(),
            ..Default::default()
        };
        match ring.update_buffers_extended(u32::from(SLOT), &[desc]) {
            Ok(1) => {}
            Ok(_) => return Err(registration_error(&name, Errno::INVAL)),
            Err(errno) => return Err(registration_error(&name, errno)),
        }
        Ok(KernelNvme {
            ring,
            file,
            name,
            controller,
            limits,
            buf_size,
            depth,
            any_good: false,
        })
    }

    /// The namespace's limits (block size, longest I/O, capacity).
    pub fn limits(&self) -> BlockLimits {
        self.limits
    }

    /// The registered dma-buf's size in bytes.
    pub fn dmabuf_size(&self) -> u64 {
        self.buf_size
    }

    /// The block device's name (`nvme0n1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NVMe controller's PCI address, "?" where sysfs does not say.
    pub fn controller(&self) -> &str {
        &self.controller
    }

    /// Namespace → dma-buf: `len` bytes from namespace byte `device_offset` to dma-buf
    /// byte `buf_offset`. See [`KernelNvme::transfer`].
    ///
    /// # Errors
    /// As [`KernelNvme::transfer`].
    pub fn read(
        &mut self,
        device_offset: u64,
        buf_offset: u64,
        len: u64,
    ) -> Result<KernelIoReport> {
        self.transfer(Direction::Read, device_offset, buf_offset, len)
    }

    /// Dma-buf → namespace: `len` bytes from dma-buf byte `buf_offset` to namespace byte
    /// `device_offset`. See [`KernelNvme::transfer`].
    ///
    /// # Errors
    /// As [`KernelNvme::transfer`].
    pub fn write(
        &mut self,
        device_offset: u64,
        buf_offset: u64,
        len: u64,
    ) -> Result<KernelIoReport> {
        self.transfer(Direction::Write, device_offset, buf_offset, len)
    }

    /// Moves `len` bytes (a multiple of the logical block) between namespace byte
    /// `device_offset` (block aligned) and dma-buf byte `buf_offset` (4-byte aligned),
    /// as I/Os of at most `max_hw_sectors_kb`, up to the queue depth at once. Returns
    /// when every I/O submitted has completed, also on error (but
    /// [`KernelNvmeError::Stranded`]).
    ///
    /// # Errors
    /// [`KernelNvmeError::Alignment`] / [`KernelNvmeError::OutOfRange`] before any
    /// I/O; [`KernelNvmeError::P2pRefused`] when the I/Os fail with `EINVAL` before any
    /// succeeded; [`KernelNvmeError::ShortIo`] and [`KernelNvmeError::DeviceIo`] for a
    /// failed I/O (the first one, by completion); [`KernelNvmeError::Ring`] when
    /// `io_uring_enter` fails, [`KernelNvmeError::Stranded`] when it fails and some I/Os
    /// it had taken did not complete within 30 s after.
    pub fn transfer(
        &mut self,
        dir: Direction,
        device_offset: u64,
        buf_offset: u64,
        len: u64,
    ) -> Result<KernelIoReport> {
        plan::check(
            &self.name,
            self.limits,
            self.buf_size,
            device_offset,
            buf_offset,
            len,
        )?;
        let ios = plan::chunks(self.limits, device_offset, buf_offset, len);
        let fd = self.file.as_fd().as_raw_fd();
        let mut started: Vec<Option<Instant>> = vec![None; ios.len()];
        let mut report = KernelIoReport {
            ios: ios.len() as u32,
            ..Default::default()
        };
        let mut first_err: Option<KernelNvmeError> = None;
        let (mut next, mut inflight) = (0usize, 0u32);
        let t0 = Instant::now();
        loop {
            while first_err.is_none() && next < ios.len() && inflight < self.depth {
                let sqe = plan::sqe(dir, fd, SLOT, ios[next], next as u64);
                if !self.ring.push(&sqe) {
                    break;
                }
                started[next] = Some(Instant::now());
                next += 1;
                inflight += 1;
            }
            if inflight == 0 {
                break;
            }
            if let Err(source) = self.ring.submit_and_wait(1) {
                // The kernel still owns the I/Os it took: wait for them (bounded) before
                // returning, so that nothing lands after the caller was told it stopped.
                let left = self.drain(inflight.saturating_sub(self.ring.unsubmitted()));
                return Err(if left == 0 {
                    KernelNvmeError::Ring {
                        what: "io_uring_enter",
                        source,
                    }
                } else {
                    KernelNvmeError::Stranded {
                        device: self.name.clone(),
                        what: "io_uring_enter",
                        source,
                        left,
                        waited_s: DRAIN_WAIT.as_secs(),
                    }
                });
            }
            while let Some((user_data, res)) = self.ring.pop() {
                inflight -= 1;
                let i = user_data as usize;
                let Some(io) = ios.get(i).copied() else {
                    continue;
                };
                if let Some(t) = started[i] {
                    report.latencies.push(t.elapsed());
                }
                if res < 0 {
                    let errno = Errno::from_raw_os_error(-res);
                    let first_batch = !self.any_good;
                    first_err.get_or_insert_with(|| {
                        io_error(&self.name, &self.controller, dir, io, errno, first_batch)
                    });
                } else if res as u32 != io.len {
                    first_err.get_or_insert_with(|| KernelNvmeError::ShortIo {
                        device: self.name.clone(),
                        dir,
                        io,
                        done: res as u32,
                    });
                } else {
                    self.any_good = true;
                    report.bytes += u64::from(io.len);
                }
            }
        }
        report.elapsed = t0.elapsed();
        match first_err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Reaps the completions of `submitted` I/Os the kernel took, polling (task work runs
    /// on the way back from each sleep) for at most [`DRAIN_WAIT`]; returns how many
    /// never completed.
    fn drain(&mut self, mut submitted: u32) -> u32 {
        let deadline = Instant::now() + DRAIN_WAIT;
        while submitted > 0 && Instant::now() < deadline {
            while submitted > 0 && self.ring.pop().is_some() {
                submitted -= 1;
            }
            if submitted > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        submitted
    }
}

/// How long a failed transfer waits for the I/Os already in flight.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Whether the running kernel takes io_uring dma-buf buffer registrations ([`SERIES`]),
/// by behaviour on a throwaway one-entry io_uring (no device, no dma-buf): an
/// `IORING_RSRC_UPDATE_EXTENDED` update of an empty buffer slot, which 7.2 refuses
/// (`EINVAL`: the series' `flags` is 7.2's `resv`, which must be 0).
///
/// # Errors
/// [`KernelNvmeError::Ring`] when io_uring cannot be set up (disabled by
/// `kernel.io_uring_disabled`, no `CONFIG_IO_URING`) or the update fails otherwise.
pub fn probe_series() -> Result<SeriesProbe> {
    let ring = Ring::new(1).map_err(|source| KernelNvmeError::Ring {
        what: "io_uring_setup",
        source,
    })?;
    Ok(match extended_update_refused(&ring)? {
        None => SeriesProbe::Present,
        Some(errno) => SeriesProbe::Absent { errno },
    })
}

/// What [`probe_series`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeriesProbe {
    /// The kernel took the extended update.
    Present,
    /// The kernel refused it (`EINVAL` on 7.2).
    Absent {
        /// What the kernel returned.
        errno: Errno,
    },
}

/// A one-slot sparse buffer table on `ring`, then the behavioural probe: an extended
/// update of the empty slot. `Some(errno)`: refused with `EINVAL` (no series).
fn extended_update_refused(ring: &Ring) -> Result<Option<Errno>> {
    ring.register_sparse_buffers(1)
        .map_err(|e| KernelNvmeError::Ring {
            what: "IORING_REGISTER_BUFFERS2 (sparse)",
            source: e.into(),
        })?;
    let empty = io_uring_regbuf_desc {
        type_: IO_REGBUF_TYPE_EMPTY,
        ..Default::default()
    };
    match ring.update_buffers_extended(u32::from(SLOT), &[empty]) {
        Ok(_) => Ok(None),
        Err(Errno::INVAL) => Ok(Some(Errno::INVAL)),
        Err(errno) => Err(KernelNvmeError::Ring {
            what: "IORING_REGISTER_BUFFERS_UPDATE (IORING_RSRC_UPDATE_EXTENDED)",
            source: errno.into(),
        }),
    }
}

impl From<KernelNvmeError> for crate::EngineError {
    fn from(source: KernelNvmeError) -> Self {
        crate::EngineError::KernelNvme(Box::new(source))
    }
}

#[cfg(feature = "testing")]
impl KernelNvme {
    /// Test hook (feature `testing` only): submits `io` as **one** I/O, skipping the
    /// `max_hw_sectors_kb` split and the checks, with `IOSQE_ASYNC` or not, and waits
    /// for its completion; returns the CQE's `res`. It exists to reproduce the v3
    /// series' leak (an I/O over the limit without `IOSQE_ASYNC`, after which the
    /// exporter's close and REVOKE block forever): never call it outside a throwaway VM.
    ///
    /// # Errors
    /// [`KernelNvmeError::Ring`] when `io_uring_enter` fails.
    pub fn submit_one_unsplit(&mut self, dir: Direction, io: FixedIo, async_: bool) -> Result<i32> {
        let fd = self.file.as_fd().as_raw_fd();
        let mut sqe = plan::sqe(dir, fd, SLOT, io, 0);
        if async_ {
            sqe.flags = rustix::io_uring::IoringSqeFlags::ASYNC;
        }
        if !self.ring.push(&sqe) {
            return Err(KernelNvmeError::Ring {
                what: "io_uring submission queue full",
                source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
            });
        }
        self.ring
            .submit_and_wait(1)
            .map_err(|source| KernelNvmeError::Ring {
                what: "io_uring_enter",
                source,
            })?;
        loop {
            if let Some((_, res)) = self.ring.pop() {
                return Ok(res);
            }
            self.ring
                .submit_and_wait(1)
                .map_err(|source| KernelNvmeError::Ring {
                    what: "io_uring_enter",
                    source,
                })?;
        }
    }

    /// Test hook (feature `testing` only): submits `ios` (at most the queue depth) and
    /// returns without waiting, so that a test can act while they are in flight; reap
    /// them with [`KernelNvme::wait_for_testing`]. The v3 series can deadlock a task
    /// that REVOKEs with its own dma-buf reads in flight: a throwaway VM only.
    ///
    /// # Errors
    /// [`KernelNvmeError::Ring`] when the ring is full or `io_uring_enter` fails.
    pub fn submit_nowait_for_testing(&mut self, dir: Direction, ios: &[FixedIo]) -> Result<()> {
        let fd = self.file.as_fd().as_raw_fd();
        for (i, io) in ios.iter().enumerate() {
            if !self.ring.push(&plan::sqe(dir, fd, SLOT, *io, i as u64)) {
                return Err(KernelNvmeError::Ring {
                    what: "io_uring submission queue full",
                    source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
                });
            }
        }
        self.ring
            .submit_and_wait(0)
            .map_err(|source| KernelNvmeError::Ring {
                what: "io_uring_enter",
                source,
            })
    }

    /// Test hook (feature `testing` only): waits for `n` completions; their `res`, in
    /// completion order.
    ///
    /// # Errors
    /// [`KernelNvmeError::Ring`] when `io_uring_enter` fails.
    pub fn wait_for_testing(&mut self, n: usize) -> Result<Vec<i32>> {
        let mut out = Vec::with_capacity(n);
        loop {
            while let Some((_, res)) = self.ring.pop() {
                out.push(res);
            }
            if out.len() >= n {
                return Ok(out);
            }
            self.ring
                .submit_and_wait(1)
                .map_err(|source| KernelNvmeError::Ring {
                    what: "io_uring_enter",
                    source,
                })?;
        }
    }
}

/// Checks that `path` is a whole NVMe namespace on nvme-pci; returns its name and its
/// controller's PCI address ("?" where sysfs does not say).
fn namespace(path: &Path) -> Result<(String, String)> {
    let not = |why: String| KernelNvmeError::NotNvmeBlockDevice {
        path: path.to_owned(),
        why,
    };
    let real = fs::canonicalize(path).map_err(|e| not(format!("cannot resolve it: {e}")))?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| not("no device name".into()))?
        .to_owned();
    let class = Path::new("/sys/class/block").join(&name);
    if !class.exists() {
        return Err(not("not a block device".into()));
    }
    if class.join("partition").exists() {
        return Err(not("a partition, not a whole namespace".into()));
    }
    // `device` is the controller (nvme0), or with native multipath the subsystem
    // (nvme-subsys0), whose controllers (nvme0, ...) are its entries.
    let device = Path::new("/sys/block").join(&name).join("device");
    let mut ctrls = vec![device.clone()];
    if let Ok(entries) = fs::read_dir(&device) {
        let mut more: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("nvme"))
            .map(|e| e.path())
            .collect();
        more.sort();
        ctrls.extend(more);
    }
    let Some(ctrl) = ctrls.into_iter().find(|c| c.join("transport").exists()) else {
        return Err(not(
            "not an NVMe namespace (no NVMe controller in sysfs)".into()
        ));
    };
    let transport = fs::read_to_string(ctrl.join("transport")).unwrap_or_default();
    if transport.trim() != "pcie" {
        return Err(not(format!("NVMe over {}, not nvme-pci", transport.trim())));
    }
    let controller = fs::read_to_string(ctrl.join("address"))
        .map(|a| a.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    Ok((name, controller))
}

/// Reads one number from a sysfs attribute.
fn sysfs_u64(path: PathBuf) -> Result<u64> {
    let text = fs::read_to_string(&path).map_err(|source| KernelNvmeError::Sysfs {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|e| KernelNvmeError::Sysfs {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// The namespace's [`BlockLimits`] from `/sys/block/<name>`.
fn limits(name: &str) -> Result<BlockLimits> {
    let dir = Path::new("/sys/block").join(name);
    Ok(BlockLimits {
        logical_block: sysfs_u64(dir.join("queue/logical_block_size"))?,
        max_io: sysfs_u64(dir.join("queue/max_hw_sectors_kb"))? * 1024,
        capacity: sysfs_u64(dir.join("size"))? * 512,
    })
}
