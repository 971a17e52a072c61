//! `nic-revoke`: the igb engine (igb0) when its own register BAR goes away. A 4 KiB
//! host → host copy through the NIC lands; with the NIC's memory decode turned off
//! (VFIO zaps its BAR0 mapping) the next copy fails as `igb_revoked`, naming the
//! function, instead of a SIGBUS or a hang; a copy under 18 bytes is refused by name.

use anyhow::Result;
use peerdma_engine::{AttachedEngine, Span};
use peerdma_importer::iommufd::{Iommufd, Iova, Prot, UserBuffer};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::rig::bdf_of;

pub(crate) fn nic_revoke(m: &Manifest) -> Result<Value> {
    let iommufd = Iommufd::open()?;
    let mut nic = AttachedEngine::open(bdf_of(m, "igb0")?, &iommufd)?;
    let len = 4096u64;
    let mut data = vec![0u8; len as usize];
    pattern::fill(0x1ab, 0, &mut data);
    let mut src = nic
        .ioas()
        .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
    src.buffer().write(0, &data)?;
    let mut dst =
        nic.ioas()
            .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Write)?;
    let first = nic.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
    let landed = first.is_ok() && dst.buffer().to_vec() == data;
    let short = nic.copy(Span::start_of(&mut src), Span::start_of(&mut dst), 17);
    let short_kind = short.as_ref().err().map(|e| e.kind());
    nic.device().set_memory_decode(false)?;
    let revoked = nic.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
    nic.device().set_memory_decode(true)?;
    let (revoked_kind, revoked_error) = match &revoked {
        Ok(r) => (None, Some(format!("the copy returned Ok ({r:?})"))),
        Err(e) => (Some(e.kind()), Some(e.to_string())),
    };
    Ok(json!({
        "ok": landed && short_kind == Some("igb_copy_too_short")
            && revoked_kind == Some("igb_revoked"),
        "landed": landed,
        "first_error": first.err().map(|e| e.to_string()),
        "short_kind": short_kind,
        "short_error": short.err().map(|e| e.to_string()),
        "revoked_kind": revoked_kind,
        "revoked_error": revoked_error,
    }))
}
