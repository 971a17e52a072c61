//! `revoke`: decode off/on, born revoked, reset, D3hot/D0, FLR, close; the events.

use std::os::fd::AsRawFd;

use anyhow::Result;
use peerdma_exporter::{Device, DmaBuf, DmaRange, Errno, PowerState};
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_uapi::vfio::VFIO_DEVICE_RESET;
use serde_json::{json, Value};

use crate::device::export_bar;
use crate::json::{emit, err_json, errno_name, event_json, state_json, unit_json};
use crate::probe::{probe, KernelProbe};
use crate::Args;

/// One step of the revoke walk: what the library and the kernel say afterwards.
pub(crate) fn step(
    a: &Args,
    d: &ManifestDevice,
    dev: Option<&Device>,
    kp: Option<&KernelProbe>,
    bufs: &[(&str, &DmaBuf)],
    name: &str,
    result: Value,
) {
    let page = rustix::param::page_size() as u64;
    let mut f = json!({"step": name, "result": result});
    if let Some(dev) = dev {
        f["device"] = state_json(dev.revoke_state());
        f["power"] = state_json(dev.power_state());
        f["decode"] = state_json(dev.memory_decode());
    }
    for (label, buf) in bufs {
        f[format!("{label}_state")] = state_json(buf.state());
        f[format!("{label}_kernel")] = probe(kp, buf, page);
    }
    emit("revoke", "step", &a.access_name, Some(d), f);
}

/// `revoke`: decode off/on, born revoked, reset, D3hot/D0, FLR, close; the events.
pub(crate) fn scenario_revoke(
    a: &Args,
    d: &ManifestDevice,
    dev: Device,
    kp: Option<&KernelProbe>,
) -> Result<()> {
    let page = dev.page_size();
    let (bar, _) = export_bar(&dev)?;
    let events = dev.subscribe();
    let buf = dev.export_dma_buf(bar, &[DmaRange::new(0, page)])?;
    step(
        a,
        d,
        Some(&dev),
        kp,
        &[("buf", &buf)],
        "export",
        json!({"ok": true}),
    );

    let r = dev.set_memory_decode(false);
    step(
        a,
        d,
        Some(&dev),
        kp,
        &[("buf", &buf)],
        "decode off",
        unit_json(r),
    );
    let born = dev.export_dma_buf(bar, &[DmaRange::new(0, page)]);
    let born = match born {
        Ok(b) => b,
        Err(e) => {
            emit(
                "revoke",
                "step",
                &a.access_name,
                Some(d),
                json!({"step": "born revoked", "result": err_json(&e)}),
            );
            dev.set_memory_decode(true)?;
            return Ok(());
        }
    };
    let both = [("buf", &buf), ("born", &born)];
    step(
        a,
        d,
        Some(&dev),
        kp,
        &both,
        "born revoked",
        json!({"ok": true, "size": born.size()}),
    );
    let r = dev.set_memory_decode(true);
    step(a, d, Some(&dev), kp, &both, "decode on", unit_json(r));

    let supports = dev.info().supports_reset();
    let r = dev.reset();
    let mut res = unit_json(r);
    res["supports_reset"] = supports.into();
    res["last_reset"] = format!(
        "{:?}",
        dev.last_reset().map(|r| (r.method, r.generation, r.errno))
    )
    .into();
    if !supports {
        // What the kernel itself says to VFIO_DEVICE_RESET on this device.
        // SAFETY: VFIO_DEVICE_RESET takes no argument; the device fd is open.
        let rc = unsafe { libc::ioctl(dev.fd().as_raw_fd(), VFIO_DEVICE_RESET as _) };
        res["kernel_errno"] = if rc < 0 {
            errno_name(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO))
                .into()
        } else {
            Value::Null
        };
    }
    step(a, d, Some(&dev), kp, &both, "reset", res);

    let has_pm = dev.pci_caps().iter().any(|c| c.id == 0x01);
    let r = dev.set_power_state(PowerState::D3hot);
    let d3_ok = r.is_ok();
    let mut res = unit_json(r);
    res["has_pm"] = has_pm.into();
    step(a, d, Some(&dev), kp, &both, "D3hot", res);
    if d3_ok {
        let r = dev.set_power_state(PowerState::D0);
        step(a, d, Some(&dev), kp, &both, "D0", unit_json(r));
    }

    let r = dev.flr();
    step(a, d, Some(&dev), kp, &both, "flr", unit_json(r));

    drop(dev);
    step(a, d, None, kp, &both, "close", json!({"ok": true}));
    let got: Vec<Value> = events.try_iter().map(|e| event_json(&e)).collect();
    let fdinfo_size = buf.fdinfo().ok().and_then(|i| i.size);
    emit(
        "revoke",
        "events",
        &a.access_name,
        Some(d),
        json!({"events": got, "buf_fdinfo_size_after_close": fdinfo_size}),
    );
    Ok(())
}
