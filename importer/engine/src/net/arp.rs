//! ARP for IPv4 over Ethernet (RFC 826): the request that asks who has an address and
//! the reply that answers it, built by [`arp_frame`] and parsed by [`parse_arp`].
//!
//! Packet layout (RFC 826 "Packet format"): hardware type 1 (Ethernet), protocol type
//! 0x0800, hardware length 6, protocol length 4, opcode (1 request, 2 reply), sender
//! MAC, sender IP, target MAC, target IP: 28 bytes after the 14-byte Ethernet header.

use std::net::Ipv4Addr;

use super::{MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HEADER};

/// An ARP frame: 14 + 28 bytes (a sender pads it to 60, e.g. the NIC with TCTL.PSP).
pub const ARP_FRAME: usize = ETH_HEADER + 28;

/// ARP opcode (RFC 826 `ar$op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// `ares_op$REQUEST` (1): who has the target IP?
    Request,
    /// `ares_op$REPLY` (2): the sender has it.
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// An ARP packet for IPv4 over Ethernet, with the Ethernet addresses it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Ethernet destination (broadcast for a request).
    pub eth_dst: MacAddr,
    /// Ethernet source.
    pub eth_src: MacAddr,
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address (`ar$sha`).
    pub sender_mac: MacAddr,
    /// Sender protocol address (`ar$spa`).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (`ar$tha`; zero in a request).
    pub target_mac: MacAddr,
    /// Target protocol address (`ar$tpa`).
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// A request from `mac`/`ip` asking for `target`'s MAC, broadcast.
    pub fn request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Arp {
        Arp {
            eth_dst: MacAddr::BROADCAST,
            eth_src: mac,
            op: ArpOp::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        }
    }

    /// The reply to this request from the owner of its target IP (`mac`), sent to the
    /// asker (RFC 826 "Packet Reception": swap sender and target, fill in the MAC).
    pub fn reply_from(&self, mac: MacAddr) -> Arp {
        Arp {
            eth_dst: self.sender_mac,
            eth_src: mac,
            op: ArpOp::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }
}

/// Why a frame is not an IPv4-over-Ethernet ARP request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotArp {
    /// Fewer than 42 bytes.
    #[error("the frame has {len} bytes, fewer than the 42 of an ARP frame")]
    Short {
        /// Bytes given.
        len: usize,
    },
    /// Not EtherType 0x0806.
    #[error("EtherType {ethertype:#06x} is not ARP (0x0806)")]
    EtherType {
        /// The EtherType.
        ethertype: u16,
    },
    /// Another hardware or protocol type or address length than Ethernet/IPv4.
    #[error("ARP for hardware type {htype}, protocol {ptype:#06x} is not IPv4 over Ethernet")]
    Format {
        /// `ar$hrd`.
        htype: u16,
        /// `ar$pro`.
        ptype: u16,
    },
    /// An opcode other than request (1) or reply (2) (RARP, InARP...).
    #[error("ARP opcode {op} is neither request (1) nor reply (2)")]
    Op {
        /// `ar$op`.
        op: u16,
    },
}

/// The Ethernet frame of `arp` (42 bytes, unpadded).
pub fn arp_frame(arp: &Arp) -> [u8; ARP_FRAME] {
    let mut f = [0u8; ARP_FRAME];
    f[0..6].copy_from_slice(&arp.eth_dst.0);
    f[6..12].copy_from_slice(&arp.eth_src.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut f[ETH_HEADER..];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&arp.op.code().to_be_bytes());
    a[8..14].copy_from_slice(&arp.sender_mac.0);
    a[14..18].copy_from_slice(&arp.sender_ip.octets());
    a[18..24].copy_from_slice(&arp.target_mac.0);
    a[24..28].copy_from_slice(&arp.target_ip.octets());
    f
}

/// Parses an ARP request or reply for IPv4 over Ethernet (padding after byte 42 is
/// ignored).
///
/// # Errors
///
/// [`NotArp`] naming what the frame is instead.
pub fn parse_arp(frame: &[u8]) -> Result<Arp, NotArp> {
    if frame.len() < ARP_FRAME {
        return Err(NotArp::Short { len: frame.len() });
    }
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let ethertype = be16(12);
    if ethertype != ETHERTYPE_ARP {
        return Err(NotArp::EtherType { ethertype });
    }
    let (htype, ptype) = (be16(14), be16(16));
    if htype != 1 || ptype != ETHERTYPE_IPV4 || frame[18] != 6 || frame[19] != 4 {
        return Err(NotArp::Format { htype, ptype });
    }
    let op = match be16(20) {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        op => return Err(NotArp::Op { op }),
    };
    let mac = |at: usize| MacAddr(frame[at..at + 6].try_into().expect("6 bytes"));
    let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    Ok(Arp {
        eth_dst: mac(0),
        eth_src: mac(6),
        op,
        sender_mac: mac(22),
        sender_ip: ip(28),
        target_mac: mac(32),
        target_ip: ip(38),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_its_reply_round_trip() {
        let me: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let peer: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        let req = Arp::request(me, Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 1));
        let f = arp_frame(&req);
        // RFC 826 fields at their offsets: htype 1, ptype 0x0800, 6, 4, op 1.
        assert_eq!(&f[12..22], &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&f[0..6], &[0xff; 6]);
        let mut padded = f.to_vec();
        padded.resize(60, 0);
        assert_eq!(parse_arp(&padded), Ok(req));
        let rep = req.reply_from(peer);
        assert_eq!(rep.eth_dst, me);
        assert_eq!(
            (rep.sender_mac, rep.sender_ip),
            (peer, Ipv4Addr::new(10, 77, 0, 1))
        );
        assert_eq!(
            (rep.target_mac, rep.target_ip),
            (me, Ipv4Addr::new(10, 77, 0, 2))
        );
        let f = arp_frame(&rep);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(parse_arp(&f), Ok(rep));
    }

    #[test]
    fn other_frames_are_named() {
        let f = arp_frame(&Arp::request(
            MacAddr::ZERO,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
        ));
        assert_eq!(parse_arp(&f[..30]), Err(NotArp::Short { len: 30 }));
        let mut g = f;
        g[13] = 0x00;
        assert_eq!(parse_arp(&g), Err(NotArp::EtherType { ethertype: 0x0800 }));
        let mut g = f;
        g[15] = 6;
        assert!(matches!(
            parse_arp(&g),
            Err(NotArp::Format { htype: 6, .. })
        ));
        let mut g = f;
        g[21] = 3;
        assert_eq!(parse_arp(&g), Err(NotArp::Op { op: 3 }));
    }
}
