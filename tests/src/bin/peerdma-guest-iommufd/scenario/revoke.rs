//! `revoke`: memory decode off on ivshmem0 kills the mapping (a DMA does not land),
//! decode on leaves it dead, `remap` brings it back at the same IOVA.

use anyhow::Result;
use peerdma_exporter::{DmaBuf, RevokeReason};
use peerdma_importer::iommufd::{self, DmaBufMapping, Iova, MappingState};
use serde_json::{json, Value};

use crate::faults::Faults;
use crate::rig::{at, Rig, EDU_BUF};

/// Memory decode off kills the mapping; decode on leaves it dead; remap revives it.
pub(crate) fn revoke(rig: &mut Rig, faults: &mut Faults) -> Result<Value> {
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
    let revoked_faults = faults.expect_fault();
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
    let dead_faults = faults.expect_fault();
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
