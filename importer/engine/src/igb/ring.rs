//! The TX and RX descriptor rings of queue 0 in user memory mapped into the function's
//! IOAS, with the driver's per-slot host buffers (datasheet 7.1 "Receive Functionality",
//! 7.2 "Transmit Functionality"). Descriptors are written and read by copies
//! ([`UserBuffer::write`]/[`read`](UserBuffer::read)), never through references: the
//! device writes them back at any time.
//!
//! TX: a frame is one advanced data descriptor for its headers (from the slot's header
//! buffer) and one for its payload (the slot's host buffer or any IOVA), the last with
//! EOP, IFCS and RS; its completion is the DD bit written back into that last
//! descriptor. RX: every posted slot points its header address at the slot's header
//! buffer and its packet address at the slot's host payload buffer or a caller's IOVA;
//! with SRRCTL.DESCTYPE = header split the device writes a UDP datagram's 42 header
//! bytes to the first and its payload to the second, and writes the descriptor back
//! with DD.

use std::collections::VecDeque;

use peerdma_importer::iommufd::{self, Prot, UserMapping};
use peerdma_uapi::igb::*;

use crate::backing::DmaMemory;

/// Bytes of one descriptor.
pub(crate) const DESC: usize = 16;
/// Bytes of one slot's header buffer (SRRCTL.BSIZEHEADER, 64-byte units; 42 are used
/// by an untagged UDP datagram, the rest leaves room for a VLAN tag or IP options).
pub(crate) const HDR_SLOT: usize = 128;

/// What a transmitted frame's payload descriptor points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxPayload<'a> {
    /// Bytes copied into the slot's host payload buffer (control traffic).
    Host(&'a [u8]),
    /// `len` bytes the device reads at `iova` (e.g. a BAR's dma-buf mapped in the IOAS).
    Iova {
        /// Bus address in the function's IOAS.
        iova: u64,
        /// Bytes.
        len: u32,
    },
}

impl TxPayload<'_> {
    /// Bytes of payload.
    pub fn len(&self) -> usize {
        match self {
            TxPayload::Host(b) => b.len(),
            TxPayload::Iova { len, .. } => *len as usize,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a posted RX slot's packet buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxTarget {
    /// The slot's host payload buffer (control traffic): [`RxFrame::payload`](super::RxFrame::payload) holds a copy.
    Host,
    /// Straight into this IOVA span (e.g. a BAR's dma-buf): the device writes up to the
    /// packet buffer size there, so a frame longer than `len` overruns it
    /// ([`IgbError::RxOverrun`](super::IgbError::RxOverrun) says so afterwards).
    Iova {
        /// Bus address in the function's IOAS (even).
        iova: u64,
        /// Bytes the caller expects there.
        len: u32,
    },
}

/// The IOMMU page a TX buffer must not cross: QEMU's igb takes each TX buffer with one
/// `pci_dma_map` (`net_tx_pkt_add_raw_fragment_pci`), which under a vIOMMU stops at the
/// translation's page end, and drops the whole frame when the buffer was longer. An
/// 82576 takes any buffer; cutting them costs a descriptor per crossing.
pub(crate) const TX_PAGE: u64 = 4096;

/// `addr..addr+len` cut where it crosses a [`TX_PAGE`] boundary (nothing for `len` 0).
pub(crate) fn split_at_pages(addr: u64, len: usize) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let (mut at, end) = (addr, addr + len as u64);
    while at < end {
        let next = ((at / TX_PAGE) + 1) * TX_PAGE;
        let stop = next.min(end);
        out.push((at, (stop - at) as usize));
        at = stop;
    }
    out
}

/// One advanced TX data descriptor's 16 bytes (datasheet 7.2.2.3).
pub(crate) fn tx_desc(addr: u64, len: usize, last: bool, frame_len: usize) -> [u8; DESC] {
    let mut cmd = len as u32 | IGB_ADVTXD_DTYP_DATA | IGB_ADVTXD_DCMD_DEXT | IGB_ADVTXD_DCMD_IFCS;
    if last {
        cmd |= IGB_ADVTXD_DCMD_EOP | IGB_ADVTXD_DCMD_RS;
    }
    let olinfo = (frame_len as u32) << IGB_ADVTXD_PAYLEN_SHIFT;
    let mut d = [0u8; DESC];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&cmd.to_le_bytes());
    d[12..16].copy_from_slice(&olinfo.to_le_bytes());
    d
}

/// One advanced RX descriptor in read format (datasheet 7.1.5.1).
pub(crate) fn rx_desc(pkt_addr: u64, hdr_addr: u64) -> [u8; DESC] {
    let mut d = [0u8; DESC];
    d[0..8].copy_from_slice(&pkt_addr.to_le_bytes());
    d[8..16].copy_from_slice(&hdr_addr.to_le_bytes());
    d
}

/// An RX descriptor as written back (datasheet 7.1.5.2), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RxWriteBack {
    /// SPH: the header was split off into the header buffer.
    pub split: bool,
    /// HDR_LEN: header bytes.
    pub hdr_len: usize,
    /// Extended status and errors.
    pub status_error: u32,
    /// PKT_LEN: bytes in the packet buffer.
    pub len: u16,
}

impl RxWriteBack {
    /// Decodes a descriptor's 16 bytes; `None` while DD is clear.
    pub(crate) fn decode(d: &[u8; DESC]) -> Option<RxWriteBack> {
        let status_error = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes"));
        if status_error & IGB_RXD_STAT_DD == 0 {
            return None;
        }
        let hdr_info = u16::from_le_bytes([d[2], d[3]]);
        Some(RxWriteBack {
            split: hdr_info & IGB_RXDADV_SPH != 0,
            hdr_len: usize::from(
                (hdr_info & IGB_RXDADV_HDRBUFLEN_MASK) >> IGB_RXDADV_HDRBUFLEN_SHIFT,
            ),
            status_error,
            len: u16::from_le_bytes([d[12], d[13]]),
        })
    }

    /// The error bits, named; `None` when there are none (and EOP is set).
    pub(crate) fn errors(&self) -> Option<(String, &'static str)> {
        let mut named = Vec::new();
        let e = self.status_error;
        if e & IGB_RXDADV_ERR_RXE != 0 {
            named.push("RXE (receive data error: CRC, symbol or length)");
        }
        if e & IGB_RXDADV_ERR_IPE != 0 {
            named.push("IPE (IPv4 header checksum error)");
        }
        if e & IGB_RXDADV_ERR_L4E != 0 {
            named.push("L4E (TCP/UDP checksum error)");
        }
        if e & IGB_RXDADV_ERR_HBO != 0 {
            named.push("HBO (header longer than the 128-byte header buffer)");
        }
        if e & IGB_RXDADV_ERR_SECERR_MASK != 0 {
            named.push("SECERR (security error)");
        }
        if !named.is_empty() {
            return Some((
                named.join(", "),
                "the frame was damaged or malformed on the way: drop it and have it sent again",
            ));
        }
        if e & IGB_RXD_STAT_EOP == 0 {
            return Some((
                "no EOP (the frame spans several descriptors)".into(),
                "keep frames within the MTU the driver was opened with",
            ));
        }
        None
    }
}

/// The transmit ring and its host buffers.
#[derive(Debug)]
pub(crate) struct TxRing {
    ring: UserMapping,
    headers: UserMapping,
    payloads: UserMapping,
    entries: u16,
    slot_bytes: usize,
    /// Next descriptor to write (what TDT gets).
    pub tail: u16,
    /// Descriptors handed to the device and not reaped.
    used: u16,
    /// Each frame in flight: its last descriptor and how many it has.
    frames: VecDeque<(u16, u16)>,
    unannounced: bool,
}

impl TxRing {
    /// Allocates the ring (`entries` descriptors), header buffers of [`HDR_SLOT`] bytes
    /// and payload buffers of `slot_bytes` per descriptor, all mapped in `memory`.
    pub(crate) fn new<M: DmaMemory<Buffer = UserMapping>>(
        memory: &M,
        entries: u16,
        slot_bytes: usize,
    ) -> iommufd::Result<TxRing> {
        let n = usize::from(entries);
        Ok(TxRing {
            ring: memory.alloc(n * DESC, Prot::ReadWrite)?,
            headers: memory.alloc(n * HDR_SLOT, Prot::Read)?,
            payloads: memory.alloc(n * slot_bytes, Prot::Read)?,
            entries,
            slot_bytes,
            tail: 0,
            used: 0,
            frames: VecDeque::new(),
            unannounced: false,
        })
    }

    /// The ring's IOVA (TDBAL/TDBAH).
    pub(crate) fn iova(&self) -> u64 {
        self.ring.iova()
    }

    /// Descriptors in the ring.
    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Free descriptors (one always stays free: head == tail means empty).
    pub(crate) fn free(&self) -> u16 {
        self.entries - 1 - self.used
    }

    /// Frames in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.frames.len()
    }

    /// Whether descriptors were written since the last TDT write.
    pub(crate) fn unannounced(&self) -> bool {
        self.unannounced
    }

    /// TDT was written.
    pub(crate) fn announced(&mut self) {
        self.unannounced = false;
    }

    /// The buffers of one frame queued at the tail: the slot's header buffer, then the
    /// payload (the slot's host buffer or the caller's IOVA), each cut at 4 KiB IOVA
    /// boundaries ([`split_at_pages`]): one descriptor each.
    pub(crate) fn plan(&self, headers: &[u8], payload: &TxPayload<'_>) -> Vec<(u64, usize)> {
        let slot = usize::from(self.tail);
        let mut out = split_at_pages(
            self.headers.iova() + (slot * HDR_SLOT) as u64,
            headers.len(),
        );
        match payload {
            TxPayload::Host(bytes) => out.extend(split_at_pages(
                self.payloads.iova() + (slot * self.slot_bytes) as u64,
                bytes.len(),
            )),
            TxPayload::Iova { iova, len } => out.extend(split_at_pages(*iova, *len as usize)),
        }
        out
    }

    /// Writes one frame at the tail as [`plan`](Self::plan) cut it (the caller checked
    /// the descriptors are free and the frame's size); TDT is written by the caller.
    pub(crate) fn push(
        &mut self,
        headers: &[u8],
        payload: TxPayload<'_>,
        plan: &[(u64, usize)],
    ) -> iommufd::Result<()> {
        let frame_len = headers.len() + payload.len();
        let slot = usize::from(self.tail);
        self.headers.buffer().write(slot * HDR_SLOT, headers)?;
        if let TxPayload::Host(bytes) = payload {
            self.payloads
                .buffer()
                .write(slot * self.slot_bytes, bytes)?;
        }
        let count = plan.len() as u16;
        for (i, &(addr, len)) in plan.iter().enumerate() {
            let last = i as u16 + 1 == count;
            let d = tx_desc(addr, len, last, frame_len);
            self.ring
                .buffer()
                .write(usize::from(self.tail) * DESC, &d)?;
            self.tail = (self.tail + 1) % self.entries;
        }
        let eop = (self.tail + self.entries - 1) % self.entries;
        self.frames.push_back((eop, count));
        self.used += count;
        self.unannounced = true;
        Ok(())
    }

    /// Releases every frame whose last descriptor has DD written back, in ring order;
    /// returns how many.
    pub(crate) fn reap(&mut self) -> iommufd::Result<usize> {
        let mut n = 0;
        while let Some(&(eop, count)) = self.frames.front() {
            let mut sta = [0u8; 4];
            self.ring
                .buffer()
                .read(usize::from(eop) * DESC + 12, &mut sta)?;
            if u32::from_le_bytes(sta) & IGB_ADVTXD_STAT_DD == 0 {
                break;
            }
            self.frames.pop_front();
            self.used -= count;
            n += 1;
        }
        Ok(n)
    }

    /// Forgets every frame (after a reset: the device dropped them).
    pub(crate) fn clear(&mut self) {
        self.ring.buffer().fill(0);
        self.tail = 0;
        self.used = 0;
        self.frames.clear();
        self.unannounced = false;
    }
}

/// A completed RX slot, as [`RxRing::poll`] found it.
#[derive(Debug)]
pub(crate) struct RxDone {
    pub slot: u16,
    pub wb: RxWriteBack,
    pub target: RxTarget,
    pub headers: Vec<u8>,
    pub payload: Option<Vec<u8>>,
}

/// The receive ring and its host buffers.
#[derive(Debug)]
pub(crate) struct RxRing {
    ring: UserMapping,
    headers: UserMapping,
    payloads: UserMapping,
    entries: u16,
    /// Packet buffer bytes per slot (SRRCTL.BSIZEPACKET).
    buf: usize,
    /// Next slot to post (what RDT gets).
    pub tail: u16,
    /// Next slot to complete.
    next: u16,
    posted: u16,
    targets: Vec<Option<RxTarget>>,
    unannounced: bool,
}

impl RxRing {
    /// Allocates the ring, [`HDR_SLOT`]-byte header buffers and `buf`-byte host packet
    /// buffers per slot, all mapped in `memory` (the buffers writable by the device).
    pub(crate) fn new<M: DmaMemory<Buffer = UserMapping>>(
        memory: &M,
        entries: u16,
        buf: usize,
    ) -> iommufd::Result<RxRing> {
        let n = usize::from(entries);
        Ok(RxRing {
            ring: memory.alloc(n * DESC, Prot::ReadWrite)?,
            headers: memory.alloc(n * HDR_SLOT, Prot::Write)?,
            payloads: memory.alloc(n * buf, Prot::Write)?,
            entries,
            buf,
            tail: 0,
            next: 0,
            posted: 0,
            targets: vec![None; n],
            unannounced: false,
        })
    }

    /// The ring's IOVA (RDBAL/RDBAH).
    pub(crate) fn iova(&self) -> u64 {
        self.ring.iova()
    }

    /// Slots posted and not yet completed.
    pub(crate) fn posted(&self) -> usize {
        usize::from(self.posted)
    }

    /// The most slots posted at once (entries − 1: head == tail means empty).
    pub(crate) fn capacity(&self) -> usize {
        usize::from(self.entries) - 1
    }

    /// Packet buffer bytes per slot.
    pub(crate) fn buf(&self) -> usize {
        self.buf
    }

    /// Whether slots were posted since the last RDT write.
    pub(crate) fn unannounced(&self) -> bool {
        self.unannounced
    }

    /// RDT was written.
    pub(crate) fn announced(&mut self) {
        self.unannounced = false;
    }

    /// Posts the tail slot with `target` (the caller checked there is room); RDT is
    /// written by the caller.
    pub(crate) fn post(&mut self, target: RxTarget) -> iommufd::Result<()> {
        let slot = usize::from(self.tail);
        let pkt = match target {
            RxTarget::Host => self.payloads.iova() + (slot * self.buf) as u64,
            RxTarget::Iova { iova, .. } => iova,
        };
        let hdr = self.headers.iova() + (slot * HDR_SLOT) as u64;
        self.ring.buffer().write(slot * DESC, &rx_desc(pkt, hdr))?;
        self.targets[slot] = Some(target);
        self.tail = (self.tail + 1) % self.entries;
        self.posted += 1;
        self.unannounced = true;
        Ok(())
    }

    /// The next slot in ring order if the device wrote it back, with its header bytes
    /// and (for a host target) its payload bytes copied out.
    pub(crate) fn poll(&mut self) -> iommufd::Result<Option<RxDone>> {
        if self.posted == 0 {
            return Ok(None);
        }
        let slot = self.next;
        let at = usize::from(slot) * DESC;
        let mut sta = [0u8; 4];
        self.ring.buffer().read(at + 8, &mut sta)?;
        if u32::from_le_bytes(sta) & IGB_RXD_STAT_DD == 0 {
            return Ok(None);
        }
        let mut d = [0u8; DESC];
        self.ring.buffer().read(at, &mut d)?;
        let Some(wb) = RxWriteBack::decode(&d) else {
            return Ok(None);
        };
        let target = self.targets[usize::from(slot)]
            .take()
            .unwrap_or(RxTarget::Host);
        let mut headers = Vec::new();
        if wb.split {
            headers.resize(wb.hdr_len.min(HDR_SLOT), 0);
            self.headers
                .buffer()
                .read(usize::from(slot) * HDR_SLOT, &mut headers)?;
        }
        let payload = match target {
            RxTarget::Host => {
                let mut p = vec![0u8; usize::from(wb.len).min(self.buf)];
                self.payloads
                    .buffer()
                    .read(usize::from(slot) * self.buf, &mut p)?;
                Some(p)
            }
            RxTarget::Iova { .. } => None,
        };
        self.next = (self.next + 1) % self.entries;
        self.posted -= 1;
        Ok(Some(RxDone {
            slot,
            wb,
            target,
            headers,
            payload,
        }))
    }

    /// Forgets every posted slot (after a reset).
    pub(crate) fn clear(&mut self) {
        self.ring.buffer().fill(0);
        self.tail = 0;
        self.next = 0;
        self.posted = 0;
        self.targets.iter_mut().for_each(|t| *t = None);
        self.unannounced = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_buffers_are_cut_at_4_kib_pages() {
        assert_eq!(split_at_pages(0x1000, 42), vec![(0x1000, 42)]);
        assert_eq!(
            split_at_pages(0x1b80, 1472),
            vec![(0x1b80, 1152), (0x2000, 320)]
        );
        assert_eq!(split_at_pages(0x2000, 4096), vec![(0x2000, 4096)]);
        assert_eq!(split_at_pages(0xfff, 8194).len(), 4);
        assert!(split_at_pages(0x1000, 0).is_empty());
    }

    #[test]
    fn a_tx_descriptor_carries_length_type_and_commands() {
        let d = tx_desc(0x1234_5000, 42, false, 1514);
        assert_eq!(u64::from_le_bytes(d[0..8].try_into().unwrap()), 0x1234_5000);
        let cmd = u32::from_le_bytes(d[8..12].try_into().unwrap());
        // DEXT, DTYP data, IFCS; no EOP/RS on the header descriptor.
        assert_eq!(cmd, 42 | 0x2030_0000 | (1 << 25));
        assert_eq!(
            u32::from_le_bytes(d[12..16].try_into().unwrap()) >> 14,
            1514
        );
        let d = tx_desc(0x8000, 1472, true, 1514);
        let cmd = u32::from_le_bytes(d[8..12].try_into().unwrap());
        assert_eq!(
            cmd & (IGB_ADVTXD_DCMD_EOP | IGB_ADVTXD_DCMD_RS),
            IGB_ADVTXD_DCMD_EOP | IGB_ADVTXD_DCMD_RS
        );
        assert_eq!(cmd & 0xffff, 1472);
    }

    #[test]
    fn a_written_back_rx_descriptor_decodes_split_length_and_errors() {
        let mut d = rx_desc(0x10000, 0x20000);
        // Read format: DD (bit 0 of the header address's low dword) clear.
        assert_eq!(RxWriteBack::decode(&d), None);
        // Write-back of a split UDP datagram: HDR_LEN 42, SPH, DD|EOP, PKT_LEN 1472.
        d = [0; DESC];
        d[2..4].copy_from_slice(&((42u16 << 5) | 0x8000).to_le_bytes());
        d[8..12].copy_from_slice(&3u32.to_le_bytes());
        d[12..14].copy_from_slice(&1472u16.to_le_bytes());
        let wb = RxWriteBack::decode(&d).unwrap();
        assert_eq!(
            wb,
            RxWriteBack {
                split: true,
                hdr_len: 42,
                status_error: 3,
                len: 1472
            }
        );
        assert_eq!(wb.errors(), None);
        d[8..12].copy_from_slice(&(3u32 | IGB_RXDADV_ERR_RXE | IGB_RXDADV_ERR_HBO).to_le_bytes());
        let (what, _) = RxWriteBack::decode(&d).unwrap().errors().unwrap();
        assert!(what.contains("RXE") && what.contains("HBO"), "{what}");
        d[8..12].copy_from_slice(&1u32.to_le_bytes());
        let (what, _) = RxWriteBack::decode(&d).unwrap().errors().unwrap();
        assert!(what.contains("EOP"), "{what}");
    }
}
