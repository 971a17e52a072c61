//! Two VMs booted at once and joined by a wire: a QEMU `dgram` netdev between two unix
//! sockets in a directory of the pair's own ([`crate::vm::Wire`]), with an optional
//! capture of every frame on it (QEMU's `filter-dump` on VM 0's end: a classic pcap
//! file, read by [`crate::pcap`]).
//!
//! Each VM is an ordinary [`Testbed`] run, with its own scratch, devices, `guest.json`
//! and `testbed.json`; its first NIC joins the wire. The guest sees `PEERDMA_VM_INDEX`
//! (0 or 1) in its environment; the NICs' MAC and IPv4 addresses carry the VM's number
//! (`devices::nic`: VM 0's first kernel NIC is 10.77.0.1, VM 1's 10.77.0.2).
//!
//! A VM that fails (timeout, panic, init failure, QEMU death) stops its peer at once;
//! a command that exits non-zero stops its peer after [`PEER_GRACE`] (time for a
//! sender to read the receiver's verdict). QEMU is killed on every path (each run's
//! own guard) and the sockets go with the wire directory.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::scratch::Scratch;
use crate::vm::{RunOutcome, StopSignal, Testbed, VmOptions, Wire};

/// How long a VM may run on after its peer's command exited non-zero.
pub const PEER_GRACE: Duration = Duration::from_secs(10);

/// The capture's file name in the wire directory.
pub const PCAP_FILE: &str = "wire.pcap";

/// How the two VMs are joined.
#[derive(Clone, Debug, Default)]
pub struct WireOptions {
    /// Capture every frame on the wire into `wire.pcap` in the wire directory
    /// ([`PairOutcome::pcap`]).
    pub pcap: bool,
    /// A directory to hold the sockets and the capture, kept afterwards; `None`: a
    /// temporary one, removed when the [`PairOutcome`] is dropped (kept, and named in
    /// the error, when the pair failed with a capture).
    pub dir: Option<PathBuf>,
}

/// Two testbeds whose first NICs share a wire.
pub struct Pair {
    vms: [Testbed; 2],
    options: WireOptions,
}

/// What a pair's run produced: each VM's outcome, and the capture.
#[derive(Debug)]
pub struct PairOutcome {
    /// VM 0 (the first options of [`Pair::new`]).
    pub a: RunOutcome,
    /// VM 1.
    pub b: RunOutcome,
    /// The pcap of the wire (every frame either VM sent), when asked for.
    pub pcap: Option<PathBuf>,
    /// The directory of the sockets and the capture.
    pub wire_dir: Scratch,
}

impl Pair {
    /// Resolves both testbeds. Each must have a NIC (`igb`, `e1000e` or `virtio-net`);
    /// their `vm_index`, `wire` and `stop` are set here.
    ///
    /// # Errors
    ///
    /// A VM without a NIC, or what [`Testbed::new`] refuses.
    pub fn new(a: VmOptions, b: VmOptions, options: WireOptions) -> Result<Pair> {
        for (i, o) in [&a, &b].into_iter().enumerate() {
            if !o.devices.0.iter().any(|d| d.kind.model().is_nic()) {
                bail!(
                    "VM {i}'s devices have no NIC for the wire to join: add igb, e1000e or \
                     virtio-net to its device list"
                );
            }
        }
        let vms = [Testbed::new(a)?, Testbed::new(b)?];
        Ok(Pair { vms, options })
    }

    /// Boots both VMs at once, runs `argv_a` in VM 0 and `argv_b` in VM 1, and returns
    /// when both have finished. A command's non-zero exit is not an error (see
    /// [`RunOutcome::status`]), but it stops a peer still running [`PEER_GRACE`] later.
    ///
    /// # Errors
    ///
    /// Either VM failing (the message gives both sides), or the wire directory.
    pub fn run<A: AsRef<str>, B: AsRef<str>>(
        &self,
        argv_a: &[A],
        argv_b: &[B],
    ) -> Result<PairOutcome> {
        let mut wire_dir = Scratch::new(self.options.dir.as_deref())?;
        let dir = wire_dir.path().to_path_buf();
        let pcap = self.options.pcap.then(|| dir.join(PCAP_FILE));
        if let Some(p) = &pcap {
            let _ = std::fs::remove_file(p);
        }
        let stops = [StopSignal::new(), StopSignal::new()];
        let argvs: [Vec<String>; 2] = [
            argv_a.iter().map(|s| s.as_ref().to_string()).collect(),
            argv_b.iter().map(|s| s.as_ref().to_string()).collect(),
        ];
        let results: Vec<Result<RunOutcome>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let tb = self.vms[i].with_options(|o| {
                        o.vm_index = i as u8;
                        o.wire = Some(Wire {
                            local: dir.join(format!("vm{i}.sock")),
                            remote: dir.join(format!("vm{}.sock", 1 - i)),
                            pcap: if i == 0 { pcap.clone() } else { None },
                        });
                        o.stop = Some(stops[i].clone());
                        o.env.push(("PEERDMA_VM_INDEX".into(), i.to_string()));
                    });
                    let peer = stops[1 - i].clone();
                    let argv = &argvs[i];
                    s.spawn(move || {
                        let r = std::panic::catch_unwind(AssertUnwindSafe(|| tb.run(argv)))
                            .unwrap_or_else(|p| {
                                let what = p
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                bail!("the run panicked: {what}")
                            });
                        match &r {
                            Ok(o) if o.status == 0 => {}
                            Ok(o) => peer.stop_at(
                                Instant::now() + PEER_GRACE,
                                format!(
                                    "VM {i}'s command exited with status {} {} s earlier",
                                    o.status,
                                    PEER_GRACE.as_secs()
                                ),
                            ),
                            Err(_) => peer.stop_at(Instant::now(), format!("VM {i} failed")),
                        }
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("the run's thread panicked"))
                })
                .collect()
        });
        let mut it = results.into_iter();
        let (a, b) = (it.next().expect("two runs"), it.next().expect("two runs"));
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(PairOutcome {
                a,
                b,
                pcap,
                wire_dir,
            }),
            (a, b) => {
                let mut msg = String::from("the pair of VMs failed:");
                for (i, r) in [&a, &b].into_iter().enumerate() {
                    msg.push_str(&format!("\nVM {i}: {}", describe(r)));
                }
                if let Some(p) = pcap.as_ref().filter(|p| p.exists()) {
                    wire_dir.keep();
                    msg.push_str(&format!("\n(wire capture kept: {})", p.display()));
                }
                bail!("{msg}")
            }
        }
    }

    /// VM `i`'s testbed (0 or 1).
    pub fn vm(&self, i: usize) -> &Testbed {
        &self.vms[i]
    }
}

impl PairOutcome {
    /// The wire directory (sockets, capture).
    pub fn wire_dir(&self) -> &Path {
        self.wire_dir.path()
    }
}

/// One side's result in a pair's error: its error, or its status and output's tail.
fn describe(r: &Result<RunOutcome>) -> String {
    const TAIL: usize = 30;
    match r {
        Err(e) => format!("{e:#}"),
        Ok(o) => {
            let lines: Vec<&str> = o.output.lines().collect();
            format!(
                "the command exited with status {}; its last {} output line(s):\n{}",
                o.status,
                lines.len().min(TAIL),
                lines[lines.len().saturating_sub(TAIL)..].join("\n")
            )
        }
    }
}

/// The payload of the `k`-th datagram of `size` bytes (≥ 8) that the wire suite's
/// kernel-socket sender (`peerdma-guest-udp`) sends: `k` as a little-endian u64, then
/// byte `j` = `(k * 131 + j * 7) mod 256`. Seen in the receiver and in the capture.
pub fn datagram_payload(k: u64, size: usize) -> Vec<u8> {
    let mut p = k.to_le_bytes().to_vec();
    p.extend((8..size).map(|j| (k.wrapping_mul(131).wrapping_add(j as u64 * 7) & 0xff) as u8));
    p.truncate(size.max(8));
    p
}
