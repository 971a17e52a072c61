//! Guest side of the iommufd import suite: QEMU's edu DMAs between host memory
//! and ivshmem0's BAR2 through an iommufd IOAS where the BAR is mapped as a
//! vfio-pci dma-buf. Prints one JSON line per scenario; the host checks the
//! lines and ivshmem0's backing file.
//!
//! Usage (in the testbed):
//! `peerdma-guest-iommufd SCENARIO... [--c-lib PATH] [--iters N] [--len BYTES]`
//!
//! Scenarios:
//! - `host-to-bar`: a pattern in host memory → edu buffer → the BAR dma-buf mapping;
//!   the host finds it in the backing file.
//! - `bar-to-host`: a pattern written into the BAR → edu → host memory, checked here.
//! - `guard`: a DMA that runs past an automatically placed mapping faults in the guard
//!   gap (the neighbour mapping's bytes stay as they were); the control pair mapped
//!   back to back without a gap shows the same overrun landing.
//! - `revoke`: memory decode off on ivshmem0 kills the mapping (a DMA does not land),
//!   decode on leaves it dead, `remap` brings it back at the same IOVA.
//! - `errors`: the explained errors (multi-range buffer, foreign exporter, DMA mask,
//!   wrong iommufd, not an edu) and no fd left behind.
//! - `stock`: the full request on a kernel without iommufd fails with the explained
//!   error and leaves no fd behind.
//! - `bench`: map/unmap of a dma-buf, Rust library against the same ioctls from C
//!   (`--c-lib`: importer/benches/iommufd_map_unmap.c built with `-shared -fPIC`).
//! - `all`: every reference-kernel scenario but `bench`.

use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use peerdma_exporter::{
    AccessPath, Bdf, Device, DmaBuf, DmaRange, MappedRegion, OpenOptions, PassedFds, RevokeReason,
};
use peerdma_importer::iommufd::{
    self, Access, Attachment, DmaBufMapping, Ioas, Iommufd, Iova, MappingState, Placement,
    UserBuffer, UserMapping,
};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use peerdma_testbed::process::fd_count;
use peerdma_tools::engines::{DmaEngine, Edu, EngineError, TransferReport};
use serde_json::{json, Value};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// edu's buffer and longest transfer.
const EDU_BUF: u64 = 4096;

/// Where each scenario works in ivshmem0's BAR2 (offsets in the BAR and in the
/// backing file).
mod at {
    use super::{KIB, MIB};
    pub const HOST_TO_BAR: u64 = MIB;
    pub const HOST_TO_BAR_IN_BUF: u64 = 0x3000;
    pub const BAR_TO_HOST: u64 = 2 * MIB;
    pub const GUARD: u64 = 4 * MIB;
    pub const CONTROL: u64 = 5 * MIB;
    pub const REVOKE: u64 = 8 * MIB;
    pub const MULTI: u64 = 12 * MIB;
    pub const BENCH: u64 = 16 * MIB;
    pub const SMALL: u64 = 64 * KIB;
}

/// The devices and the IOAS every reference scenario uses.
struct Rig {
    // Mapped region, attachment and engine before the devices they came from.
    edu: Edu,
    _attached: Attachment,
    ioas: Ioas,
    iommufd: Iommufd,
    bar2: MappedRegion,
    ivshmem: Device,
    edu_dev: Device,
    ivshmem1: Bdf,
}

fn bdf_of(m: &Manifest, role: &str) -> Result<Bdf> {
    let d = m
        .device(role)
        .with_context(|| format!("no {role} in testbed.json"))?;
    d.bdf
        .parse()
        .with_context(|| format!("{role}: bad BDF {}", d.bdf))
}

/// The request an importer makes: an iommufd, the edu engine bound to it and
/// attached to an IOAS limited to edu's DMA mask, and ivshmem0 for exports.
fn setup(m: &Manifest) -> Result<Rig> {
    let iommufd = Iommufd::open()?;
    let edu_dev = Device::open_with(
        bdf_of(m, "edu0")?,
        OpenOptions {
            access: AccessPath::Cdev,
            passed: PassedFds::Iommufd(iommufd.try_clone_fd()?),
            ..OpenOptions::default()
        },
    )?;
    let edu = Edu::open(&edu_dev)?;
    let ioas = Ioas::alloc_with(
        &iommufd,
        Placement::for_engine(edu.dma_mask(), edu.max_transfer()),
    )?;
    let attached = ioas.attach(&edu_dev)?;
    let ivshmem = Device::open_with(
        bdf_of(m, "ivshmem0")?,
        OpenOptions {
            access: AccessPath::Cdev,
            ..OpenOptions::default()
        },
    )?;
    let bar2 = ivshmem.map_region(2)?;
    Ok(Rig {
        edu,
        _attached: attached,
        ioas,
        iommufd,
        bar2,
        ivshmem,
        edu_dev,
        ivshmem1: bdf_of(m, "ivshmem1")?,
    })
}

impl Rig {
    fn export_dma_buf(&self, offset: u64, len: u64) -> Result<DmaBuf> {
        Ok(self.ivshmem.export_dma_buf(
            2,
            &[DmaRange {
                offset,
                length: len,
            }],
        )?)
    }

    fn map_bar<'b>(&self, buf: &'b DmaBuf, iova: Iova) -> Result<DmaBufMapping<&'b DmaBuf>> {
        Ok(self
            .ioas
            .map_vfio_dmabuf(&self.ivshmem, buf, 0, buf.size(), iova, Access::ReadWrite)?)
    }

    fn host(&self, len: u64, access: Access) -> Result<UserMapping> {
        Ok(self
            .ioas
            .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, access)?)
    }

    /// Loads edu's buffer with `seed`'s pattern through a host mapping.
    fn load_edu(&mut self, seed: u64) -> Result<TransferReport> {
        let host = self.host(EDU_BUF, Access::Read)?;
        let mut data = vec![0u8; EDU_BUF as usize];
        pattern::fill(seed, 0, &mut data);
        host.buffer().write(0, &data)?;
        Ok(self.edu.load(host.iova(), 0, EDU_BUF)?)
    }

    fn bar_read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        self.bar2.read_bytes(offset as usize, &mut v)?;
        Ok(v)
    }

    fn bar_write_pattern(&self, seed: u64, offset: u64, len: u64) -> Result<()> {
        let mut v = vec![0u8; len as usize];
        pattern::fill(seed, 0, &mut v);
        Ok(self.bar2.write_bytes(offset as usize, &v)?)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// DMAR fault lines the kernel logged since the last call (read from /dev/kmsg).
struct Faults {
    kmsg: Option<std::fs::File>,
}

impl Faults {
    fn new() -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let kmsg = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open("/dev/kmsg")
            .ok();
        let mut f = Faults { kmsg };
        f.take();
        f
    }

    /// The fault lines logged since the last call.
    fn take(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut out = Vec::new();
        let Some(k) = self.kmsg.as_mut() else {
            return out;
        };
        let mut rec = vec![0u8; 8192];
        loop {
            match k.read(&mut rec) {
                Ok(0) => break,
                Ok(n) => {
                    let line = String::from_utf8_lossy(&rec[..n]);
                    let text = line.split_once(';').map_or(&*line, |(_, t)| t).trim();
                    if text.contains("DMAR") && text.contains("fault") {
                        out.push(text.to_string());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc_epipe()) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// Fault lines after a short wait for the fault interrupt to be handled.
    fn settle(&mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.take()
    }
}

/// EPIPE: /dev/kmsg records were overwritten since the last read.
fn libc_epipe() -> i32 {
    rustix::io::Errno::PIPE.raw_os_error()
}

/// Host memory pattern → edu → BAR dma-buf mapping. The host checks the file.
fn host_to_bar(rig: &mut Rig) -> Result<Value> {
    let seed = 0x1001;
    let host = rig.host(EDU_BUF, Access::Read)?;
    let mut data = vec![0u8; EDU_BUF as usize];
    pattern::fill(seed, 0, &mut data);
    host.buffer().write(0, &data)?;
    let buf = rig.export_dma_buf(at::HOST_TO_BAR, MIB)?;
    let bar = rig.map_bar(&buf, Iova::Guarded)?;
    let to = rig.edu.load(host.iova(), 0, EDU_BUF)?;
    let from = rig
        .edu
        .store(0, bar.iova() + at::HOST_TO_BAR_IN_BUF, EDU_BUF)?;
    let back = rig.bar_read(at::HOST_TO_BAR + at::HOST_TO_BAR_IN_BUF, EDU_BUF)?;
    let mismatch = pattern::first_mismatch(seed, 0, &back);
    Ok(json!({
        "ok": mismatch.is_none(),
        "seed": seed,
        "bar_offset": at::HOST_TO_BAR + at::HOST_TO_BAR_IN_BUF,
        "len": EDU_BUF,
        "host_iova": host.iova(),
        "bar_iova": bar.iova(),
        "guest_mismatch": mismatch,
        "edu_ms": [ms(to.elapsed), ms(from.elapsed)],
        "mappings": rig.ioas.mappings(),
    }))
}

/// BAR pattern → edu → host memory, checked here.
fn bar_to_host(rig: &mut Rig) -> Result<Value> {
    let seed = 0x2002;
    rig.bar_write_pattern(seed, at::BAR_TO_HOST, EDU_BUF)?;
    let buf = rig.export_dma_buf(at::BAR_TO_HOST, at::SMALL)?;
    let bar = rig.ioas.map_vfio_dmabuf(
        &rig.ivshmem,
        &buf,
        0,
        at::SMALL,
        Iova::Guarded,
        Access::Read,
    )?;
    let host = rig.host(2 * EDU_BUF, Access::Write)?;
    let report = rig.edu.copy(bar.iova(), host.iova() + EDU_BUF, EDU_BUF)?;
    let got = host.buffer().to_vec();
    let mismatch = pattern::first_mismatch(seed, 0, &got[EDU_BUF as usize..]);
    let untouched = got[..EDU_BUF as usize].iter().all(|&b| b == 0);
    Ok(json!({
        "ok": mismatch.is_none() && untouched,
        "seed": seed,
        "mismatch": mismatch,
        "first_page_untouched": untouched,
        "bar_iova": bar.iova(),
        "host_iova": host.iova(),
        "transfers": report.transfers,
        "edu_ms_total": ms(report.elapsed),
    }))
}

/// A DMA that overruns an automatic mapping faults in the guard gap; the same
/// overrun between two mappings placed back to back lands in the neighbour.
fn guard(rig: &mut Rig, faults: &mut Faults) -> Result<Value> {
    let seed = 0x3003;
    let sentinel = 0x3eee;
    let half = EDU_BUF / 2;
    // Guarded pair: both automatic.
    let a_buf = rig.export_dma_buf(at::GUARD, at::SMALL)?;
    let b_buf = rig.export_dma_buf(at::GUARD + at::SMALL, at::SMALL)?;
    // Control pair: the second one fixed right after the first.
    let c_buf = rig.export_dma_buf(at::CONTROL, at::SMALL)?;
    let d_buf = rig.export_dma_buf(at::CONTROL + at::SMALL, at::SMALL)?;
    rig.bar_write_pattern(sentinel, at::GUARD + at::SMALL, EDU_BUF)?;
    rig.bar_write_pattern(sentinel, at::CONTROL + at::SMALL, EDU_BUF)?;
    let a = rig.map_bar(&a_buf, Iova::Guarded)?;
    let b = rig.map_bar(&b_buf, Iova::Guarded)?;
    let c = rig.map_bar(&c_buf, Iova::Guarded)?;
    let d = rig.map_bar(&d_buf, Iova::Fixed(c.iova() + at::SMALL))?;
    let gap = b.iova() - (a.iova() + a.len());
    rig.load_edu(seed)?;
    faults.take();
    // 4 KiB starting 2 KiB before the end of A: half in A, half past it.
    let guarded_dst = a.iova() + a.len() - half;
    rig.edu.store(0, guarded_dst, EDU_BUF)?;
    let guarded_faults = faults.settle();
    let control_dst = c.iova() + c.len() - half;
    rig.edu.store(0, control_dst, EDU_BUF)?;
    let control_faults = faults.settle();
    // What the guest sees (the host re-checks the backing file).
    let in_a = rig.bar_read(at::GUARD + at::SMALL - half, half)?;
    let in_b = rig.bar_read(at::GUARD + at::SMALL, EDU_BUF)?;
    let in_d = rig.bar_read(at::CONTROL + at::SMALL, half)?;
    let a_ok = pattern::first_mismatch(seed, 0, &in_a).is_none();
    let b_untouched = pattern::first_mismatch(sentinel, 0, &in_b).is_none();
    let d_hit = pattern::first_mismatch(seed, half, &in_d).is_none();
    Ok(json!({
        "ok": a_ok && b_untouched && d_hit && gap >= rig.ioas.placement().guard,
        "seed": seed,
        "sentinel": sentinel,
        "guard": rig.ioas.placement().guard,
        "gap": gap,
        "a_iova": a.iova(), "b_iova": b.iova(), "c_iova": c.iova(), "d_iova": d.iova(),
        "guarded_dst": guarded_dst,
        "control_dst": control_dst,
        "a_tail_offset": at::GUARD + at::SMALL - half,
        "b_offset": at::GUARD + at::SMALL,
        "d_offset": at::CONTROL + at::SMALL,
        "half": half,
        "len": EDU_BUF,
        "a_tail_written": a_ok,
        "b_untouched": b_untouched,
        "control_overrun_landed": d_hit,
        "guarded_faults": guarded_faults,
        "control_faults": control_faults,
    }))
}

/// Memory decode off kills the mapping; decode on leaves it dead; remap revives it.
fn revoke(rig: &mut Rig, faults: &mut Faults) -> Result<Value> {
    let seeds = [0x4001u64, 0x4002, 0x4003, 0x4004, 0x4005];
    let e_buf = rig.export_dma_buf(at::REVOKE, at::SMALL)?;
    let f_buf = rig.export_dma_buf(at::REVOKE + at::SMALL, at::SMALL)?;
    let mut e = rig.map_bar(&e_buf, Iova::Guarded)?;
    let mut f = rig.map_bar(&f_buf, Iova::Guarded)?;
    let iova_before = e.iova();
    let mut steps = Vec::new();
    let state = |m: &mut DmaBufMapping<&DmaBuf>| format!("{:?}", m.state());

    // 1. Live: lands.
    rig.load_edu(seeds[0])?;
    rig.edu.store(0, e.iova(), EDU_BUF)?;
    steps.push(json!({"step": "live", "state": state(&mut e), "dst_offset": 0, "seed": seeds[0]}));

    // 2. Decode off: the library reports the revoke; a DMA does not land.
    rig.load_edu(seeds[1])?;
    faults.take();
    rig.ivshmem.set_memory_decode(false)?;
    let revoked_state = e.state();
    rig.edu.store(0, e.iova() + 0x1000, EDU_BUF)?;
    let revoked_faults = faults.settle();
    steps.push(
        json!({"step": "decode_off", "state": format!("{revoked_state:?}"),
        "dst_offset": 0x1000, "seed": seeds[1], "faults": revoked_faults}),
    );
    // A new map and a remap of the revoked buffer: ENODEV, explained.
    let new_map = rig
        .map_bar(&e_buf, Iova::Guarded)
        .err()
        .map(|e| format!("{e:#}"));
    let f_remap = f.remap().err();
    let f_remap_errno = f_remap
        .as_ref()
        .and_then(iommufd::Error::errno)
        .map(|e| e.raw_os_error());
    let f_state_after_failed_remap = state(&mut f);

    // 3. Decode on: still dead until remapped.
    rig.load_edu(seeds[2])?;
    rig.ivshmem.set_memory_decode(true)?;
    let restored_state = e.state();
    rig.edu.store(0, e.iova() + 0x2000, EDU_BUF)?;
    let dead_faults = faults.settle();
    steps.push(
        json!({"step": "decode_on", "state": format!("{restored_state:?}"),
        "dst_offset": 0x2000, "seed": seeds[2], "faults": dead_faults}),
    );

    // 4. Remap at the same IOVA: lands again.
    let remapped = e.remap_if_needed()?;
    let f_remapped = f.remap_if_needed()?;
    rig.load_edu(seeds[3])?;
    rig.edu.store(0, e.iova() + 0x3000, EDU_BUF)?;
    steps.push(
        json!({"step": "remapped", "state": state(&mut e), "dst_offset": 0x3000,
        "seed": seeds[3], "remapped": remapped}),
    );

    // 5. A reset revokes and restores in one go: the mapping needs a remap.
    let reset = match rig.ivshmem.reset() {
        Ok(()) => {
            let after_reset = e.state();
            let again = e.remap_if_needed()?;
            rig.load_edu(seeds[4])?;
            rig.edu.store(0, e.iova() + 0x4000, EDU_BUF)?;
            json!({"supported": true, "state": format!("{after_reset:?}"), "remapped": again,
                   "dst_offset": 0x4000, "seed": seeds[4], "state_after": state(&mut e)})
        }
        Err(err) => json!({"supported": false, "error": err.to_string()}),
    };

    let ok = revoked_state == MappingState::Revoked(Some(RevokeReason::MemoryDecodeOff))
        && restored_state == MappingState::NeedsRemap
        && remapped
        && f_remapped
        && e.iova() == iova_before
        && e.state() == MappingState::Live
        && f.state() == MappingState::Live
        && f_remap_errno == Some(rustix::io::Errno::NODEV.raw_os_error())
        && new_map.is_some();
    Ok(json!({
        "ok": ok,
        "bar_offset": at::REVOKE,
        "len": EDU_BUF,
        "iova": e.iova(),
        "steps": steps,
        "map_while_revoked": new_map,
        "remap_while_revoked": f_remap.map(|e| e.to_string()),
        "remap_while_revoked_state": f_state_after_failed_remap,
        "reset": reset,
    }))
}

/// The explained errors, and no fd left behind by them.
fn errors(rig: &mut Rig) -> Result<Value> {
    let before = fd_count();
    let mut out = serde_json::Map::new();
    let describe = |r: Result<(), iommufd::Error>| match r {
        Ok(()) => json!({"ok": false, "error": null}),
        Err(e) => {
            json!({"error": e.to_string(), "variant": format!("{e:?}").split([' ', '{', '(']).next().unwrap_or("").to_string(),
                          "errno": e.errno().map(|e| e.raw_os_error())})
        }
    };
    // Multi-range buffer: the kernel's EOPNOTSUPP, explained (generic path), and the
    // same error predicted by the vfio-aware path.
    let multi = rig.ivshmem.export_dma_buf(
        2,
        &[
            DmaRange {
                offset: at::MULTI,
                length: 4 * KIB,
            },
            DmaRange {
                offset: at::MULTI + 8 * KIB,
                length: 4 * KIB,
            },
            DmaRange {
                offset: at::MULTI + 16 * KIB,
                length: 4 * KIB,
            },
        ],
    )?;
    out.insert(
        "multi_range_kernel".into(),
        describe(
            rig.ioas
                .map_dmabuf(&multi, 0, 12 * KIB, Iova::Guarded, Access::ReadWrite)
                .map(drop),
        ),
    );
    out.insert(
        "multi_range_predicted".into(),
        describe(
            rig.ioas
                .map_vfio_dmabuf(
                    &rig.ivshmem,
                    &multi,
                    0,
                    12 * KIB,
                    Iova::Guarded,
                    Access::ReadWrite,
                )
                .map(drop),
        ),
    );
    // A dma-buf from another exporter (udmabuf): not a P2P vfio buffer.
    match peerdma_importer::udmabuf::Udmabuf::create(64 * KIB) {
        Ok(u) => {
            out.insert(
                "foreign_exporter".into(),
                describe(
                    rig.ioas
                        .map_dmabuf(&u.dmabuf(), 0, 64 * KIB, Iova::Guarded, Access::ReadWrite)
                        .map(drop),
                ),
            );
        }
        Err(e) => {
            out.insert("foreign_exporter".into(), json!({"skipped": e.to_string()}));
        }
    }
    let buf = rig.export_dma_buf(at::MULTI + MIB, at::SMALL)?;
    // Past edu's 28-bit DMA mask.
    out.insert(
        "over_dma_mask".into(),
        describe(
            rig.map_bar(&buf, Iova::Fixed(1 << 28))
                .map(drop)
                .map_err(to_importer),
        ),
    );
    // Unaligned fixed IOVA.
    out.insert(
        "unaligned".into(),
        describe(
            rig.map_bar(&buf, Iova::Fixed(0x80_0800))
                .map(drop)
                .map_err(to_importer),
        ),
    );
    // Overlapping an existing mapping.
    let held = rig.map_bar(&buf, Iova::Guarded)?;
    out.insert(
        "overlap".into(),
        describe(
            rig.map_bar(&buf, Iova::Fixed(held.iova()))
                .map(drop)
                .map_err(to_importer),
        ),
    );
    drop(held);
    // Past the end of the buffer (kernel EINVAL).
    out.insert(
        "past_end".into(),
        describe(
            rig.ioas
                .map_dmabuf(&buf, 0, 2 * at::SMALL, Iova::Guarded, Access::ReadWrite)
                .map(drop),
        ),
    );
    // A fixed IOVA in the MSI window of an IOAS with no DMA-mask limit (ivshmem1
    // bound to the same iommufd and attached to a second IOAS).
    {
        let ivs1 = Device::open_with(
            rig.ivshmem1,
            OpenOptions {
                access: AccessPath::Cdev,
                passed: PassedFds::Iommufd(rig.iommufd.try_clone_fd()?),
                ..OpenOptions::default()
            },
        )?;
        let wide = Ioas::alloc(&rig.iommufd)?;
        let _attached = wide.attach(&ivs1)?;
        out.insert(
            "outside_ranges".into(),
            describe(
                wide.map_dmabuf(
                    &buf,
                    0,
                    at::SMALL,
                    Iova::Fixed(0xfee0_0000),
                    Access::ReadWrite,
                )
                .map(drop),
            ),
        );
        // Automatic placement in the same IOAS skips the hole and IOVA 0.
        let auto = wide.map_dmabuf(&buf, 0, at::SMALL, Iova::Guarded, Access::ReadWrite)?;
        out.insert("wide_auto_iova".into(), json!(auto.iova()));
        out.insert("wide_ranges".into(), json!(wide.iova_ranges()?.0));
    }
    // An IOAS of another iommufd.
    let other = Iommufd::open()?;
    let other_ioas = Ioas::alloc(&other)?;
    out.insert(
        "different_iommufd".into(),
        describe(other_ioas.attach(&rig.edu_dev).map(drop)),
    );
    drop(other_ioas);
    drop(other);
    // The same iommufd is recognised as such.
    out.insert(
        "same_iommufd_recognised".into(),
        json!(rig
            .iommufd
            .is_same_file(rig.edu_dev.iommufd().expect("cdev").as_fd())?),
    );
    // A non-edu device handed to the edu driver.
    out.insert(
        "not_edu".into(),
        json!(match Edu::open(&rig.ivshmem) {
            Ok(_) => Value::Null,
            Err(e @ EngineError::NotEdu { .. }) => json!(e.to_string()),
            Err(e) => json!(format!("unexpected: {e}")),
        }),
    );
    let (ranges, align) = rig.ioas.iova_ranges()?;
    out.insert("iova_ranges".into(), json!(ranges));
    out.insert("iova_alignment".into(), json!(align));
    out.insert("usable_ranges".into(), json!(rig.ioas.usable_ranges()?));
    drop(multi);
    drop(buf);
    let after = fd_count();
    out.insert("fds_before".into(), json!(before));
    out.insert("fds_after".into(), json!(after));
    out.insert("mappings_left".into(), json!(rig.ioas.mappings()));
    out.insert(
        "ok".into(),
        json!(before == after && rig.ioas.mappings().is_empty()),
    );
    Ok(Value::Object(out))
}

fn to_importer(e: anyhow::Error) -> iommufd::Error {
    match e.downcast::<iommufd::Error>() {
        Ok(e) => e,
        Err(e) => panic!("unexpected error kind: {e:#}"),
    }
}

/// On a kernel without iommufd: the request fails with the explained error and
/// leaves nothing open.
fn stock(m: &Manifest) -> Result<Value> {
    let before = fd_count();
    let err = match setup(m) {
        Ok(_) => bail!("the import path unexpectedly worked on this kernel"),
        Err(e) => e,
    };
    let after = fd_count();
    let no_iommufd = matches!(
        err.downcast_ref::<iommufd::Error>(),
        Some(iommufd::Error::NoIommufd { .. })
    );
    // The exporter still works here (group path): the buffer exists, nothing imports it.
    let ivs = Device::open(bdf_of(m, "ivshmem0")?)?;
    let buf = ivs.export_dma_buf(
        2,
        &[DmaRange {
            offset: 0,
            length: at::SMALL,
        }],
    )?;
    let group_export_ok = buf.size() == at::SMALL;
    let via = format!("{:?}", ivs.opened_via());
    drop(buf);
    drop(ivs);
    let after_export = fd_count();
    Ok(json!({
        "ok": no_iommufd && before == after && before == after_export,
        "error": format!("{err:#}"),
        "no_iommufd_variant": no_iommufd,
        "fds_before": before,
        "fds_after": after,
        "fds_after_export": after_export,
        "group_export_ok": group_export_ok,
        "exporter_opened_via": via,
    }))
}

/// The C baseline, `peerdma_c_map_unmap` from importer/benches/iommufd_map_unmap.c
/// built as a shared object.
type CMapUnmap = unsafe extern "C" fn(i32, u32, i32, u64, u64) -> i32;

fn load_c(path: &str) -> Result<CMapUnmap> {
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
fn bench(rig: &mut Rig, opts: &Opts) -> Result<Value> {
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
        let m = rig.ioas.map_dmabuf(&buf, 0, len, at, Access::ReadWrite)?;
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

struct Opts {
    scenarios: Vec<String>,
    c_lib: Option<String>,
    iters: u64,
    len: u64,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        scenarios: Vec::new(),
        c_lib: None,
        iters: 2000,
        len: 2 * MIB,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--c-lib" => o.c_lib = Some(value()?),
            "--iters" => o.iters = value()?.parse()?,
            "--len" => o.len = value()?.parse()?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => o.scenarios.push(s.to_string()),
        }
    }
    if o.scenarios.is_empty() {
        bail!("usage: peerdma-guest-iommufd SCENARIO... (host-to-bar bar-to-host guard revoke errors stock bench all)");
    }
    Ok(o)
}

fn run() -> Result<bool> {
    let opts = parse_args()?;
    let manifest = Manifest::load_in_guest()?;
    let mut names = Vec::new();
    for s in &opts.scenarios {
        if s == "all" {
            names.extend(
                ["host-to-bar", "bar-to-host", "guard", "revoke", "errors"].map(String::from),
            );
        } else {
            names.push(s.clone());
        }
    }
    let mut all_ok = true;
    let mut emit = |name: &str, r: Result<Value>| {
        let v = match r {
            Ok(mut v) => {
                v["scenario"] = json!(name);
                v
            }
            Err(e) => json!({"scenario": name, "ok": false, "error": format!("{e:#}")}),
        };
        all_ok &= v["ok"] == json!(true);
        println!("{v}");
    };
    if names.iter().any(|n| n == "stock") {
        emit("stock", stock(&manifest));
        names.retain(|n| n != "stock");
    }
    if names.is_empty() {
        return Ok(all_ok);
    }
    let t = Instant::now();
    let mut rig = setup(&manifest)?;
    eprintln!("setup: {:.1} ms", ms(t.elapsed()));
    let mut faults = Faults::new();
    for name in &names {
        let t = Instant::now();
        let r = match name.as_str() {
            "host-to-bar" => host_to_bar(&mut rig),
            "bar-to-host" => bar_to_host(&mut rig),
            "guard" => guard(&mut rig, &mut faults),
            "revoke" => revoke(&mut rig, &mut faults),
            "errors" => errors(&mut rig),
            "bench" => bench(&mut rig, &opts),
            other => Err(anyhow!("unknown scenario {other}")),
        };
        let r = r.map(|mut v| {
            v["wall_ms"] = json!(ms(t.elapsed()));
            v
        });
        emit(name, r);
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("peerdma-guest-iommufd: {e:#}");
            ExitCode::from(2)
        }
    }
}
