//! The 82576 as a [`DmaEngine`] in MAC loopback: a copy of `len` bytes from IOVA `src`
//! to IOVA `dst` is a train of UDP datagrams the function sends to itself, each one's
//! payload read by the NIC at `src + offset` (TX) and, split off its 42 header bytes
//! (SRRCTL header split), written at `dst + offset` (RX). The IPv4 Identification of
//! datagram `k` is `k mod 2^16`; every received header is checked (ident, length,
//! addresses). Like Linux's VFIO selftest igb driver, but with the bytes landing at
//! the destination's own offsets, so the copy is a memcpy.

use std::net::Ipv4Addr;
use std::time::Instant;

use peerdma_importer::iommufd::Ioas;

use super::{Igb, IgbError, LinkMode, Ring, RxTarget, TxPayload};
use crate::dma_engine::{check_span, DmaEngine, TransferReport};
use crate::error::{EngineError, Result as EngineResult};
use crate::net::{parse_udp_headers, udp_headers, UdpEndpoint, MIN_UDP_PAYLOAD};

/// The address a loopback copy's datagrams carry (source and destination: itself), in
/// 10.255.0.0/16, a private range (RFC 1918) no testbed network uses.
pub const LOOPBACK_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// The UDP port of a loopback copy (the peerdma NIC stream's default).
pub const LOOPBACK_PORT: u16 = 18521;

/// How a copy of `len` bytes is cut into datagrams of at most `p` bytes: all of `p`
/// bytes but the last two, which share the rest so that each carries at least
/// [`MIN_UDP_PAYLOAD`] (18) bytes (a shorter datagram's frame is padded to 60 bytes and
/// the padding would be written after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyPlan {
    /// Bytes.
    pub len: u64,
    /// Payload bytes of a full datagram.
    pub p: u64,
    /// Datagrams.
    pub count: u64,
    /// Bytes moved from the second-last datagram to the last.
    pub moved: u64,
}

impl CopyPlan {
    /// Datagram `k`'s (offset, length).
    pub fn datagram(&self, k: u64) -> (u64, u64) {
        let start = k * self.p;
        if self.count >= 2 && k == self.count - 2 {
            (start, self.p - self.moved)
        } else if k == self.count - 1 {
            let start = start - self.moved;
            (start, self.len - start)
        } else {
            (start, self.p)
        }
    }
}

/// The [`CopyPlan`] of `len` bytes in datagrams of at most `p` bytes (`p` ≥ 36); `None`
/// for `len` < 18.
pub fn copy_plan(len: u64, p: u64) -> Option<CopyPlan> {
    let min = MIN_UDP_PAYLOAD as u64;
    if len < min || p < 2 * min {
        return None;
    }
    let count = len.div_ceil(p);
    let last = len - (count - 1) * p;
    let moved = if count >= 2 && last < min {
        min - last
    } else {
        0
    };
    Some(CopyPlan {
        len,
        p,
        count,
        moved,
    })
}

impl Igb {
    fn endpoint(&self) -> UdpEndpoint {
        UdpEndpoint {
            mac: self.mac,
            ip: LOOPBACK_IP,
            port: LOOPBACK_PORT,
        }
    }

    /// The copy proper: RX slots posted (RDT) before the datagrams that fill them are
    /// queued (TDT), at most a ring's worth in flight; returns when every datagram was
    /// received and checked and every TX descriptor reaped.
    fn loopback_copy(&mut self, src: u64, dst: u64, len: u64) -> Result<u64, IgbError> {
        let bdf = self.bdf;
        if self.opts.link != LinkMode::Loopback {
            return Err(IgbError::Unsupported {
                bdf,
                what: "a memcpy needs LinkMode::Loopback; on a wire the datagrams would \
                       leave the function"
                    .into(),
                fix: "open the function in loopback for DMA-engine copies",
            });
        }
        let plan = copy_plan(len, self.max_udp_payload() as u64)
            .ok_or(IgbError::CopyTooShort { bdf, len })?;
        let (cap_rx, cap_tx) = {
            let s = self.started("a copy")?;
            // Each frame: a header descriptor and its payload's, one more per 4 KiB
            // page the payload crosses.
            let per_frame = 2 + plan.p.div_ceil(super::ring::TX_PAGE);
            (
                s.rx.capacity() as u64,
                (s.tx.entries() as u64 - 1) / per_frame,
            )
        };
        let window = cap_rx.min(cap_tx).max(1);
        let me = self.endpoint();
        let timeout = self.opts.completion_timeout;
        let (mut sent, mut received) = (0u64, 0u64);
        let mut last = Instant::now();
        let mut spins = 0u32;
        while received < plan.count {
            // Post RX for the next datagrams, then queue their TX.
            let first = sent;
            while sent < plan.count && sent - received < window {
                let (off, n) = plan.datagram(sent);
                self.queue_rx(RxTarget::Iova {
                    iova: dst + off,
                    len: n as u32,
                })?;
                sent += 1;
            }
            if sent > first {
                self.announce_rx()?;
                for k in first..sent {
                    let (off, n) = plan.datagram(k);
                    let h = udp_headers(&me, &me, k as u16, n as usize);
                    self.queue_tx(
                        &h,
                        TxPayload::Iova {
                            iova: src + off,
                            len: n as u32,
                        },
                    )?;
                }
                self.announce_tx()?;
            }
            let mut progress = false;
            while let Some(frame) = self.poll_rx()? {
                let (_, n) = plan.datagram(received);
                check_datagram(bdf, received, n, &frame.headers, frame.payload_len, &me)?;
                received += 1;
                progress = true;
            }
            if self.reap_tx()? > 0 {
                progress = true;
            }
            if progress {
                last = Instant::now();
                continue;
            }
            spins += 1;
            if spins.is_multiple_of(256) {
                self.regs.read32(peerdma_uapi::igb::IGB_STATUS)?; // notices a revoke
            }
            if last.elapsed() >= timeout {
                return Err(self.stall(Ring::Rx, last.elapsed()));
            }
            std::thread::yield_now();
        }
        self.flush_tx(timeout)?;
        Ok(plan.count)
    }
}

/// Checks datagram `k`'s split-off headers and payload length.
fn check_datagram(
    bdf: peerdma_host::Bdf,
    k: u64,
    want_len: u64,
    headers: &[u8],
    payload_len: usize,
    me: &UdpEndpoint,
) -> Result<(), IgbError> {
    let bad = |why: String| IgbError::CopyMismatch { bdf, index: k, why };
    if headers.is_empty() {
        return Err(bad(format!(
            "the device did not split it ({payload_len} bytes went to the destination \
             whole): not an IPv4/UDP frame"
        )));
    }
    let h = parse_udp_headers(headers).map_err(|e| bad(e.to_string()))?;
    if h.ident != k as u16 {
        return Err(bad(format!(
            "IPv4 identification {} instead of {} (a datagram was lost or reordered)",
            h.ident, k as u16
        )));
    }
    if h.dst != *me || h.src != *me {
        return Err(bad(format!(
            "it went from {} to {}, not to itself ({me})",
            h.src, h.dst
        )));
    }
    if h.payload_len as u64 != want_len || payload_len as u64 != want_len {
        return Err(bad(format!(
            "UDP length says {} payload bytes and the device wrote {payload_len}, instead \
             of {want_len}",
            h.payload_len
        )));
    }
    Ok(())
}

impl DmaEngine for Igb {
    fn name(&self) -> String {
        format!("igb {}", self.bdf)
    }

    fn dma_mask(&self) -> u64 {
        // Descriptor addresses are 64-bit (datasheet 7.1.5, 7.2.2).
        u64::MAX
    }

    fn max_transfer(&self) -> u64 {
        // A copy is any number of datagrams; bound it by what a u32 datagram count
        // covers comfortably.
        1 << 40
    }

    fn start_in(&mut self, ioas: &Ioas) -> EngineResult<()> {
        self.start(ioas).map_err(EngineError::from)
    }

    fn as_igb_mut(&mut self) -> Option<&mut Igb> {
        Some(self)
    }

    fn copy(&mut self, src: u64, dst: u64, len: u64) -> EngineResult<TransferReport> {
        let name = self.name();
        check_span(&name, src, len, self.dma_mask())?;
        check_span(&name, dst, len, self.dma_mask())?;
        let start = Instant::now();
        let count = match self.loopback_copy(src, dst, len) {
            Ok(n) => n,
            Err(e) => {
                // Leave no frame of this copy in the rings for the next one.
                let left = self.rx_posted() > 0 || self.tx_in_flight() > 0;
                if left && !matches!(e, IgbError::Revoked { .. }) {
                    let _ = self.recover();
                }
                return Err(e.into());
            }
        };
        Ok(TransferReport {
            bytes: len,
            transfers: count.min(u64::from(u32::MAX)) as u32,
            elapsed: start.elapsed(),
            iommu_faults: None,
        })
    }
}

impl From<IgbError> for EngineError {
    fn from(source: IgbError) -> Self {
        EngineError::Igb(Box::new(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(plan: &CopyPlan) -> Vec<(u64, u64)> {
        (0..plan.count).map(|k| plan.datagram(k)).collect()
    }

    #[test]
    fn a_plan_covers_the_span_once_with_every_datagram_at_least_18_bytes() {
        for len in [
            18, 19, 1472, 1473, 1489, 1490, 2944, 2945, 4096, 65536, 100_000,
        ] {
            let plan = copy_plan(len, 1472).unwrap();
            let s = spans(&plan);
            let mut at = 0;
            for &(off, n) in &s {
                assert_eq!(off, at, "len {len}: {s:?}");
                assert!((18..=1472).contains(&n), "len {len}: {s:?}");
                at += n;
            }
            assert_eq!(at, len, "len {len}");
        }
        // 1473 = 1472 + 1: the last two become 1455 + 18.
        let plan = copy_plan(1473, 1472).unwrap();
        assert_eq!(spans(&plan), vec![(0, 1455), (1455, 18)]);
        assert_eq!(copy_plan(17, 1472), None);
        assert_eq!(copy_plan(4096, 1472).unwrap().count, 3);
    }

    #[test]
    fn a_datagram_with_the_wrong_ident_or_length_is_named() {
        let bdf: peerdma_host::Bdf = "0000:00:05.0".parse().unwrap();
        let me = UdpEndpoint {
            mac: "52:54:00:12:34:56".parse().unwrap(),
            ip: LOOPBACK_IP,
            port: LOOPBACK_PORT,
        };
        let h = udp_headers(&me, &me, 7, 1472);
        assert!(check_datagram(bdf, 7, 1472, &h, 1472, &me).is_ok());
        let e = check_datagram(bdf, 8, 1472, &h, 1472, &me).unwrap_err();
        assert!(
            e.to_string().contains("identification 7 instead of 8"),
            "{e}"
        );
        let e = check_datagram(bdf, 7, 1472, &h, 1400, &me).unwrap_err();
        assert!(e.to_string().contains("wrote 1400"), "{e}");
        let e = check_datagram(bdf, 7, 1472, &[], 60, &me).unwrap_err();
        assert_eq!(e.kind(), "igb_copy_mismatch");
    }
}
