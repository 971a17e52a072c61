//! DMA faults the IOMMU refused, read back from the kernel log.
//!
//! An engine often cannot tell that its DMA went nowhere: QEMU's edu drops a
//! faulting transfer silently, and real devices report at best a generic
//! "data transfer error". The IOMMU driver logs every refused access it
//! processes (rate-limited), naming the requester, the IOVA and why, and that
//! log is the one place the cause is written down. [`FaultLog`] is a cursor on
//! `/dev/kmsg` opened at its end before a transfer; [`FaultLog::read_new`]
//! returns the faults logged since, parsed by [`parse_message`].
//!
//! Formats, from Linux 7.2:
//! - Intel VT-d (`drivers/iommu/intel/dmar.c`, `dmar_fault_do_one`):
//!   `DMAR: [DMA Write NO_PASID] Request device [0000:00:12.0] fault addr 0x1000
//!   [fault reason 0x06] PTE Read access is not set` (interrupt-remapping faults
//!   are not DMA and are skipped);
//! - AMD-Vi (`drivers/iommu/amd/iommu.c`, `amd_iommu_report_page_fault`):
//!   `vfio-pci 0000:00:12.0: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x0002
//!   address=0x1000 flags=0x0020]`, or `device=0000:00:12.0` inside the brackets
//!   when the device is unknown; flag 0x20 is a write;
//! - Arm SMMUv3 (`drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c`,
//!   `arm_smmu_dump_event`): `event: F_TRANSLATION client: 0000:01:00.0 sid:
//!   0x100 ssid: 0x0 iova: 0x1000 ipa: 0x0` (read/write on the next line, not
//!   used);
//! - virtio-iommu (`drivers/iommu/virtio-iommu.c`, `viommu_fault_handler`):
//!   `page fault from EP 144 at 0x1000 [W]`; the endpoint ID of a PCI device is
//!   its requester ID (bus << 8 | devfn), segment 0 assumed.
//!
//! Reading `/dev/kmsg` needs `CAP_SYSLOG` when `kernel.dmesg_restrict` is 1;
//! VFIO users run as root, which has it.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::Bdf;

/// Which access the IOMMU refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAccess {
    /// A DMA read (the device fetched from the IOVA).
    Read,
    /// A DMA write (the device stored to the IOVA).
    Write,
    /// The log line does not say.
    Unknown,
}

impl fmt::Display for FaultAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultAccess::Read => "read",
            FaultAccess::Write => "write",
            FaultAccess::Unknown => "access",
        })
    }
}

/// One refused DMA access, as the IOMMU driver logged it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IommuFault {
    /// The IOMMU driver that logged it: "DMAR" (Intel VT-d), "AMD-Vi",
    /// "arm-smmu-v3", "virtio-iommu".
    pub iommu: &'static str,
    /// The requester, when the line names it.
    #[serde(serialize_with = "bdf_text")]
    pub device: Option<Bdf>,
    /// The faulting IOVA (bus address), when the line gives it.
    pub iova: Option<u64>,
    /// The access refused.
    pub access: FaultAccess,
    /// The driver's reason ("PTE Write access is not set", "IO_PAGE_FAULT").
    pub reason: String,
    /// The log message as written.
    pub message: String,
}

impl fmt::Display for IommuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.iommu, self.access)?;
        if let Some(d) = self.device {
            write!(f, " by {d}")?;
        }
        if let Some(a) = self.iova {
            write!(f, " at IOVA {a:#x}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

fn bdf_text<S: serde::Serializer>(bdf: &Option<Bdf>, s: S) -> Result<S::Ok, S::Error> {
    match bdf {
        Some(b) => s.collect_str(b),
        None => s.serialize_none(),
    }
}

/// Parses one kernel log message (the text after the record header, without the
/// trailing newline) as an IOMMU DMA fault; `None` for any other message.
pub fn parse_message(message: &str) -> Option<IommuFault> {
    parse_dmar(message)
        .or_else(|| parse_amd(message))
        .or_else(|| parse_smmu_v3(message))
        .or_else(|| parse_virtio(message))
}

fn fault(iommu: &'static str, message: &str) -> IommuFault {
    IommuFault {
        iommu,
        device: None,
        iova: None,
        access: FaultAccess::Unknown,
        reason: String::new(),
        message: message.to_string(),
    }
}

/// The text between `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let rest = &s[from..];
    Some(&rest[..rest.find(end)?])
}

fn hex(s: &str) -> Option<u64> {
    let s = s.trim();
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// The word after `key` up to whitespace or one of `,]`.
fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let from = s.find(key)? + key.len();
    let rest = s[from..].trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',' || c == ']')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn parse_dmar(m: &str) -> Option<IommuFault> {
    let body = m.strip_prefix("DMAR: [")?;
    let access = if body.starts_with("DMA Write ") {
        FaultAccess::Write
    } else if body.starts_with("DMA Read ") {
        FaultAccess::Read
    } else {
        return None; // INTR-REMAP and anything else: not a DMA fault
    };
    let mut f = fault("DMAR", m);
    f.access = access;
    f.device = between(body, "Request device [", "]").and_then(|b| b.parse().ok());
    f.iova = field(body, "fault addr").and_then(hex);
    f.reason = match body.find("[fault reason ") {
        Some(at) => {
            let rest = &body[at..];
            let code = between(rest, "[fault reason ", "]").unwrap_or("?");
            let text = rest.find(']').map_or("", |e| rest[e + 1..].trim());
            format!("{text} (fault reason {code})")
        }
        None => "fault".to_string(),
    };
    Some(f)
}

fn parse_amd(m: &str) -> Option<IommuFault> {
    let at = m.find("AMD-Vi: Event logged [IO_PAGE_FAULT")?;
    let event = &m[at..];
    let mut f = fault("AMD-Vi", m);
    // pci_err() puts "DRIVER BDF: " first; pr_err() puts device= inside.
    f.device = field(event, "device=")
        .and_then(|d| d.parse().ok())
        .or_else(|| {
            m[..at]
                .split_whitespace()
                .find_map(|w| w.trim_end_matches(':').parse().ok())
        });
    f.iova = field(event, "address=").and_then(hex);
    f.access = match field(event, "flags=").and_then(hex) {
        Some(flags) if flags & 0x20 != 0 => FaultAccess::Write,
        Some(_) => FaultAccess::Read,
        None => FaultAccess::Unknown,
    };
    f.reason = "IO_PAGE_FAULT (no valid translation)".to_string();
    Some(f)
}

fn parse_smmu_v3(m: &str) -> Option<IommuFault> {
    let at = m.find("event: F_")?;
    let event = &m[at..];
    let iova = field(event, "iova:").and_then(hex)?;
    let mut f = fault("arm-smmu-v3", m);
    f.reason = field(event, "event:").unwrap_or("fault").to_string();
    f.device = field(event, "client:").and_then(|c| c.parse().ok());
    f.iova = Some(iova);
    Some(f)
}

fn parse_virtio(m: &str) -> Option<IommuFault> {
    let at = m.find(" fault from EP ")?;
    let kind = m[..at].rsplit(' ').next().unwrap_or("");
    if !matches!(kind, "page" | "domain" | "unknown") {
        return None;
    }
    let ep: u32 = field(&m[at..], "EP")?.parse().ok()?;
    let mut f = fault("virtio-iommu", m);
    f.reason = format!("{kind} fault");
    f.device = u8::try_from(ep >> 8)
        .ok()
        .and_then(|bus| Bdf::new(0, bus, ((ep >> 3) & 0x1f) as u8, (ep & 7) as u8).ok());
    f.iova = field(&m[at..], " at ").and_then(hex);
    f.access = match between(m, "[", "]") {
        Some(p) if p.contains('W') => FaultAccess::Write,
        Some(p) if p.contains('R') => FaultAccess::Read,
        _ => FaultAccess::Unknown,
    };
    Some(f)
}

/// Splits one `/dev/kmsg` record ("PRIO,SEQ,USEC,FLAGS;message\n KEY=value\n...",
/// Documentation/ABI/testing/dev-kmsg) into its message; `None` when it has no `;`.
pub fn record_message(record: &str) -> Option<&str> {
    let (_, rest) = record.split_once(';')?;
    Some(rest.split('\n').next().unwrap_or(rest))
}

/// A cursor on the kernel log that yields the IOMMU faults logged after it was opened.
#[derive(Debug)]
pub struct FaultLog {
    kmsg: File,
    unrecorded: Unrecorded,
}

impl FaultLog {
    /// Opens `/dev/kmsg` at its end: only faults logged from now on are read.
    ///
    /// # Errors
    ///
    /// The `open` or `lseek` error: `EPERM` without `CAP_SYSLOG` while
    /// `kernel.dmesg_restrict` is 1, `ENOENT` where there is no `/dev/kmsg`.
    pub fn open() -> io::Result<FaultLog> {
        FaultLog::open_at(Path::new("/dev/kmsg"))
    }

    /// As [`FaultLog::open`], for a kmsg-like device at `path`.
    ///
    /// # Errors
    ///
    /// As [`FaultLog::open`].
    pub fn open_at(path: &Path) -> io::Result<FaultLog> {
        let mut kmsg = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nonblock())
            .open(path)?;
        // /dev/kmsg: SEEK_END positions after the newest record (devkmsg_llseek).
        kmsg.seek(SeekFrom::End(0))?;
        Ok(FaultLog {
            kmsg,
            unrecorded: Unrecorded::default(),
        })
    }

    /// The IOMMU faults logged since the cursor was opened or last read, oldest first.
    ///
    /// Records overwritten before they were read (`EPIPE`: the ring wrapped) are
    /// skipped; the IOMMU drivers rate-limit their messages, so this is a lower
    /// bound on how many accesses were refused.
    ///
    /// # Errors
    ///
    /// A `read` error other than `EAGAIN` (the end) and `EPIPE`.
    pub fn read_new(&mut self) -> io::Result<Vec<IommuFault>> {
        let mut faults = Vec::new();
        // A record is at most 8 KiB of text (CONSOLE_EXT_LOG_MAX + 1 in printk.c).
        let mut buf = vec![0u8; 8192];
        loop {
            match self.kmsg.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // One record per read on /dev/kmsg; records are split by their
                    // header lines anyway (continuation lines start with a space).
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for message in text
                        .lines()
                        .filter(|l| !l.starts_with(' '))
                        .filter_map(record_message)
                    {
                        self.unrecorded.take_message(message, &mut faults);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.unrecorded.finish(&mut faults);
        Ok(faults)
    }

    /// [`read_new`](Self::read_new), keeping the faults of `device` and those whose
    /// line names no device (they may be its: a record the rate limit swallowed).
    ///
    /// # Errors
    ///
    /// As [`read_new`](Self::read_new).
    pub fn read_new_by(&mut self, device: Bdf) -> io::Result<Vec<IommuFault>> {
        let mut faults = self.read_new()?;
        faults.retain(|f| f.device.is_none_or(|d| d == device));
        Ok(faults)
    }
}

/// VT-d's fault handler logs "DRHD: handling fault status reg N" and then one line
/// per fault record, all under one rate limit (`dmar_fault`'s `rs`: 10 messages per
/// 5 s, the status line and each record read counting one each). A burst of faults
/// can thus leave a status line saying a primary fault was pending (PPF, bit 1) with
/// its record cleared unlogged: that is still a refused access, by a device the log
/// does not name. This tracks such a status line until a record follows it.
#[derive(Debug, Default)]
struct Unrecorded {
    pending: Option<String>,
}

impl Unrecorded {
    /// Takes one log message: a fault it parses, and a pending status line left
    /// without a record, go to `out`.
    fn take_message(&mut self, message: &str, out: &mut Vec<IommuFault>) {
        if let Some(status) = message
            .strip_prefix("DMAR: DRHD: handling fault status reg ")
            .and_then(hex)
        {
            self.finish(out);
            if status & 0x2 != 0 {
                self.pending = Some(message.to_string());
            }
            return;
        }
        if message.starts_with("DMAR: [") {
            self.pending = None;
        }
        out.extend(parse_message(message));
    }

    /// A status line still waiting for its record becomes a fault of an unknown device.
    fn finish(&mut self, out: &mut Vec<IommuFault>) {
        if let Some(message) = self.pending.take() {
            let mut f = fault("DMAR", &message);
            f.reason = "a primary fault was pending, and the kernel rate-limited its record \
                        (dmar_fault logs 10 messages per 5 s)"
                .to_string();
            out.push(f);
        }
    }
}

fn libc_nonblock() -> i32 {
    // O_NONBLOCK fits an i32 (0o4000).
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bdf(s: &str) -> Option<Bdf> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn intel_dma_faults_name_device_iova_access_and_reason() {
        let f = parse_message(
            "DMAR: [DMA Write NO_PASID] Request device [0000:00:12.0] fault addr 0x5000 \
             [fault reason 0x06] PTE Read access is not set",
        )
        .unwrap();
        assert_eq!(f.iommu, "DMAR");
        assert_eq!(f.device, bdf("0000:00:12.0"));
        assert_eq!(f.iova, Some(0x5000));
        assert_eq!(f.access, FaultAccess::Write);
        assert_eq!(f.reason, "PTE Read access is not set (fault reason 0x06)");
        let f = parse_message(
            "DMAR: [DMA Read PASID 0x1] Request device [0001:3a:00.1] fault addr 0xfffff000 \
             [fault reason 0x71] SM: Present bit in first-level paging entry is clear",
        )
        .unwrap();
        assert_eq!(f.access, FaultAccess::Read);
        assert_eq!(f.device, bdf("0001:3a:00.1"));
        assert_eq!(f.iova, Some(0xffff_f000));
    }

    #[test]
    fn interrupt_remapping_faults_and_other_lines_are_not_dma_faults() {
        for m in [
            "DMAR: [INTR-REMAP] Request device [0000:00:12.0] fault index 0x2 \
             [fault reason 0x25] Blocked a compatibility format interrupt request",
            "DMAR: DRHD: handling fault status reg 2",
            "vfio-pci 0000:00:12.0: enabling device (0000 -> 0002)",
            "virtio_net virtio0: fault from nowhere",
            "",
        ] {
            assert_eq!(parse_message(m), None, "{m}");
        }
    }

    #[test]
    fn amd_faults_with_and_without_a_known_device() {
        let f = parse_message(
            "vfio-pci 0000:c1:00.0: AMD-Vi: Event logged [IO_PAGE_FAULT domain=0x0002 \
             address=0x10000 flags=0x0020]",
        )
        .unwrap();
        assert_eq!(f.device, bdf("0000:c1:00.0"));
        assert_eq!(f.iova, Some(0x10000));
        assert_eq!(f.access, FaultAccess::Write);
        let f = parse_message(
            "AMD-Vi: Event logged [IO_PAGE_FAULT device=0000:03:00.1 domain=0x0000 \
             address=0xfee00000 flags=0x0000]",
        )
        .unwrap();
        assert_eq!(f.device, bdf("0000:03:00.1"));
        assert_eq!(f.access, FaultAccess::Read);
    }

    #[test]
    fn smmu_v3_and_virtio_iommu_faults() {
        let f = parse_message(
            "arm-smmu-v3 arm-smmu-v3.0.auto: event: F_TRANSLATION client: 0000:01:00.0 \
             sid: 0x100 ssid: 0x0 iova: 0x8000 ipa: 0x0",
        )
        .unwrap();
        assert_eq!(f.device, bdf("0000:01:00.0"));
        assert_eq!(f.iova, Some(0x8000));
        assert_eq!(f.reason, "F_TRANSLATION");
        let f =
            parse_message("virtio_iommu virtio0: page fault from EP 144 at 0x1000 [W]").unwrap();
        assert_eq!(f.device, bdf("0000:00:12.0"), "EP 144 = bus 0, devfn 0x90");
        assert_eq!(f.iova, Some(0x1000));
        assert_eq!(f.access, FaultAccess::Write);
    }

    #[test]
    fn kmsg_records_yield_their_message() {
        let r = "3,1021,4711000,-;DMAR: [DMA Read NO_PASID] Request device [0000:00:12.0] \
                 fault addr 0x0 [fault reason 0x06] PTE Read access is not set\n \
                 SUBSYSTEM=pci\n DEVICE=+pci:0000:00:12.0\n";
        let f = record_message(r).and_then(parse_message).unwrap();
        assert_eq!(f.iova, Some(0));
        assert!(!f.message.contains('\n'));
        assert_eq!(record_message("no header"), None);
    }

    #[test]
    fn a_file_cursor_reads_only_what_was_written_after_it_opened() {
        // A regular file stands in for /dev/kmsg (one record per read() there; here the
        // file holds one record, written after the cursor was placed at the end).
        let dir = std::env::temp_dir().join(format!("peerdma-fault-log-{}", std::process::id()));
        std::fs::write(&dir, "3,1,1,-;DMAR: [DMA Write NO_PASID] Request device [0000:00:01.0] fault addr 0x1000 [fault reason 0x05] PTE Write access is not set\n").unwrap();
        let mut log = FaultLog::open_at(&dir).unwrap();
        assert_eq!(log.read_new().unwrap(), vec![]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&dir).unwrap();
        std::io::Write::write_all(
            &mut f,
            b"3,2,2,-;DMAR: [DMA Read NO_PASID] Request device [0000:00:02.0] fault addr 0x2000 [fault reason 0x06] PTE Read access is not set\n",
        )
        .unwrap();
        let got = log.read_new().unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].device, bdf("0000:00:02.0"));
    }

    /// The status line of a fault whose record the kernel's rate limit swallowed is
    /// still a fault (seen in the testbed: the 4th DMAR fault within 5 s); a status
    /// line followed by its record, or one without a pending fault, adds nothing.
    #[test]
    fn a_fault_status_without_its_record_counts_as_a_fault_of_an_unknown_device() {
        let take = |lines: &[&str]| {
            let mut u = Unrecorded::default();
            let mut out = Vec::new();
            for l in lines {
                u.take_message(l, &mut out);
            }
            u.finish(&mut out);
            out
        };
        let status = "DMAR: DRHD: handling fault status reg 2";
        let record = "DMAR: [DMA Write NO_PASID] Request device [0000:00:12.0] fault addr \
                      0x1000 [fault reason 0x05] PTE Write access is not set";
        let intr = "DMAR: [INTR-REMAP] Request device [0000:00:12.0] fault index 0x2 \
                    [fault reason 0x25] Blocked a compatibility format interrupt request";
        let got = take(&[status, record]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].device, bdf("0000:00:12.0"));
        let got = take(&[status, record, status]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[1].device, got[1].iova), (None, None));
        assert!(got[1].reason.contains("rate-limited its record"), "{got:?}");
        assert_eq!(take(&[status, status]).len(), 2);
        assert_eq!(
            take(&[status, intr]),
            vec![],
            "an interrupt-remapping record is not DMA"
        );
        assert_eq!(take(&["DMAR: DRHD: handling fault status reg 1"]), vec![]);
    }
}
