//! What goes wrong driving an NVMe controller, each error naming the controller, the
//! command and queue, and the fix; and the names of the status codes a completion
//! carries (Base spec "Status Field Definition", NVM command set spec "Command Set
//! Specific Status Values").

use std::fmt;
use std::time::Duration;

use peerdma_host::Bdf;
use peerdma_uapi::nvme::{
    NVME_SCT_COMMAND_SPECIFIC, NVME_SCT_GENERIC, NVME_SCT_MEDIA, NVME_SCT_PATH, NVME_STATUS_DNR,
    NVME_STATUS_SCT_SHIFT, NVME_STATUS_SC_SHIFT,
};

/// A completion's status field, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Status Code Type.
    pub sct: u8,
    /// Status Code.
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
}

impl Status {
    /// Decodes the upper 15 bits of a CQE's status word (the phase bit is ignored).
    pub fn from_cqe(status: u16) -> Status {
        Status {
            sct: ((status >> NVME_STATUS_SCT_SHIFT) & 0x7) as u8,
            sc: ((status >> NVME_STATUS_SC_SHIFT) & 0xff) as u8,
            dnr: status & NVME_STATUS_DNR != 0,
        }
    }

    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The specification's name for this status ("LBA Out of Range").
    pub fn name(self) -> &'static str {
        match (self.sct, self.sc) {
            (NVME_SCT_GENERIC, sc) => match sc {
                0x00 => "Successful Completion",
                0x01 => "Invalid Command Opcode",
                0x02 => "Invalid Field in Command",
                0x03 => "Command ID Conflict",
                0x04 => "Data Transfer Error",
                0x05 => "Commands Aborted due to Power Loss Notification",
                0x06 => "Internal Error",
                0x07 => "Command Abort Requested",
                0x08 => "Command Aborted due to SQ Deletion",
                0x0b => "Invalid Namespace or Format",
                0x0c => "Command Sequence Error",
                0x0d => "Invalid SGL Segment Descriptor",
                0x0f => "Data SGL Length Invalid",
                0x13 => "PRP Offset Invalid",
                0x80 => "LBA Out of Range",
                0x81 => "Capacity Exceeded",
                0x82 => "Namespace Not Ready",
                _ => "generic status (unnamed here)",
            },
            (NVME_SCT_COMMAND_SPECIFIC, sc) => match sc {
                0x00 => "Completion Queue Invalid",
                0x01 => "Invalid Queue Identifier",
                0x02 => "Invalid Queue Size",
                0x80 => "Conflicting Attributes",
                0x82 => "Attempted Write to Read Only Range",
                _ => "command specific status (unnamed here)",
            },
            (NVME_SCT_MEDIA, sc) => match sc {
                0x80 => "Write Fault",
                0x81 => "Unrecovered Read Error",
                0x86 => "Access Denied",
                _ => "media or data integrity error (unnamed here)",
            },
            (NVME_SCT_PATH, _) => "path related status",
            _ => "vendor specific or reserved status",
        }
    }

    /// What usually fixes it.
    pub fn fix(self) -> &'static str {
        match (self.sct, self.sc) {
            (NVME_SCT_GENERIC, 0x04) => {
                "the controller could not reach the data's IOVA: the peer BAR was revoked \
                 (decode off, reset) or the buffer is not mapped in the controller's IOAS"
            }
            (NVME_SCT_GENERIC, 0x80) | (NVME_SCT_GENERIC, 0x81) => {
                "keep the LBA range inside the namespace (Identify Namespace NSZE)"
            }
            (NVME_SCT_GENERIC, 0x02) => "a command field is out of the controller's limits",
            (NVME_SCT_GENERIC, 0x0b) => "name an active namespace",
            _ => "see the NVMe base specification's status tables",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (SCT {:#x}, SC {:#04x}{})",
            self.name(),
            self.sct,
            self.sc,
            if self.dnr { ", do not retry" } else { "" }
        )
    }
}

/// A command, for messages: its name, the queue it went to, and the LBA range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandDesc {
    /// "Read", "Identify Controller", "Create I/O Completion Queue", ...
    pub name: &'static str,
    /// Queue id (0: admin).
    pub queue: u16,
    /// Command identifier.
    pub cid: u16,
    /// First LBA and block count, for I/O commands.
    pub lba: Option<(u64, u32)>,
}

impl fmt::Display for CommandDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (cid {}", self.name, self.cid)?;
        if let Some((lba, n)) = self.lba {
            write!(f, ", LBA {lba:#x} + {n} blocks")?;
        }
        write!(
            f,
            ") on {} queue {}",
            if self.queue == 0 { "admin" } else { "I/O" },
            self.queue
        )
    }
}

/// Everything that can go wrong driving an NVMe controller. Variants are sorted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NvmeError {
    /// A command completed with an error status.
    #[error("NVMe {bdf}: {command} failed: {status}; fix: {fix}", fix = .status.fix())]
    Command {
        /// Controller.
        bdf: Bdf,
        /// The command.
        command: CommandDesc,
        /// Its status.
        status: Status,
    },

    /// A command did not complete in time.
    #[error(
        "NVMe {bdf}: {command} did not complete within {after:?}; the controller was reset; \
         fix: the emulated controller may be stalled (QEMU under TCG), retry, or raise the \
         command timeout"
    )]
    CommandTimeout {
        /// Controller.
        bdf: Bdf,
        /// The command.
        command: CommandDesc,
        /// How long it was waited for.
        after: Duration,
    },

    /// VFIO refused a register access, the BAR mapping or config space.
    #[error("NVMe {}", crate::error::said_once(&bdf.to_string(), source))]
    Device {
        /// Controller.
        bdf: Bdf,
        /// The exporter library's error.
        #[source]
        source: peerdma_exporter::Error,
    },

    /// The controller reported a fatal error (CSTS.CFS).
    #[error(
        "NVMe {bdf}: controller fatal status (CSTS.CFS) while {during} (CSTS {csts:#x}); \
         fix: the controller needs a reset (done on the next open or recovery)"
    )]
    Fatal {
        /// Controller.
        bdf: Bdf,
        /// What the driver was doing.
        during: &'static str,
        /// The CSTS value.
        csts: u32,
    },

    /// The IOAS for the queues could not be set up.
    #[error("NVMe {}", crate::error::said_once(&bdf.to_string(), source))]
    Iommufd {
        /// Controller.
        bdf: Bdf,
        /// The iommufd importer's error.
        #[source]
        source: peerdma_importer::iommufd::Error,
    },

    /// A data IOVA the controller cannot be given.
    #[error(
        "NVMe {bdf}: data at IOVA {iova:#x} + {len:#x} is beyond what the controller reaches \
         ({why}); fix: map the buffer at a dword-aligned IOVA below {mask:#x}"
    )]
    IovaBeyondReach {
        /// Controller.
        bdf: Bdf,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
        /// The highest address it reaches.
        mask: u64,
        /// Why ("not dword aligned", "past the DMA mask").
        why: &'static str,
    },

    /// The namespace is formatted with metadata (LBAF.MS non-zero). This driver moves
    /// block data only: on an extended-LBA format a Read would deliver data and metadata
    /// interleaved (and overrun the buffer), on a separate-buffer format the controller
    /// would DMA the metadata to the address in MPTR. Refused before any I/O command.
    #[error(
        "NVMe {bdf} namespace {nsid} is formatted with metadata: LBA format {format} has \
         {block_size}-byte blocks plus {metadata_size} bytes of metadata each, {placement}{pi}; \
         this driver moves block data only, so every Read and Write would be wrong; fix: \
         {fix}",
        placement = if *.metadata_extended {
            "inline at the end of each block (extended LBA: a Read would interleave it with the data)"
        } else {
            "in a separate buffer (the controller would DMA it to the metadata pointer)"
        },
        pi = if *.protection == 0 { String::new() } else {
            format!(", with Type {} protection information", .protection)
        },
        fix = match .without_metadata {
            Some((index, size)) => format!(
                "format the namespace with LBA format {index} ({size}-byte blocks, no \
                 metadata; nvme-cli on the kernel driver: nvme format /dev/nvmeXnY --lbaf={index}), \
                 which erases it, or use another namespace"
            ),
            None => "use a namespace formatted without metadata: this one offers no such \
                     LBA format".to_string(),
        }
    )]
    Metadata {
        /// Controller.
        bdf: Bdf,
        /// Namespace.
        nsid: u32,
        /// The LBA format in use.
        format: u8,
        /// Its data bytes per block.
        block_size: u32,
        /// Its metadata bytes per block.
        metadata_size: u16,
        /// Whether the metadata is inline (extended LBA) or in a separate buffer.
        metadata_extended: bool,
        /// The protection information type (0: none).
        protection: u8,
        /// A format without metadata: (index, block size).
        without_metadata: Option<(u8, u32)>,
    },

    /// The namespace is not there.
    #[error(
        "NVMe {bdf}: namespace {nsid} is not active (the controller has {nn} namespace(s)); \
         fix: name an active namespace (usually 1)"
    )]
    NoNamespace {
        /// Controller.
        bdf: Bdf,
        /// Namespace asked for.
        nsid: u32,
        /// Number of namespaces (Identify Controller NN).
        nn: u32,
    },

    /// A length that is not a whole number of blocks.
    #[error(
        "NVMe {bdf} namespace {nsid}: {len:#x} bytes is not a multiple of the {block_size}-byte \
         block size; fix: transfer whole blocks"
    )]
    NotBlockMultiple {
        /// Controller.
        bdf: Bdf,
        /// Namespace.
        nsid: u32,
        /// Length asked for.
        len: u64,
        /// Block size.
        block_size: u32,
    },

    /// The device is not an NVMe controller.
    #[error(
        "{bdf} is not an NVMe controller (class {class:#08x}, ids {vendor:04x}:{device:04x}); \
         fix: name an NVMe controller bound to vfio-pci (class 0x010802)"
    )]
    NotNvme {
        /// Device.
        bdf: Bdf,
        /// PCI class code (24 bits).
        class: u32,
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
    },

    /// An LBA range past the end of the namespace.
    #[error(
        "NVMe {bdf} namespace {nsid}: LBA {lba:#x} + {blocks} blocks reaches past its \
         {capacity} blocks of {block_size} bytes ({total} bytes); fix: start lower or move \
         less",
        total = .capacity * u64::from(*.block_size)
    )]
    OutOfRange {
        /// Controller.
        bdf: Bdf,
        /// Namespace.
        nsid: u32,
        /// First LBA.
        lba: u64,
        /// Blocks asked for.
        blocks: u64,
        /// Namespace size in blocks.
        capacity: u64,
        /// Block size.
        block_size: u32,
    },

    /// The controller did not become ready (or not-ready) within CAP.TO.
    #[error(
        "NVMe {bdf}: CSTS.RDY did not become {want} within {after:?} (CAP.TO) while {during} \
         (CSTS {csts:#x}); fix: the controller is wedged; reset the function (FLR) and retry"
    )]
    ReadyTimeout {
        /// Controller.
        bdf: Bdf,
        /// What the driver was doing.
        during: &'static str,
        /// The value waited for.
        want: u8,
        /// CAP.TO.
        after: Duration,
        /// Last CSTS.
        csts: u32,
    },

    /// The controller's registers were revoked under the driver: memory decode went
    /// off, or it was reset or put in D3 through VFIO, which zaps the BAR mapping
    /// (`vfio_pci_zap_and_down_write_memory_lock`); the driver's register accesses now
    /// reach anonymous memory, not the controller.
    #[error(
        "NVMe {bdf}: the controller's registers were revoked during {during} (memory \
         decode off, a reset or D3 through VFIO); fix: open the engine again once the \
         controller is live"
    )]
    Revoked {
        /// Controller.
        bdf: Bdf,
        /// What the driver was doing (the register access).
        during: &'static str,
    },

    /// The controller stopped under the driver: CSTS.RDY went clear while commands
    /// were waited for (an FLR, a reset through VFIO or sysfs, or D3 reset it).
    #[error(
        "NVMe {bdf}: the controller stopped (CSTS.RDY = 0, CSTS {csts:#x}) while {during}: \
         it was reset under the driver and its queues are gone; fix: open the engine \
         again (it re-enables the controller)"
    )]
    Stopped {
        /// Controller.
        bdf: Bdf,
        /// What the driver was doing.
        during: &'static str,
        /// The CSTS value.
        csts: u32,
    },

    /// The controller lacks something this driver needs.
    #[error("NVMe {bdf}: {what}; fix: {fix}")]
    Unsupported {
        /// Controller.
        bdf: Bdf,
        /// What is missing.
        what: String,
        /// The fix.
        fix: &'static str,
    },
}

impl NvmeError {
    /// A stable, machine-readable name for this error: `nvme_` and the variant in
    /// snake_case (`nvme_metadata`, `nvme_command_timeout`), or the exporter's or
    /// importer's own kind for theirs. Kinds are never renamed.
    pub fn kind(&self) -> &'static str {
        match self {
            NvmeError::Command { .. } => "nvme_command",
            NvmeError::CommandTimeout { .. } => "nvme_command_timeout",
            NvmeError::Device { source, .. } => source.kind(),
            NvmeError::Fatal { .. } => "nvme_fatal",
            NvmeError::Iommufd { source, .. } => source.kind(),
            NvmeError::IovaBeyondReach { .. } => "nvme_iova_beyond_reach",
            NvmeError::Metadata { .. } => "nvme_metadata",
            NvmeError::NotBlockMultiple { .. } => "nvme_not_block_multiple",
            NvmeError::NoNamespace { .. } => "nvme_no_namespace",
            NvmeError::NotNvme { .. } => "not_nvme",
            NvmeError::OutOfRange { .. } => "nvme_out_of_range",
            NvmeError::ReadyTimeout { .. } => "nvme_ready_timeout",
            NvmeError::Revoked { .. } => "nvme_revoked",
            NvmeError::Stopped { .. } => "nvme_stopped",
            NvmeError::Unsupported { .. } => "nvme_unsupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decode_by_name() {
        // LBA Out of Range: SCT 0, SC 0x80, DNR set; phase bit set too.
        let raw = (0x80u16 << 1) | NVME_STATUS_DNR | 1;
        let s = Status::from_cqe(raw);
        assert_eq!((s.sct, s.sc, s.dnr), (0, 0x80, true));
        assert_eq!(s.name(), "LBA Out of Range");
        assert!(!s.is_success());
        assert!(Status::from_cqe(1).is_success());
        let invalid_field = Status::from_cqe(0x02 << 1);
        assert_eq!(
            invalid_field.to_string(),
            "Invalid Field in Command (SCT 0x0, SC 0x02)"
        );
        let read_err = Status::from_cqe((2 << 9) | (0x81 << 1));
        assert_eq!(read_err.name(), "Unrecovered Read Error");
    }

    #[test]
    fn messages_name_command_queue_and_fix() {
        let bdf: Bdf = "00:13.0".parse().unwrap();
        let e = NvmeError::CommandTimeout {
            bdf,
            command: CommandDesc {
                name: "Read",
                queue: 1,
                cid: 7,
                lba: Some((0x100, 8)),
            },
            after: Duration::from_secs(5),
        };
        let msg = e.to_string();
        assert!(
            msg.contains("Read (cid 7, LBA 0x100 + 8 blocks) on I/O queue 1"),
            "{msg}"
        );
        assert!(msg.contains("5s") && msg.contains("fix:"), "{msg}");
        let e = NvmeError::OutOfRange {
            bdf,
            nsid: 1,
            lba: 10,
            blocks: 10,
            capacity: 16,
            block_size: 512,
        };
        assert!(e.to_string().contains("8192 bytes"), "{e}");
    }
}
