//! Intel 82576 Gigabit Ethernet controller (`igb`; QEMU `-device igb`, 8086:10c9): the
//! BAR0 register offsets and bits a polling user-space driver uses, and the advanced
//! transmit data descriptor and advanced receive descriptor layouts.
//!
//! Source: Intel 82576EB Gigabit Ethernet Controller Datasheet (rev. 2.x), section 8
//! (register descriptions) and 7.1.5 / 7.2.2 (descriptor formats); the same values as
//! Linux's `drivers/net/ethernet/intel/igb/e1000_{regs,defines}.h` and QEMU's
//! `hw/net/igb_regs.h`. Names are the datasheet's (`CTRL`, `RCTL`, `SRRCTL`, `RDT`).
//! No kernel UAPI header carries these; the layout tests at the end of this file check
//! the descriptors against the datasheet's figures. Queue registers are given for queue
//! `n` at the datasheet's primary addresses (0x0C000 + 0x40·n for RX, 0x0E000 + 0x40·n
//! for TX; queues 0-3 also have aliases at 0x02800/0x03800 that this file does not use).

// ---- General registers (datasheet 8.2) ----

/// Device Control (8.2.1).
pub const IGB_CTRL: usize = 0x0000;
/// Device Status, read-only (8.2.2).
pub const IGB_STATUS: usize = 0x0008;
/// EEPROM/Flash Control (8.2.3).
pub const IGB_EECD: usize = 0x0010;
/// Extended Device Control (8.2.5).
pub const IGB_CTRL_EXT: usize = 0x0018;
/// MDI Control: PHY register access over MDIO (8.2.4).
pub const IGB_MDIC: usize = 0x0020;
/// Interrupt Cause Read (8.8.1).
pub const IGB_ICR: usize = 0x00c0;
/// Interrupt Mask Clear (8.8.4): writing 1s masks those causes.
pub const IGB_IMC: usize = 0x00d8;
/// Extended Interrupt Mask Clear (8.8.8).
pub const IGB_EIMC: usize = 0x1528;
/// PCIe Control (GCR, 8.6.1).
pub const IGB_GCR: usize = 0x5b00;

// CTRL bits.

/// CTRL.FD: full duplex.
pub const IGB_CTRL_FD: u32 = 1 << 0;
/// CTRL.SLU: set link up (forces the MAC's link in the forced-speed modes).
pub const IGB_CTRL_SLU: u32 = 1 << 6;
/// CTRL.SPEED (bits 9:8) mask.
pub const IGB_CTRL_SPD_SEL: u32 = 3 << 8;
/// CTRL.SPEED = 10b: 1000 Mb/s.
pub const IGB_CTRL_SPD_1000: u32 = 2 << 8;
/// CTRL.FRCSPD: force speed.
pub const IGB_CTRL_FRCSPD: u32 = 1 << 11;
/// CTRL.FRCDPX: force duplex.
pub const IGB_CTRL_FRCDPX: u32 = 1 << 12;
/// CTRL.RST: device reset, self-clearing (8.2.1; wait ≥ 1 ms, 4.2.1.6.1).
pub const IGB_CTRL_RST: u32 = 1 << 26;

// STATUS bits.

/// STATUS.FD: full duplex.
pub const IGB_STATUS_FD: u32 = 1 << 0;
/// STATUS.LU: link up.
pub const IGB_STATUS_LU: u32 = 1 << 1;
/// STATUS.SPEED (bits 7:6): 00 10, 01 100, 1x 1000 Mb/s.
pub const IGB_STATUS_SPEED_SHIFT: u32 = 6;

/// EECD.AUTO_RD: NVM auto-read done after reset (QEMU never sets it).
pub const IGB_EECD_AUTO_RD: u32 = 1 << 9;

/// CTRL_EXT.LINK_MODE (bits 23:22): 00 = copper (internal PHY).
pub const IGB_CTRL_EXT_LINK_MODE_MASK: u32 = 3 << 22;
/// CTRL_EXT.DRV_LOAD: a driver has taken the device over (firmware hands off).
pub const IGB_CTRL_EXT_DRV_LOAD: u32 = 1 << 28;

/// GCR.Completion_Timeout_Resend (bit 16): resend a request whose completion timed
/// out; cleared so a DMA the IOMMU refused is not retried forever.
pub const IGB_GCR_CMPL_TMOUT_RESEND: u32 = 1 << 16;

// MDIC fields (8.2.4).

/// MDIC.REGADD: PHY register address, bits 20:16.
pub const IGB_MDIC_REG_SHIFT: u32 = 16;
/// MDIC.PHYADD: PHY address, bits 25:21 (the internal PHY is 1).
pub const IGB_MDIC_PHY_SHIFT: u32 = 21;
/// MDIC.OP = 01b: write.
pub const IGB_MDIC_OP_WRITE: u32 = 1 << 26;
/// MDIC.OP = 10b: read.
pub const IGB_MDIC_OP_READ: u32 = 2 << 26;
/// MDIC.R: ready (the access finished).
pub const IGB_MDIC_READY: u32 = 1 << 28;
/// MDIC.E: error (no PHY answered).
pub const IGB_MDIC_ERROR: u32 = 1 << 30;

// PHY registers (IEEE 802.3 clause 22, datasheet 8.24).

/// PHY Control register (BMCR), PHY register 0.
pub const IGB_PHY_BMCR: u32 = 0;
/// PHY Status register (BMSR), PHY register 1.
pub const IGB_PHY_BMSR: u32 = 1;
/// BMCR: speed selection MSB (with LSB 0: 1000 Mb/s).
pub const IGB_BMCR_SPEED1000: u16 = 1 << 6;
/// BMCR: full duplex.
pub const IGB_BMCR_FULLDPLX: u16 = 1 << 8;
/// BMCR: restart auto-negotiation (self-clearing).
pub const IGB_BMCR_ANRESTART: u16 = 1 << 9;
/// BMCR: auto-negotiation enable.
pub const IGB_BMCR_ANENABLE: u16 = 1 << 12;
/// BMCR: loopback.
pub const IGB_BMCR_LOOPBACK: u16 = 1 << 14;

// ---- Receive (datasheet 8.10) ----

/// Receive Control (8.10.1).
pub const IGB_RCTL: usize = 0x0100;
/// Receive Long Packet Maximum Length (8.10.5): with RCTL.LPE, the longest frame
/// accepted, FCS included (bits 13:0).
pub const IGB_RLPML: usize = 0x5004;
/// Receive Address Low of entry `n` (0-15) (8.10.13): MAC bytes 0-3.
pub const fn igb_ral(n: usize) -> usize {
    0x5400 + 8 * n
}
/// Receive Address High of entry `n` (8.10.14): MAC bytes 4-5, AV.
pub const fn igb_rah(n: usize) -> usize {
    0x5404 + 8 * n
}
/// RAH.AV: address valid (the filter matches it).
pub const IGB_RAH_AV: u32 = 1 << 31;

/// RCTL.EN: receiver enable.
pub const IGB_RCTL_EN: u32 = 1 << 1;
/// RCTL.SBP: store bad packets.
pub const IGB_RCTL_SBP: u32 = 1 << 2;
/// RCTL.UPE: unicast promiscuous.
pub const IGB_RCTL_UPE: u32 = 1 << 3;
/// RCTL.MPE: multicast promiscuous.
pub const IGB_RCTL_MPE: u32 = 1 << 4;
/// RCTL.LPE: long packet enable (frames up to RLPML instead of 1522 bytes).
pub const IGB_RCTL_LPE: u32 = 1 << 5;
/// RCTL.LBM = 01b: MAC loopback (the datasheet says the 82576 does not implement it;
/// QEMU's igb loops frames back only with it, or with PHY loopback it does not model).
pub const IGB_RCTL_LBM_MAC: u32 = 1 << 6;
/// RCTL.BAM: accept broadcast.
pub const IGB_RCTL_BAM: u32 = 1 << 15;
/// RCTL.SECRC: strip the Ethernet CRC (else QEMU writes 4 FCS bytes after the payload).
pub const IGB_RCTL_SECRC: u32 = 1 << 26;

/// Split and Replication Receive Control of queue `n` (8.10.2).
pub const fn igb_srrctl(n: usize) -> usize {
    0xc00c + 0x40 * n
}
/// RX Descriptor Base Address Low of queue `n` (8.10.3).
pub const fn igb_rdbal(n: usize) -> usize {
    0xc000 + 0x40 * n
}
/// RX Descriptor Base Address High of queue `n`.
pub const fn igb_rdbah(n: usize) -> usize {
    0xc004 + 0x40 * n
}
/// RX Descriptor Ring Length of queue `n`, bytes (a multiple of 128).
pub const fn igb_rdlen(n: usize) -> usize {
    0xc008 + 0x40 * n
}
/// RX Descriptor Head of queue `n`.
pub const fn igb_rdh(n: usize) -> usize {
    0xc010 + 0x40 * n
}
/// RX Descriptor Tail of queue `n`.
pub const fn igb_rdt(n: usize) -> usize {
    0xc018 + 0x40 * n
}
/// Receive Descriptor Control of queue `n` (8.10.10).
pub const fn igb_rxdctl(n: usize) -> usize {
    0xc028 + 0x40 * n
}

/// SRRCTL.BSIZEPACKET (bits 6:0): packet buffer size in 1 KiB units (0: RCTL.BSIZE).
pub const IGB_SRRCTL_BSIZEPACKET_MASK: u32 = 0x7f;
/// SRRCTL.BSIZEPACKET unit: 1 KiB.
pub const IGB_SRRCTL_BSIZEPACKET_SHIFT: u32 = 10;
/// SRRCTL.BSIZEHEADER (bits 11:8): header buffer size in 64-byte units.
pub const IGB_SRRCTL_BSIZEHEADER_MASK: u32 = 0xf00;
/// SRRCTL.BSIZEHEADER: a byte count shifted left by this is the field (64 B → 1 << 8).
pub const IGB_SRRCTL_BSIZEHEADER_SHIFT: u32 = 2;
/// SRRCTL.DESCTYPE (bits 27:25) = 001b: advanced, one buffer.
pub const IGB_SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// SRRCTL.DESCTYPE = 010b: advanced, header splitting (headers of recognised
/// packets to the header buffer, the rest to the packet buffer).
pub const IGB_SRRCTL_DESCTYPE_HDR_SPLIT: u32 = 2 << 25;
/// SRRCTL.DESCTYPE = 101b: advanced, header splitting always.
pub const IGB_SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS: u32 = 5 << 25;
/// SRRCTL.Drop_En: drop packets when no descriptor is free (no head-of-line block).
pub const IGB_SRRCTL_DROP_EN: u32 = 1 << 31;

/// RXDCTL.ENABLE / TXDCTL.ENABLE: queue enable (reads back 1 once the queue runs).
pub const IGB_XDCTL_QUEUE_ENABLE: u32 = 1 << 25;

// ---- Transmit (datasheet 8.12) ----

/// Transmit Control (8.12.1).
pub const IGB_TCTL: usize = 0x0400;
/// TCTL.EN: transmitter enable.
pub const IGB_TCTL_EN: u32 = 1 << 1;
/// TCTL.PSP: pad short packets to 64 bytes.
pub const IGB_TCTL_PSP: u32 = 1 << 3;

/// TX Descriptor Base Address Low of queue `n` (8.12.2).
pub const fn igb_tdbal(n: usize) -> usize {
    0xe000 + 0x40 * n
}
/// TX Descriptor Base Address High of queue `n`.
pub const fn igb_tdbah(n: usize) -> usize {
    0xe004 + 0x40 * n
}
/// TX Descriptor Ring Length of queue `n`, bytes (a multiple of 128).
pub const fn igb_tdlen(n: usize) -> usize {
    0xe008 + 0x40 * n
}
/// TX Descriptor Head of queue `n`.
pub const fn igb_tdh(n: usize) -> usize {
    0xe010 + 0x40 * n
}
/// TX Descriptor Tail of queue `n`.
pub const fn igb_tdt(n: usize) -> usize {
    0xe018 + 0x40 * n
}
/// Transmit Descriptor Control of queue `n` (8.12.13).
pub const fn igb_txdctl(n: usize) -> usize {
    0xe028 + 0x40 * n
}

// ---- Statistics (datasheet 8.19; clear on read) ----

/// CRC Error Count.
pub const IGB_CRCERRS: usize = 0x4000;
/// Missed Packets Count (no room in the packet buffer).
pub const IGB_MPC: usize = 0x4010;
/// Good Packets Received Count.
pub const IGB_GPRC: usize = 0x4074;
/// Good Packets Transmitted Count.
pub const IGB_GPTC: usize = 0x4080;
/// Receive No Buffers Count (no free RX descriptor).
pub const IGB_RNBC: usize = 0x40a0;
/// Receive Undersize Count (frames under 64 bytes, padded).
pub const IGB_RUC: usize = 0x40a4;
/// Receive Oversize Count (frames over the maximum length).
pub const IGB_ROC: usize = 0x40ac;

// ---- Descriptors ----

/// Advanced transmit data descriptor, read format (datasheet 7.2.2.3; Linux
/// `union e1000_adv_tx_desc.read`): 16 bytes, little-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct igb_adv_tx_desc {
    /// Buffer address (an IOVA).
    pub buffer_addr: u64,
    /// DTALEN (15:0), DTYP (23:20), DCMD (31:24).
    pub cmd_type_len: u32,
    /// STA (3:0) written back, IDX, POPTS, PAYLEN (31:14).
    pub olinfo_status: u32,
}

/// TX `cmd_type_len` DTYP = 0011b: advanced data descriptor.
pub const IGB_ADVTXD_DTYP_DATA: u32 = 3 << 20;
/// DCMD.EOP: end of packet (the last descriptor of a frame).
pub const IGB_ADVTXD_DCMD_EOP: u32 = 1 << 24;
/// DCMD.IFCS: insert the FCS.
pub const IGB_ADVTXD_DCMD_IFCS: u32 = 1 << 25;
/// DCMD.RS: report status (write DD back when done).
pub const IGB_ADVTXD_DCMD_RS: u32 = 1 << 27;
/// DCMD.DEXT: extended (advanced) descriptor.
pub const IGB_ADVTXD_DCMD_DEXT: u32 = 1 << 29;
/// `olinfo_status` PAYLEN (bits 31:14): the frame's total length (first descriptor).
pub const IGB_ADVTXD_PAYLEN_SHIFT: u32 = 14;
/// Written-back `olinfo_status` STA.DD: descriptor done.
pub const IGB_ADVTXD_STAT_DD: u32 = 1 << 0;

/// Advanced receive descriptor, read format (datasheet 7.1.5.1; Linux
/// `union e1000_adv_rx_desc.read`): what the driver posts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct igb_adv_rx_desc_read {
    /// Packet buffer address (bit 0 is A0/NSE; keep addresses even).
    pub pkt_addr: u64,
    /// Header buffer address (header split modes; bit 0 is DD on write-back).
    pub hdr_addr: u64,
}

/// Advanced receive descriptor, write-back format (datasheet 7.1.5.2; Linux
/// `union e1000_adv_rx_desc.wb`): what the device writes over the read format.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct igb_adv_rx_desc_wb {
    /// RSS type (3:0) and packet type (bits 16:4 of the dword, here 15:4).
    pub pkt_info: u16,
    /// HDR_LEN (14:5) and SPH (15): header split information.
    pub hdr_info: u16,
    /// RSS hash, or fragment checksum and IP identification (RXCSUM.PCSD clear).
    pub rss: u32,
    /// Extended status (19:0) and extended errors (31:20).
    pub status_error: u32,
    /// PKT_LEN: bytes written to the packet buffer.
    pub length: u16,
    /// VLAN tag.
    pub vlan: u16,
}

/// RX `hdr_info` HDR_LEN mask (bits 14:5): bytes written to the header buffer.
pub const IGB_RXDADV_HDRBUFLEN_MASK: u16 = 0x7fe0;
/// RX `hdr_info` HDR_LEN shift.
pub const IGB_RXDADV_HDRBUFLEN_SHIFT: u32 = 5;
/// RX `hdr_info` SPH: the header was split off into the header buffer.
pub const IGB_RXDADV_SPH: u16 = 0x8000;
/// RX status DD: descriptor done.
pub const IGB_RXD_STAT_DD: u32 = 1 << 0;
/// RX status EOP: end of packet.
pub const IGB_RXD_STAT_EOP: u32 = 1 << 1;
/// RX extended error HBO: the header was longer than the header buffer.
pub const IGB_RXDADV_ERR_HBO: u32 = 1 << 23;
/// RX extended error SECERR (bits 28:27): security (IPsec) error.
pub const IGB_RXDADV_ERR_SECERR_MASK: u32 = 3 << 27;
/// RX extended error L4E: TCP/UDP checksum error.
pub const IGB_RXDADV_ERR_L4E: u32 = 1 << 29;
/// RX extended error IPE: IPv4 header checksum error.
pub const IGB_RXDADV_ERR_IPE: u32 = 1 << 30;
/// RX extended error RXE: a receive data error (CRC, symbol, length...).
pub const IGB_RXDADV_ERR_RXE: u32 = 1 << 31;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn descriptors_match_the_datasheet_figures() {
        // 7.2.2.3: address 0..8, DTALEN/DTYP/DCMD 8..12, STA/PAYLEN 12..16.
        assert_eq!(size_of::<igb_adv_tx_desc>(), 16);
        assert_eq!(offset_of!(igb_adv_tx_desc, cmd_type_len), 8);
        assert_eq!(offset_of!(igb_adv_tx_desc, olinfo_status), 12);
        // 7.1.5.1: packet buffer address 0..8, header buffer address 8..16.
        assert_eq!(size_of::<igb_adv_rx_desc_read>(), 16);
        assert_eq!(offset_of!(igb_adv_rx_desc_read, hdr_addr), 8);
        // 7.1.5.2: pkt_info/hdr_info dword 0, RSS dword 1, status/error dword 2,
        // length and VLAN dword 3.
        assert_eq!(size_of::<igb_adv_rx_desc_wb>(), 16);
        assert_eq!(offset_of!(igb_adv_rx_desc_wb, hdr_info), 2);
        assert_eq!(offset_of!(igb_adv_rx_desc_wb, rss), 4);
        assert_eq!(offset_of!(igb_adv_rx_desc_wb, status_error), 8);
        assert_eq!(offset_of!(igb_adv_rx_desc_wb, length), 12);
        assert_eq!(offset_of!(igb_adv_rx_desc_wb, vlan), 14);
    }

    #[test]
    fn registers_match_the_datasheet_addresses() {
        assert_eq!((IGB_RCTL, IGB_TCTL, IGB_GCR), (0x100, 0x400, 0x5b00));
        assert_eq!(
            (igb_rdbal(0), igb_srrctl(0), igb_rxdctl(1)),
            (0xc000, 0xc00c, 0xc068)
        );
        assert_eq!(
            (igb_tdbal(0), igb_tdt(0), igb_txdctl(0)),
            (0xe000, 0xe018, 0xe028)
        );
        assert_eq!((igb_ral(0), igb_rah(1)), (0x5400, 0x540c));
        assert_eq!(IGB_ADVTXD_DTYP_DATA | IGB_ADVTXD_DCMD_DEXT, 0x2030_0000);
        // 64-byte header buffer: BSIZEHEADER = 1 at bits 11:8.
        assert_eq!(64u32 << IGB_SRRCTL_BSIZEHEADER_SHIFT, 0x100);
        assert_eq!(IGB_SRRCTL_DESCTYPE_HDR_SPLIT, 0x0400_0000);
    }
}
