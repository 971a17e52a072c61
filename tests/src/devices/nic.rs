//! What every NIC kind shares: its MAC address, and the QEMU netdev behind it.
//!
//! A run's first NIC joins the run's wire ([`crate::vm::VmOptions::wire`]) when it has
//! one; every other NIC, and the first one of a run without a wire, gets a `dgram`
//! netdev whose remote end is a unix socket nobody binds: QEMU accepts it without a
//! warning (`-device igb` with no netdev warns "nic igb.0 has no peer", a lone
//! `hubport` "hub N is not connected to host network"), the NIC has link, and every
//! frame it sends is dropped (sendto fails with ENOENT). MAC loopback (igb's
//! RCTL.LBM) never leaves the device, so it works on that netdev as on a wire.

use anyhow::{bail, Result};

use super::QemuSite;

/// The locally administered prefix of every testbed MAC: QEMU's OUI 52:54:00, then
/// 0x77 for "peerdma testbed".
const MAC_PREFIX: &str = "52:54:00:77";

/// The MAC address of the `index`-th device (its position in `--devices`) of the VM
/// numbered `vm` (0 for a single run; 0 and 1 for the two VMs of a pair):
/// `52:54:00:77:VM:IDX`, the same in every run.
pub fn mac(vm: u8, index: usize) -> String {
    format!("{MAC_PREFIX}:{vm:02x}:{:02x}", index & 0xff)
}

/// The IPv4 address (with prefix length) a kernel NIC of the VM numbered `vm` gets:
/// `10.77.0.<vm + 1>/24`; a second kernel NIC of the same VM gets
/// `10.77.<n>.<vm + 1>/24` (n: how many kernel NICs come before it).
pub fn ipv4(vm: u8, nth_kernel_nic: usize) -> String {
    format!("10.77.{}.{}/24", nth_kernel_nic & 0xff, u16::from(vm) + 1)
}

/// Whether this device is the run's first NIC, the one its wire joins.
pub fn is_first_nic(site: &QemuSite) -> bool {
    site.options
        .devices
        .0
        .iter()
        .position(|d| d.kind.model().is_nic())
        == Some(site.index)
}

/// The most bytes of a unix socket path (`sockaddr_un.sun_path` holds 108 with its NUL).
const SUN_PATH_MAX: usize = 107;

/// The `-netdev` and `-device` arguments (with a filter-dump `-object` where the wire
/// asks for a pcap) for a NIC QEMU calls `model` (`igb`, `e1000e`, `virtio-net-pci`).
///
/// # Errors
///
/// A socket path longer than a unix socket address holds (named, with the fix).
pub fn qemu_args(model: &str, site: &QemuSite) -> Result<Vec<String>> {
    let role = site.role;
    let id = format!("net-{role}");
    let mac = mac(site.options.vm_index, site.index);
    let wire = site.options.wire.as_ref().filter(|_| is_first_nic(site));
    let (local, remote) = match wire {
        Some(w) => (w.local.clone(), w.remote.clone()),
        None => (
            site.scratch.join(format!("{role}.sock")),
            site.scratch.join(format!("{role}.nopeer.sock")),
        ),
    };
    for p in [&local, &remote] {
        let n = p.as_os_str().len();
        if n > SUN_PATH_MAX {
            bail!(
                "device {role}: its netdev's unix socket {} is {n} bytes long, more than the \
                 {SUN_PATH_MAX} a unix socket address holds: use a shorter scratch or wire \
                 directory",
                p.display()
            );
        }
    }
    // A socket left by an earlier run in a kept scratch would make bind() fail.
    let _ = std::fs::remove_file(&local);
    let mut a = vec![
        "-netdev".to_string(),
        format!(
            "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
            local.display(),
            remote.display()
        ),
        "-device".to_string(),
        format!("{model},netdev={id},mac={mac},{}", site.place),
    ];
    if let Some(pcap) = wire.and_then(|w| w.pcap.as_ref()) {
        a.push("-object".into());
        a.push(format!(
            "filter-dump,id=dump-{role},netdev={id},file={}",
            pcap.display()
        ));
    }
    Ok(a)
}
