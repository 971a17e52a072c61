//! What goes wrong driving an 82576 (igb), each error naming the function, the register
//! or ring, what the value means and the fix.

use std::fmt;
use std::time::Duration;

use peerdma_host::Bdf;

/// A descriptor ring of the driver (queue 0 of each direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// The transmit ring (TDBAL/TDH/TDT of queue 0).
    Tx,
    /// The receive ring (RDBAL/RDH/RDT of queue 0).
    Rx,
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ring::Tx => "TX ring (TDH/TDT)",
            Ring::Rx => "RX ring (RDH/RDT)",
        })
    }
}

/// Everything that can go wrong driving an 82576. Variants are sorted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IgbError {
    /// A frame's UDP headers are not the ones a copy expected (another datagram, a
    /// lost one, or traffic that is not the copy's).
    #[error(
        "igb {bdf}: datagram {index} of the copy arrived wrong: {why}; the bytes written \
         into the destination are not trustworthy; fix: keep other traffic off the loopback \
         (nothing else may use this function during a copy) and copy again"
    )]
    CopyMismatch {
        /// Function.
        bdf: Bdf,
        /// Datagram index (ring order).
        index: u64,
        /// What was wrong, in words.
        why: String,
    },

    /// A copy of fewer bytes than one minimum-size datagram.
    #[error(
        "igb {bdf}: a {len}-byte copy is shorter than one UDP datagram of 18 bytes, the \
         least a 60-byte Ethernet frame carries (the NIC pads shorter frames and would write \
         the padding into the destination); fix: copy at least 18 bytes"
    )]
    CopyTooShort {
        /// Function.
        bdf: Bdf,
        /// Length asked for.
        len: u64,
    },

    /// VFIO refused config space, the BAR mapping or a register access.
    #[error("igb {}", crate::error::said_once(&bdf.to_string(), source))]
    Device {
        /// Function.
        bdf: Bdf,
        /// The exporter library's error.
        #[source]
        source: peerdma_exporter::Error,
    },

    /// A frame longer than the MTU allows.
    #[error(
        "igb {bdf}: a {len}-byte frame is longer than the {max} bytes the MTU {mtu} allows \
         (14 header bytes + MTU); fix: send at most {max} bytes, or open with a larger MTU"
    )]
    FrameTooLong {
        /// Function.
        bdf: Bdf,
        /// Frame bytes (headers + payload).
        len: usize,
        /// The longest frame.
        max: usize,
        /// The MTU.
        mtu: u16,
    },

    /// The IOAS for the rings and buffers could not be set up.
    #[error("igb {}", crate::error::said_once(&bdf.to_string(), source))]
    Iommufd {
        /// Function.
        bdf: Bdf,
        /// The iommufd importer's error.
        #[source]
        source: peerdma_importer::iommufd::Error,
    },

    /// The link never came up (STATUS.LU stayed 0).
    #[error(
        "igb {bdf}: no link after {secs:.1} s (STATUS {status:#010x}: LU = 0); {fix}",
        secs = .waited.as_secs_f64(),
        fix = if *.loopback {
            "loopback forces the link up (CTRL.SLU, PHY loopback), so the device ignored it: \
             check it is QEMU's igb or an 82576"
        } else {
            "fix: connect the port (QEMU: give -device igb a netdev whose link is up, \
             e.g. set_link ... on), or raise the link timeout"
        }
    )]
    LinkDown {
        /// Function.
        bdf: Bdf,
        /// How long it was waited for.
        waited: Duration,
        /// The last STATUS.
        status: u32,
        /// Whether the link was asked for in loopback.
        loopback: bool,
    },

    /// A PHY register access over MDIC did not finish or reported an error.
    #[error(
        "igb {bdf}: PHY register {reg} access through MDIC {what} (MDIC {mdic:#010x}); \
         fix: the PHY does not answer: reset the function (FLR) and open it again"
    )]
    Mdic {
        /// Function.
        bdf: Bdf,
        /// PHY register number.
        reg: u32,
        /// "did not finish within 50 ms", "reported an error (MDIC.E)".
        what: &'static str,
        /// The last MDIC.
        mdic: u32,
    },

    /// An MTU the device does not take.
    #[error(
        "igb {bdf}: MTU {mtu} is outside {min}..={max} (the 82576 receives frames up to \
         9018 bytes with RCTL.LPE and RLPML; the driver caps the MTU at 9000); fix: ask for \
         an MTU in that range (1500 is standard Ethernet)"
    )]
    Mtu {
        /// Function.
        bdf: Bdf,
        /// MTU asked for.
        mtu: u16,
        /// Smallest MTU.
        min: u16,
        /// Largest MTU.
        max: u16,
    },

    /// The device is not an 82576.
    #[error(
        "{bdf} is not an Intel 82576 (igb): its ids are {vendor:04x}:{device:04x} ({what}); \
         fix: name the igb function bound to vfio-pci (QEMU -device igb, 8086:10c9)"
    )]
    NotIgb {
        /// Function.
        bdf: Bdf,
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
        /// What it is instead, in words (its class).
        what: String,
    },

    /// An operation that needs [`Igb::start`](super::Igb::start) first.
    #[error("igb {bdf}: {what} before the rings are started; fix: start it in an IOAS first")]
    NotStarted {
        /// Function.
        bdf: Bdf,
        /// The operation.
        what: &'static str,
    },

    /// A queue's RXDCTL/TXDCTL.ENABLE did not read back 1.
    #[error(
        "igb {bdf}: the {ring} did not enable within {secs:.1} s ({reg} {value:#010x}: ENABLE \
         = 0); fix: the device ignored the queue setup: reset the function (FLR) and open it \
         again",
        secs = .waited.as_secs_f64()
    )]
    QueueEnable {
        /// Function.
        bdf: Bdf,
        /// Which ring.
        ring: Ring,
        /// "RXDCTL" or "TXDCTL".
        reg: &'static str,
        /// Last value read.
        value: u32,
        /// How long it was waited for.
        waited: Duration,
    },

    /// A reset (CTRL.RST) did not finish.
    #[error(
        "igb {bdf}: CTRL.RST did not clear within {secs:.1} s (CTRL {ctrl:#010x}); fix: the \
         device is wedged: reset the function (FLR) and open it again",
        secs = .waited.as_secs_f64()
    )]
    ResetTimeout {
        /// Function.
        bdf: Bdf,
        /// How long.
        waited: Duration,
        /// The last CTRL.
        ctrl: u32,
    },

    /// The register BAR was revoked under the driver (memory decode off, a reset or D3
    /// through VFIO zapped the mapping): register accesses no longer reach the device.
    #[error(
        "igb {bdf}: the registers (BAR0) were revoked during {during} (memory decode off, a \
         reset or D3 through VFIO); fix: open the engine again once the function is live"
    )]
    Revoked {
        /// Function.
        bdf: Bdf,
        /// What the driver was doing.
        during: &'static str,
    },

    /// The ring parameters asked for do not fit.
    #[error(
        "igb {bdf}: {entries} ring entries do not fit: {why}; fix: ask for a multiple of 8 \
         from 8 to 32768 (RDLEN/TDLEN are multiples of 128 bytes)"
    )]
    RingEntries {
        /// Function.
        bdf: Bdf,
        /// Entries asked for.
        entries: u16,
        /// Why.
        why: &'static str,
    },

    /// A ring made no progress: the device did not complete a descriptor in time.
    #[error(
        "igb {bdf}: the {ring} made no progress for {secs:.1} s (head {head}, tail {tail}); \
         {fix}",
        secs = .waited.as_secs_f64(),
        fix = match .ring {
            Ring::Tx => "fix: the device stopped transmitting (TCTL.EN, link down, or a \
                         revoked or reset function); open it again",
            Ring::Rx => "fix: nothing arrived: the frames were lost (no link, filtered by \
                         RCTL/RAH, longer than the MTU) or an IOMMU fault dropped them; \
                         check the IOMMU fault log and the link",
        }
    )]
    RingStall {
        /// Function.
        bdf: Bdf,
        /// Which ring.
        ring: Ring,
        /// Head (RDH/TDH) last read.
        head: u32,
        /// Tail (RDT/TDT) last written.
        tail: u32,
        /// How long it was waited for.
        waited: Duration,
    },

    /// A received descriptor reported errors.
    #[error(
        "igb {bdf}: RX descriptor {slot} reported {what} (status/error {status_error:#010x}); \
         the frame was {len} bytes; fix: {fix}"
    )]
    RxDescriptor {
        /// Function.
        bdf: Bdf,
        /// Ring slot.
        slot: u16,
        /// The error bits, named ("RXE (receive data error)").
        what: String,
        /// The status/error dword.
        status_error: u32,
        /// PKT_LEN.
        len: u16,
        /// What to do.
        fix: &'static str,
    },

    /// A frame's payload was longer than the IOVA span it was posted with (the device
    /// wrote past it, up to the packet buffer size).
    #[error(
        "igb {bdf}: RX slot {slot} received a {len}-byte payload into a {target_len}-byte \
         target at IOVA {iova:#x}: {over} bytes past its end were overwritten; fix: post \
         targets of the packet buffer size ({buffer} bytes) or keep frames to the target"
        , over = .len - .target_len
    )]
    RxOverrun {
        /// Function.
        bdf: Bdf,
        /// Ring slot.
        slot: u16,
        /// Payload bytes the device wrote.
        len: u32,
        /// The target's length.
        target_len: u32,
        /// The target's IOVA.
        iova: u64,
        /// The packet buffer size (SRRCTL.BSIZEPACKET).
        buffer: u32,
    },

    /// The driver cannot do this in the link mode it was opened with.
    #[error("igb {bdf}: {what}; fix: {fix}")]
    Unsupported {
        /// Function.
        bdf: Bdf,
        /// What.
        what: String,
        /// The fix.
        fix: &'static str,
    },
}

impl IgbError {
    /// A stable, machine-readable name: `igb_` and the variant in snake_case
    /// (`igb_link_down`, `igb_ring_stall`), `not_igb`, or the exporter's or importer's own
    /// kind for theirs. Kinds are never renamed.
    pub fn kind(&self) -> &'static str {
        match self {
            IgbError::CopyMismatch { .. } => "igb_copy_mismatch",
            IgbError::CopyTooShort { .. } => "igb_copy_too_short",
            IgbError::Device { source, .. } => source.kind(),
            IgbError::FrameTooLong { .. } => "igb_frame_too_long",
            IgbError::Iommufd { source, .. } => source.kind(),
            IgbError::LinkDown { .. } => "igb_link_down",
            IgbError::Mdic { .. } => "igb_mdic",
            IgbError::Mtu { .. } => "igb_mtu",
            IgbError::NotIgb { .. } => "not_igb",
            IgbError::NotStarted { .. } => "igb_not_started",
            IgbError::QueueEnable { .. } => "igb_queue_enable",
            IgbError::ResetTimeout { .. } => "igb_reset_timeout",
            IgbError::Revoked { .. } => "igb_revoked",
            IgbError::RingEntries { .. } => "igb_ring_entries",
            IgbError::RingStall { .. } => "igb_ring_stall",
            IgbError::RxDescriptor { .. } => "igb_rx_descriptor",
            IgbError::RxOverrun { .. } => "igb_rx_overrun",
            IgbError::Unsupported { .. } => "igb_unsupported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_function_the_register_and_the_fix() {
        let bdf: Bdf = "0000:00:05.0".parse().unwrap();
        let e = IgbError::LinkDown {
            bdf,
            waited: Duration::from_secs(5),
            status: 0x80080,
            loopback: false,
        };
        let m = e.to_string();
        assert!(
            m.starts_with("igb 0000:00:05.0: no link after 5.0 s"),
            "{m}"
        );
        assert!(m.contains("STATUS 0x00080080") && m.contains("fix:"), "{m}");
        assert_eq!(e.kind(), "igb_link_down");
        let e = IgbError::RingStall {
            bdf,
            ring: Ring::Rx,
            head: 3,
            tail: 9,
            waited: Duration::from_millis(2500),
        };
        let m = e.to_string();
        assert!(
            m.contains("RX ring (RDH/RDT)") && m.contains("head 3, tail 9"),
            "{m}"
        );
        assert!(
            m.contains("for 2.5 s") && m.contains("IOMMU fault log"),
            "{m}"
        );
        let e = IgbError::NotIgb {
            bdf,
            vendor: 0x1234,
            device: 0x11e8,
            what: "class 00ff00".into(),
        };
        assert!(e.to_string().contains("1234:11e8 (class 00ff00)"), "{e}");
        assert_eq!(e.kind(), "not_igb");
    }
}
