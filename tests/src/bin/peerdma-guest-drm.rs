//! Guest side of the DRM suite: imports a BAR dma-buf into a DRM card through
//! `peerdma_importer::drm` and prints one JSON line per scenario, with what the kernel
//! left behind (the process's fds, the buffer's attachments in debugfs).
//!
//! Usage (in the testbed):
//! - `peerdma-guest-drm import EXPORTER_ROLE CARD [ROUNDS]`: imports ROUNDS times (a
//!   refusal is the expected outcome on vgem or a virtio-gpu without blobs), and on
//!   success also makes a 1024x768 framebuffer; reports the error (errno, message) and
//!   the fds and attachments before, during and after.
//! - `peerdma-guest-drm revoke EXPORTER_ROLE CARD`: shows the buffer, turns the
//!   exporter's memory decode off and on, and reports what the scanout saw.
//! - `peerdma-guest-drm legacy EXPORTER_ROLE CARD`: shows it with legacy SETCRTC.
//!
//! Both showing scenarios report the CRTC's framebuffer before, while shown and after
//! the restore (the fbdev console's comes back).
//!
//! CARD is a role of a GPU device in testbed.json, or anything `CardSpec` parses (a
//! node, a BDF, a driver name such as `vgem`).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use peerdma_exporter::{Device, DmaBuf, DmaRange};
use peerdma_host::Bdf;
use peerdma_importer::drm::{
    errno_text, Card, CardSpec, DrmFourcc, FbLayout, Framebuffer, ModeSetting, Scanout,
    ScanoutEvent,
};
use peerdma_testbed::manifest::Manifest;
use serde_json::{json, Value};

const WIDTH: u32 = 1024;
const HEIGHT: u32 = 768;

fn bdf_of(manifest: &Manifest, role: &str) -> Result<Bdf> {
    let d = manifest
        .device(role)
        .with_context(|| format!("no device with role {role} in testbed.json"))?;
    Ok(d.bdf.parse()?)
}

fn card_spec(manifest: &Manifest, card: &str) -> Result<CardSpec> {
    Ok(match manifest.device(card) {
        Some(d) => CardSpec::Pci(d.bdf.parse()?),
        None => card.parse().unwrap_or(CardSpec::AnyPci),
    })
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Devices attached to the dma-buf with inode `ino`, from
/// /sys/kernel/debug/dma_buf/bufinfo (`None` without debugfs).
fn attachments(ino: u64) -> Option<usize> {
    let text = std::fs::read_to_string("/sys/kernel/debug/dma_buf/bufinfo").ok()?;
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let ours = f.len() >= 6 && f[4] == "vfio_pci_core" && f[5].parse::<u64>().ok() == Some(ino);
        if !ours {
            continue;
        }
        for l in lines.by_ref() {
            let t = l.trim();
            if let Some(n) = t
                .strip_prefix("Total ")
                .and_then(|r| r.split_whitespace().next())
            {
                return n.parse().ok();
            }
        }
    }
    Some(0)
}

fn export(manifest: &Manifest, role: &str) -> Result<(Device, DmaBuf, u64)> {
    let bdf = bdf_of(manifest, role)?;
    let device = Device::open(bdf)?;
    let layout = FbLayout::packed(WIDTH, HEIGHT, DrmFourcc::Xrgb8888)?;
    let len = layout.bytes_needed().unwrap_or(0).div_ceil(4096) * 4096;
    let buf = device.export_dma_buf(2, &[DmaRange::new(0, len)])?;
    let ino = buf.fdinfo()?.ino.unwrap_or(0);
    Ok((device, buf, ino))
}

fn import(manifest: &Manifest, role: &str, card: &str, rounds: u32) -> Result<Value> {
    let (_device, buf, ino) = export(manifest, role)?;
    let card = Card::open(&card_spec(manifest, card)?)?;
    let fds_before = fd_count();
    let att_before = attachments(ino);
    let mut outcomes = Vec::new();
    let mut att_during = None;
    let mut same_gem = None;
    for _ in 0..rounds {
        match card.import(&buf) {
            Ok(gem) => {
                att_during = attachments(ino);
                // A second import while the first lives is the same GEM object.
                let again = card.import(&buf)?;
                same_gem = Some(Arc::ptr_eq(&gem, &again));
                drop(again);
                let layout = FbLayout::packed(WIDTH, HEIGHT, DrmFourcc::Xrgb8888)?;
                let fb = Framebuffer::new(gem, layout);
                outcomes.push(json!({
                    "outcome": "imported",
                    "framebuffer": fb.as_ref().map(|f| u32::from(f.handle())).ok(),
                    "framebuffer_error": fb.as_ref().err().map(ToString::to_string),
                }));
            }
            Err(e) => outcomes.push(json!({
                "outcome": "refused",
                "errno": e.errno().map(errno_text),
                "errno_raw": e.errno().map(|e| e.raw_os_error()),
                "message": e.to_string(),
            })),
        }
    }
    Ok(json!({
        "scenario": "import",
        "driver": card.driver(),
        "card": card.path(),
        "gpu": card.bdf().map(|b| b.to_string()),
        "prime_import": card.can_prime_import()?,
        "rounds": rounds,
        "first": outcomes.first(),
        "all_alike": outcomes.windows(2).all(|w| w[0] == w[1]),
        "fds_before": fds_before,
        "fds_after": fd_count(),
        "attachments_before": att_before,
        "attachments_while_imported": att_during,
        "second_import_same_gem": same_gem,
        "attachments_after": attachments(ino),
    }))
}

/// The framebuffer id on the scanout's CRTC (0: none).
fn crtc_fb(card: &Card, crtc: u32) -> u32 {
    use drm::control::Device as _;
    drm::control::from_u32::<drm::control::crtc::Handle>(crtc)
        .and_then(|h| card.get_crtc(h).ok())
        .and_then(|i| i.framebuffer())
        .map_or(0, u32::from)
}

fn legacy(manifest: &Manifest, role: &str, card: &str) -> Result<Value> {
    let (_device, buf, ino) = export(manifest, role)?;
    let card = Card::open(&card_spec(manifest, card)?)?;
    let layout = FbLayout::packed(WIDTH, HEIGHT, DrmFourcc::Xrgb8888)?;
    let fb = Framebuffer::new(card.import(&buf)?, layout)?;
    let fb_id = u32::from(fb.handle());
    let scanout = Scanout::show_with(fb, Some(ModeSetting::Legacy))?;
    let info = scanout.info();
    let before_restore = crtc_fb(&card, info.crtc);
    drop(scanout);
    Ok(json!({
        "scenario": "legacy",
        "driver": card.driver(),
        "setting": format!("{:?}", info.setting),
        "fb": fb_id,
        "crtc_fb_shown": before_restore,
        "crtc_fb_after": crtc_fb(&card, info.crtc),
        "attachments_after": attachments(ino),
    }))
}

fn revoke(manifest: &Manifest, role: &str, card: &str) -> Result<Value> {
    let (device, buf, ino) = export(manifest, role)?;
    let card = Card::open(&card_spec(manifest, card)?)?;
    let layout = FbLayout::packed(WIDTH, HEIGHT, DrmFourcc::Xrgb8888)?;
    let fb = Framebuffer::new(card.import(&buf)?, layout)?;
    let fb_id = u32::from(fb.handle());
    let mut scanout = Scanout::show(fb)?;
    let info = scanout.info();
    let att_shown = attachments(ino);
    let crtc_fb_shown = crtc_fb(&card, info.crtc);
    device.set_memory_decode(false)?;
    let on_revoke = scanout.watch(buf.state()?)?;
    let again_while_revoked = scanout.show_again().err();
    device.set_memory_decode(true)?;
    let on_restore = scanout.watch(buf.state()?);
    let att_restored = attachments(ino);
    scanout.restore()?;
    drop(scanout);
    Ok(json!({
        "scenario": "revoke",
        "driver": card.driver(),
        "setting": format!("{:?}", info.setting),
        "fb": fb_id,
        "crtc_fb_shown": crtc_fb_shown,
        "crtc_fb_after": crtc_fb(&card, info.crtc),
        "attachments_shown": att_shown,
        "on_revoke": format!("{on_revoke:?}"),
        "revoked_reported": matches!(on_revoke, ScanoutEvent::Revoked(_)),
        "show_while_revoked": again_while_revoked.as_ref().map(ToString::to_string),
        "show_while_revoked_errno": again_while_revoked.as_ref().and_then(|e| e.errno()).map(errno_text),
        "on_restore": on_restore.as_ref().map(|e| format!("{e:?}")).map_err(ToString::to_string),
        "attachments_restored": att_restored,
        "attachments_after": attachments(ino),
    }))
}

fn run() -> Result<Value> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let manifest = Manifest::load_in_guest()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["import", role, card] => import(&manifest, role, card, 1),
        ["import", role, card, rounds] => import(&manifest, role, card, rounds.parse()?),
        ["revoke", role, card] => revoke(&manifest, role, card),
        ["legacy", role, card] => legacy(&manifest, role, card),
        _ => bail!(
            "usage: peerdma-guest-drm import EXPORTER_ROLE CARD [ROUNDS] | revoke|legacy EXPORTER_ROLE CARD"
        ),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", json!({"error": format!("{e:#}")}));
            ExitCode::FAILURE
        }
    }
}
