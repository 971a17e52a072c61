//! Reads the wire captures QEMU's `filter-dump` writes, and finds the UDP datagrams in
//! them.
//!
//! `filter-dump` (QEMU 10 net/dump.c) writes the classic libpcap format, not pcapng: a
//! 24-byte file header (magic 0xa1b2c3d4 in the host's byte order, version 2.4,
//! snaplen 65536, link type 1 = Ethernet), then per frame a 16-byte record header (seconds,
//! microseconds, captured length, original length) and the captured bytes. This reader
//! takes either byte order and the nanosecond variant (magic 0xa1b23c4d) too; pcapng
//! (0x0a0d0d0a) is refused by name. Format: <https://www.tcpdump.org/manpages/pcap-savefile.5.html>.
//!
//! The Ethernet II / IPv4 / UDP parsing here is deliberately minimal (no VLAN tags, no
//! IP reassembly: fragments are skipped): the engine crate's `net` module (helper igb's
//! branch) parses the same headers for the NIC driver; once it is on the main branch this
//! should use it instead.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Link type 1: Ethernet (LINKTYPE_ETHERNET).
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time, seconds since the epoch.
    pub ts_sec: u32,
    /// Capture time's fraction: microseconds (nanoseconds in a nanosecond capture).
    pub ts_frac: u32,
    /// The frame's length on the wire (more than `data.len()` where the capture cut it).
    pub orig_len: u32,
    /// The captured bytes, from the destination MAC on (no FCS).
    pub data: Vec<u8>,
}

/// A whole capture file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// The link type (1: Ethernet).
    pub linktype: u32,
    /// The most bytes of a frame captured.
    pub snaplen: u32,
    /// Whether `Frame::ts_frac` counts nanoseconds (else microseconds).
    pub nanos: bool,
    /// The frames, in capture order.
    pub frames: Vec<Frame>,
}

/// Parses a classic pcap file's bytes.
///
/// # Errors
///
/// Not a classic pcap (pcapng or another magic, named), or a header or record cut short
/// (its byte offset named).
pub fn parse(bytes: &[u8]) -> Result<Capture> {
    if bytes.len() < 24 {
        bail!(
            "a pcap file needs a 24-byte header; this one has {} bytes",
            bytes.len()
        );
    }
    let magic_le = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let (big, nanos) = match magic_le {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        0x0a0d_0d0a => bail!("this is a pcapng file; only classic pcap is read here"),
        m => bail!("not a pcap file (magic {m:#010x})"),
    };
    let u32_at = |off: usize| -> u32 {
        let b: [u8; 4] = bytes[off..off + 4].try_into().expect("4 bytes");
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let snaplen = u32_at(16);
    let linktype = u32_at(20) & 0x0fff_ffff;
    let mut frames = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        if bytes.len() - off < 16 {
            bail!(
                "the pcap record header at byte {off} is cut short ({} of 16 bytes)",
                bytes.len() - off
            );
        }
        let (ts_sec, ts_frac, incl, orig_len) = (
            u32_at(off),
            u32_at(off + 4),
            u32_at(off + 8),
            u32_at(off + 12),
        );
        let start = off + 16;
        let end = start
            .checked_add(incl as usize)
            .filter(|&e| e <= bytes.len())
            .with_context(|| {
                format!(
                    "the pcap record at byte {off} claims {incl} captured bytes; the file has {} left",
                    bytes.len() - start
                )
            })?;
        frames.push(Frame {
            ts_sec,
            ts_frac,
            orig_len,
            data: bytes[start..end].to_vec(),
        });
        off = end;
    }
    Ok(Capture {
        linktype,
        snaplen,
        nanos,
        frames,
    })
}

/// Reads and parses the pcap file at `path`.
///
/// # Errors
///
/// The file unreadable (path named), or what [`parse`] refuses.
pub fn read(path: &Path) -> Result<Capture> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// A UDP datagram found in an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram {
    /// Which frame of the capture (0-based).
    pub frame: usize,
    /// Ethernet source and destination MAC.
    pub src_mac: [u8; 6],
    /// See `src_mac`.
    pub dst_mac: [u8; 6],
    /// IPv4 source address and UDP source port.
    pub src: SocketAddrV4,
    /// IPv4 destination address and UDP destination port.
    pub dst: SocketAddrV4,
    /// The IPv4 Identification field (the stream's sequence number, docs/nic.md).
    pub ident: u16,
    /// Whether the IPv4 header has DF (don't fragment) set.
    pub dont_fragment: bool,
    /// IPv4 time to live.
    pub ttl: u8,
    /// The UDP checksum field (0: none).
    pub udp_checksum: u16,
    /// The UDP payload (as captured: shorter than the UDP length says where the capture
    /// cut the frame).
    pub payload: Vec<u8>,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

/// The UDP datagram in one Ethernet II frame (`frame`: its index, for the result),
/// `None` when the frame is not unfragmented UDP over IPv4 (ARP, IPv6, a fragment, a
/// header cut short). Ethernet padding past the IPv4 total length is not payload.
pub fn udp_in_frame(frame: usize, data: &[u8]) -> Option<UdpDatagram> {
    let be16 = |off: usize| -> Option<u16> {
        Some(u16::from_be_bytes(data.get(off..off + 2)?.try_into().ok()?))
    };
    if be16(12)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = 14;
    let vihl = *data.get(ip)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || data.len() < ip + ihl {
        return None;
    }
    let total = usize::from(be16(ip + 2)?);
    let flags_frag = be16(ip + 6)?;
    // MF set or a fragment offset: part of a fragmented datagram.
    if flags_frag & 0x3fff != 0 || data[ip + 9] != IPPROTO_UDP || total < ihl + 8 {
        return None;
    }
    let addr = |off: usize| Ipv4Addr::new(data[off], data[off + 1], data[off + 2], data[off + 3]);
    let udp = ip + ihl;
    let udp_len = usize::from(be16(udp + 4)?);
    if udp_len < 8 {
        return None;
    }
    let end = (udp + udp_len).min(ip + total).min(data.len());
    Some(UdpDatagram {
        frame,
        src_mac: data[6..12].try_into().ok()?,
        dst_mac: data[0..6].try_into().ok()?,
        src: SocketAddrV4::new(addr(ip + 12), be16(udp)?),
        dst: SocketAddrV4::new(addr(ip + 16), be16(udp + 2)?),
        ident: be16(ip + 4)?,
        dont_fragment: flags_frag & 0x4000 != 0,
        ttl: data[ip + 8],
        udp_checksum: be16(udp + 6)?,
        payload: data.get(udp + 8..end)?.to_vec(),
    })
}

impl Capture {
    /// Every UDP-over-IPv4 datagram in the capture, in order (see [`udp_in_frame`]).
    pub fn udp_datagrams(&self) -> Vec<UdpDatagram> {
        if self.linktype != LINKTYPE_ETHERNET {
            return Vec::new();
        }
        self.frames
            .iter()
            .enumerate()
            .filter_map(|(i, f)| udp_in_frame(i, &f.data))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capture QEMU 10.0.2's filter-dump wrote on a virtio-net wire between two
    /// testbed VMs: an ARP request and reply, then six datagrams
    /// "hello-peerdma-wire-0".."-5" from 10.77.0.1 to 10.77.0.2:18521 sent with Python's
    /// unconnected `sendto` 0.5 s apart.
    const QEMU_CAPTURE: &[u8] = include_bytes!("../fixtures/qemu-filter-dump.pcap");

    #[test]
    fn reads_the_capture_qemu_wrote() {
        let c = parse(QEMU_CAPTURE).unwrap();
        assert_eq!((c.linktype, c.snaplen, c.nanos), (1, 65536, false));
        assert_eq!(c.frames.len(), 8);
        // The ARP request is broadcast, from VM 0's NIC.
        assert_eq!(
            &c.frames[0].data[0..12],
            b"\xff\xff\xff\xff\xff\xff\x52\x54\x00\x77\x00\x00"
        );
        assert_eq!(&c.frames[0].data[12..14], b"\x08\x06");
        assert_eq!(c.frames[0].orig_len, 42);
        let d = c.udp_datagrams();
        assert_eq!(d.len(), 6);
        for (k, g) in d.iter().enumerate() {
            assert_eq!(g.frame, k + 2);
            assert_eq!(g.payload, format!("hello-peerdma-wire-{k}").as_bytes());
            assert_eq!(g.dst, "10.77.0.2:18521".parse().unwrap());
            assert_eq!(*g.src.ip(), Ipv4Addr::new(10, 77, 0, 1));
            assert_eq!(g.src_mac, [0x52, 0x54, 0, 0x77, 0, 0]);
            assert_eq!(g.dst_mac, [0x52, 0x54, 0, 0x77, 1, 0]);
            assert!(g.dont_fragment && g.ttl == 64);
        }
        assert_eq!(d[0].ident, 0xb95e);
        // Unconnected sendto: Linux picks each ident from a per-destination generator
        // that jumps by a random amount with time passed, not by one.
        assert_eq!(d[1].ident, 0xb9fb);
    }

    fn record(big: bool, data: &[u8], orig: u32) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut r = Vec::new();
        for v in [7, 9, data.len() as u32, orig] {
            r.extend_from_slice(&w(v));
        }
        r.extend_from_slice(data);
        r
    }

    fn header(big: bool, magic: u32) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut h = w(magic).to_vec();
        h.extend_from_slice(&if big { [0, 2, 0, 4] } else { [2, 0, 4, 0] });
        for v in [0, 0, 1500, 1] {
            h.extend_from_slice(&w(v));
        }
        h
    }

    /// An Ethernet II / IPv4 (no options) / UDP frame, padded to `pad_to` bytes.
    fn udp_frame(ident: u16, frag: u16, payload: &[u8], pad_to: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&1000u16.to_be_bytes());
        f.extend_from_slice(&18521u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f.resize(f.len().max(pad_to), 0);
        f
    }

    #[test]
    fn both_byte_orders_and_nanoseconds_read_and_padding_is_not_payload() {
        for (big, magic, nanos) in [
            (false, 0xa1b2_c3d4, false),
            (true, 0xa1b2_c3d4, false),
            (false, 0xa1b2_3c4d, true),
        ] {
            let mut file = header(big, magic);
            file.extend(record(big, &udp_frame(5, 0x4000, b"abc", 60), 60));
            file.extend(record(big, &udp_frame(6, 0x2000, b"frag", 60), 60));
            file.extend(record(
                big,
                b"\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\x08\x06",
                60,
            ));
            let c = parse(&file).unwrap();
            assert_eq!((c.nanos, c.snaplen, c.frames.len()), (nanos, 1500, 3));
            assert_eq!((c.frames[0].ts_sec, c.frames[0].ts_frac), (7, 9));
            let d = c.udp_datagrams();
            // The fragment (MF set) and the ARP frame are not datagrams.
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].payload, b"abc");
            assert_eq!((d[0].ident, d[0].dont_fragment, d[0].frame), (5, true, 0));
            assert_eq!(d[0].src, "10.0.0.1:1000".parse().unwrap());
        }
    }

    #[test]
    fn a_capture_cut_short_or_not_classic_pcap_is_refused_by_name() {
        let mut file = header(false, 0xa1b2_c3d4);
        file.extend(record(false, &udp_frame(1, 0, b"xyz", 0), 45));
        let e = parse(&file[..file.len() - 1]).unwrap_err().to_string();
        assert!(
            e.contains("record at byte 24 claims 45 captured bytes"),
            "{e}"
        );
        let e = parse(&file[..30]).unwrap_err().to_string();
        assert!(e.contains("record header at byte 24 is cut short"), "{e}");
        let e = parse(&[0x0a, 0x0d, 0x0d, 0x0a].repeat(8))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pcapng"), "{e}");
        let e = parse(&[0u8; 24]).unwrap_err().to_string();
        assert!(e.contains("not a pcap file"), "{e}");
        assert!(parse(&file[..10]).is_err());
        // A frame cut inside its IPv4 header is no datagram, not a panic.
        let f = udp_frame(1, 0, b"xyz", 0);
        for n in 0..f.len() {
            let _ = udp_in_frame(0, &f[..n]);
        }
        assert!(udp_in_frame(0, &f[..40]).is_none());
    }
}
