//! Smoke test of the exporter against a real vfio-pci device (run inside the
//! testbed VM as root): opens every ivshmem/edu device bound to vfio-pci through
//! each available access path, exports, checks that each predicted error has the
//! errno the kernel returns for the same request, and walks the revoke lifecycle.
//!
//! `cargo run --example export_smoke` prints one line per check and exits non-zero
//! if any failed.

use std::fs;
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use peerdma_exporter::{
    AccessPath, Bdf, Device, DmaRange, Error, ExportOptions, OpenOptions, PassedFds, PowerState,
    RevokeEvent, RevokeReason, RevokeState, Sysfs,
};
use rustix::fs::{Mode, OFlags};

struct Report {
    failed: u32,
}

impl Report {
    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failed += 1;
        }
    }
}

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn vfio_devices() -> Vec<(Bdf, u16, u16)> {
    let sys = Sysfs::system();
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/bus/pci/devices")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(bdf) = entry.file_name().to_string_lossy().parse::<Bdf>() else {
            continue;
        };
        let Ok(dev) = sys.device(bdf) else { continue };
        if dev.is_vfio_bound() {
            out.push((bdf, dev.vendor, dev.device));
        }
    }
    out.sort();
    out
}

fn open_node(path: &str) -> OwnedFd {
    rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).expect(path)
}

fn errno_agreement(r: &mut Report, dev: &Device, label: &str, region: u32, ranges: &[DmaRange]) {
    let predicted = dev.export(region, ranges);
    let kernel = dev.export_with(
        region,
        ranges,
        &ExportOptions {
            skip_validation: true,
            ..ExportOptions::default()
        },
    );
    match (predicted, kernel) {
        (Err(p), Err(k)) => r.check(
            &format!("errno agrees: {label}"),
            p.errno() == k.errno() && p.is_predicted() && matches!(k, Error::Export { .. }),
            format!("predicted {:?} ({p}) / kernel {:?}", p.errno(), k.errno()),
        ),
        (p, k) => r.check(
            &format!("errno agrees: {label}"),
            false,
            format!(
                "predicted {:?} / kernel {:?}",
                p.map(|b| b.size()),
                k.map(|b| b.size())
            ),
        ),
    }
}

fn exercise(r: &mut Report, dev: Device, kind: &str) {
    let bdf = dev.bdf();
    let tag = format!("{bdf} {kind} via {:?}", dev.opened_via());
    println!("== {tag}: {:?}", dev.info());
    r.check(
        &format!("{tag} iommufd"),
        dev.iommufd().is_some() == (dev.opened_via() == peerdma_exporter::OpenedVia::Cdev),
        "",
    );
    for bar in dev.bars().unwrap() {
        println!(
            "   BAR{}: {:?} size {:#x} base {:?} mappable {} msix_mappable {} sparse {:?}",
            bar.index,
            bar.kind,
            bar.size(),
            bar.base,
            bar.is_mappable(),
            bar.msix_mappable(),
            bar.sparse_areas()
        );
    }
    println!("   caps {:?} msix {:?}", dev.pci_caps(), dev.msix());
    let support = dev.probe();
    r.check(
        &format!("{tag} probe"),
        matches!(support, Ok(s) if s.is_supported()),
        format!("{support:?}"),
    );
    let page = dev.page_size();
    let bars = dev.bars().unwrap();
    let big = bars
        .iter()
        .filter(|b| b.is_memory() && b.size() >= page)
        .max_by_key(|b| b.size())
        .map(|b| b.index)
        .unwrap();
    let absent = bars
        .iter()
        .find(|b| b.size() == 0)
        .map(|b| b.index)
        .unwrap_or(5);
    let bar_size = dev.bar(big).unwrap().size();
    println!("   exporting from BAR{big}, absent BAR{absent}");
    if let Some(msix) = dev.msix() {
        let bar = dev.bar(u32::from(msix.table_bir)).unwrap();
        let table_page = u64::from(msix.table_offset) & !(page - 1);
        let ranges = [DmaRange::new(table_page, page)];
        let strict = dev.check_export(bar.index, &ranges, false);
        let relaxed = dev.check_export(bar.index, &ranges, true);
        println!("   MSI-X table page of BAR{} (msix_mappable {}): strict {strict:?}, override {relaxed:?}", bar.index, bar.msix_mappable());
        r.check(
            &format!("{tag} MSI-X rule"),
            relaxed.is_ok() && (strict.is_ok() == bar.msix_mappable()),
            "",
        );
        let exported = dev.export_with(
            bar.index,
            &ranges,
            &ExportOptions {
                allow_msix_overlap: true,
                ..ExportOptions::default()
            },
        );
        r.check(
            &format!("{tag} MSI-X page export (kernel accepts)"),
            exported.is_ok(),
            format!("{:?}", exported.err()),
        );
    }

    // Exports.
    let one = dev.export(big, &[DmaRange::new(0, page)]);
    match &one {
        Ok(buf) => {
            let info = buf.fdinfo().unwrap();
            r.check(
                &format!("{tag} export 1 range"),
                info.size == Some(page) && info.exp_name.as_deref() == Some("vfio_pci_core"),
                format!("{info:?}"),
            );
            r.check(
                &format!("{tag} flags O_RDWR|O_CLOEXEC"),
                info.cloexec() && info.access_mode() == 2,
                format!("{:o}", info.flags),
            );
        }
        Err(e) => r.check(&format!("{tag} export 1 range"), false, e),
    }
    let three = dev.export(
        big,
        &[
            DmaRange::new(0, page),
            DmaRange::new(4 * page, 2 * page),
            DmaRange::new(bar_size - page, page),
        ],
    );
    r.check(
        &format!("{tag} export 3 ranges"),
        three
            .as_ref()
            .is_ok_and(|b| b.size() == 4 * page && b.fdinfo().unwrap().size == Some(4 * page)),
        format!("{:?}", three.as_ref().map(|b| b.size())),
    );
    let whole = dev.export(big, &[DmaRange::new(0, bar_size)]);
    r.check(
        &format!("{tag} export whole BAR"),
        whole.is_ok(),
        format!("{:?}", whole.as_ref().map(|b| b.size())),
    );

    // Predicted errors against the kernel's.
    errno_agreement(r, &dev, "no ranges", big, &[]);
    errno_agreement(
        r,
        &dev,
        "unaligned offset",
        big,
        &[DmaRange::new(page / 2, page)],
    );
    errno_agreement(
        r,
        &dev,
        "unaligned length",
        big,
        &[DmaRange::new(0, page / 2)],
    );
    errno_agreement(r, &dev, "zero length", big, &[DmaRange::new(0, 0)]);
    errno_agreement(
        r,
        &dev,
        "past the end",
        big,
        &[DmaRange::new(bar_size, page)],
    );
    errno_agreement(
        r,
        &dev,
        "offset near 2^64",
        big,
        &[DmaRange::new(!(page - 1), page)],
    );
    errno_agreement(
        r,
        &dev,
        "total overflow",
        big,
        &[DmaRange::new(0, !(page - 1)), DmaRange::new(0, page)],
    );
    errno_agreement(
        r,
        &dev,
        "total bit 63",
        big,
        &[DmaRange::new(0, 1 << 62), DmaRange::new(0, 1 << 62)],
    );
    errno_agreement(r, &dev, "ROM", 6, &[DmaRange::new(0, page)]);
    errno_agreement(r, &dev, "config", 7, &[DmaRange::new(0, page)]);
    errno_agreement(r, &dev, "absent BAR", absent, &[DmaRange::new(0, page)]);
    if let Some(small) = bars
        .iter()
        .find(|b| b.is_memory() && b.size() > 0 && b.size() < page)
    {
        errno_agreement(
            r,
            &dev,
            "sub-page BAR",
            small.index,
            &[DmaRange::new(0, page)],
        );
    }

    // Revoke lifecycle.
    let events = dev.subscribe();
    let buf = dev.export(big, &[DmaRange::new(0, page)]).unwrap();
    r.check(
        &format!("{tag} live"),
        dev.revoke_state().unwrap().is_live() && buf.state().unwrap().is_live(),
        "",
    );
    dev.set_memory_decode(false).unwrap();
    let off = RevokeState::Revoked(RevokeReason::MemoryDecodeOff);
    r.check(
        &format!("{tag} decode off"),
        dev.revoke_state().unwrap() == off && buf.state().unwrap() == off,
        format!("{:?}", buf.state()),
    );
    let born = dev.export(big, &[DmaRange::new(0, page)]);
    r.check(
        &format!("{tag} export while off (born revoked)"),
        born.as_ref().is_ok_and(|b| b.state().unwrap() == off),
        format!("{:?}", born.as_ref().map(|b| b.size())),
    );
    dev.set_memory_decode(true).unwrap();
    r.check(
        &format!("{tag} decode on"),
        buf.state().unwrap().is_live(),
        "",
    );
    if dev.info().supports_reset() {
        let res = dev.reset();
        r.check(
            &format!("{tag} reset"),
            res.is_ok() && buf.state().unwrap().is_live(),
            format!("{res:?} {:?}", dev.last_reset()),
        );
    }
    match dev.set_power_state(PowerState::D3hot) {
        Ok(()) => {
            let st = buf.state().unwrap();
            r.check(
                &format!("{tag} D3hot"),
                st == RevokeState::Revoked(RevokeReason::PowerState(PowerState::D3hot)),
                format!("{st:?}"),
            );
            dev.set_power_state(PowerState::D0).unwrap();
            r.check(
                &format!("{tag} D0"),
                buf.state().unwrap().is_live(),
                format!("{:?}", dev.power_state()),
            );
        }
        Err(e) => println!("   (no power state change: {e})"),
    }
    match dev.flr() {
        Ok(()) => r.check(&format!("{tag} flr"), buf.state().unwrap().is_live(), ""),
        Err(e) => println!("   (no FLR: {e})"),
    }
    let got: Vec<RevokeEvent> = events.try_iter().collect();
    println!("   events {got:?}");
    r.check(
        &format!("{tag} events"),
        got.first()
            == Some(&RevokeEvent::Revoked {
                generation: 1,
                reason: RevokeReason::MemoryDecodeOff,
            })
            && got.get(1) == Some(&RevokeEvent::Restored { generation: 1 }),
        format!("{} events", got.len()),
    );

    // Region mmap.
    let map_bar = if kind == "nvme" { 0 } else { big };
    if dev.bar(map_bar).unwrap().is_mappable() {
        let map = dev.map_region(map_bar).unwrap();
        if kind == "nvme" {
            let cap = map.read::<u64>(0).unwrap();
            r.check(&format!("{tag} mmap read"), cap != 0, format!("{cap:#x}"));
        } else if kind == "ivshmem" {
            map.write::<u32>(0x100, 0xdead_beef).unwrap();
            r.check(
                &format!("{tag} mmap write/read"),
                map.read::<u32>(0x100).unwrap() == 0xdead_beef,
                "",
            );
        } else {
            // edu: register 0x0 is the identification register 0xRRrr00edu.
            let id = map.read::<u32>(0).unwrap();
            r.check(
                &format!("{tag} mmap id register"),
                id & 0xff == 0xed,
                format!("{id:#x}"),
            );
        }
        r.check(
            &format!("{tag} mmap bounds"),
            matches!(map.read::<u32>(map.len()), Err(Error::MmioAccess { .. })),
            "",
        );
    }

    // Close: revoked for good.
    drop(dev);
    r.check(
        &format!("{tag} closed"),
        buf.state().unwrap() == RevokeState::Revoked(RevokeReason::DeviceClosed),
        "",
    );
}

fn main() -> ExitCode {
    let mut r = Report { failed: 0 };
    let devices = vfio_devices();
    println!(
        "vfio devices: {devices:?}; /dev/iommu {}",
        std::path::Path::new("/dev/iommu").exists()
    );
    let fds_before = fd_count();
    for (bdf, vendor, device) in &devices {
        let kind = match (vendor, device) {
            (0x1af4, 0x1110) => "ivshmem",
            (0x1234, 0x11e8) => "edu",
            (0x1b36, 0x0010) => "nvme",
            _ => continue,
        };
        for access in [AccessPath::Group, AccessPath::Cdev] {
            let opts = OpenOptions {
                access,
                ..OpenOptions::default()
            };
            match Device::open_with(*bdf, opts) {
                Ok(dev) => exercise(&mut r, dev, kind),
                Err(e) => r.check(
                    &format!("{bdf} open {access:?}"),
                    access == AccessPath::Cdev && matches!(e, Error::NoCdev { .. }),
                    e,
                ),
            }
        }
        // Handed-over fds.
        let passed = PassedFds::Container(open_node("/dev/vfio/vfio"));
        let dev = Device::open_with(
            *bdf,
            OpenOptions {
                passed,
                ..OpenOptions::default()
            },
        );
        r.check(
            &format!("{bdf} open with a passed container"),
            dev.is_ok(),
            format!("{:?}", dev.as_ref().err()),
        );
        drop(dev);
        let cdev = OpenOptions {
            access: AccessPath::Cdev,
            ..OpenOptions::default()
        };
        if Device::would_use_cdev(*bdf, &cdev).unwrap_or(false) {
            let passed = PassedFds::Iommufd(open_node("/dev/iommu"));
            let dev = Device::open_with(
                *bdf,
                OpenOptions {
                    passed,
                    ..OpenOptions::default()
                },
            );
            r.check(
                &format!("{bdf} open with a passed iommufd"),
                dev.is_ok(),
                format!("{:?}", dev.as_ref().err()),
            );
        }
    }
    let fds_after = fd_count();
    r.check(
        "no fd leaked",
        fds_before == fds_after,
        format!("{fds_before} -> {fds_after}"),
    );
    println!("{} failed", r.failed);
    if r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
