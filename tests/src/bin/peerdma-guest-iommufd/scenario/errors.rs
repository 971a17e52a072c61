//! `errors`: the explained errors (multi-range buffer, foreign exporter, DMA mask, wrong
//! iommufd, not an edu) and no fd left behind.

use std::os::fd::AsFd;

use anyhow::Result;
use peerdma_engine::{Edu, EngineError};
use peerdma_exporter::{AccessPath, Device, DmaRange, OpenOptions, PassedFds};
use peerdma_importer::iommufd::{self, Ioas, Iommufd, Iova, Prot};
use peerdma_testbed::process::fd_count;
use serde_json::{json, Value};

use crate::rig::{at, Rig, KIB, MIB};

/// The explained errors, and no fd left behind by them.
pub(crate) fn errors(rig: &mut Rig) -> Result<Value> {
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
                .map_dmabuf(&multi, 0, 12 * KIB, Iova::Guarded, Prot::ReadWrite)
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
                    Prot::ReadWrite,
                )
                .map(drop),
        ),
    );
    // A dma-buf from another exporter (udmabuf): not a P2P vfio buffer.
    match peerdma_exporter::Udmabuf::create(64 * KIB) {
        Ok(u) => {
            out.insert(
                "foreign_exporter".into(),
                describe(
                    rig.ioas
                        .map_dmabuf(&u.dmabuf(), 0, 64 * KIB, Iova::Guarded, Prot::ReadWrite)
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
                .map_dmabuf(&buf, 0, 2 * at::SMALL, Iova::Guarded, Prot::ReadWrite)
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
                    Prot::ReadWrite,
                )
                .map(drop),
            ),
        );
        // Automatic placement in the same IOAS skips the hole and IOVA 0.
        let auto = wide.map_dmabuf(&buf, 0, at::SMALL, Iova::Guarded, Prot::ReadWrite)?;
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

pub(crate) fn to_importer(e: anyhow::Error) -> iommufd::Error {
    match e.downcast::<iommufd::Error>() {
        Ok(e) => e,
        Err(e) => panic!("unexpected error kind: {e:#}"),
    }
}
