//! The 42 bytes in front of a UDP payload: Ethernet II header, IPv4 header without
//! options (RFC 791 section 3.1), UDP header (RFC 768); built by [`udp_headers`],
//! parsed by [`parse_udp_headers`].

use std::fmt;
use std::net::Ipv4Addr;

use super::{
    MacAddr, ETHERTYPE_IPV4, ETH_HEADER, IPPROTO_UDP, IPV4_HEADER, IP_UDP_OVERHEAD, UDP_HEADER,
    UDP_HEADERS,
};

/// One end of a UDP flow on an Ethernet link: MAC, IPv4 address, UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpEndpoint {
    /// Ethernet address.
    pub mac: MacAddr,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// UDP port.
    pub port: u16,
}

/// `10.77.0.1:18521 (52:54:00:12:34:56)`.
impl fmt::Display for UdpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.ip, self.port, self.mac)
    }
}

/// What [`parse_udp_headers`] read from a frame's first 42 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeaders {
    /// Sender (Ethernet source, IPv4 source, UDP source port).
    pub src: UdpEndpoint,
    /// Receiver.
    pub dst: UdpEndpoint,
    /// The IPv4 Identification field (RFC 791): the peerdma stream's sequence number.
    pub ident: u16,
    /// UDP payload bytes (the UDP length field − 8); a frame padded to 60 bytes carries
    /// padding after it.
    pub payload_len: usize,
}

/// Why a frame is not a plain (no options, unfragmented) IPv4/UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotUdp {
    /// Fewer bytes than the 42 of the headers.
    #[error("the frame has {len} bytes, fewer than the 42 of Ethernet + IPv4 + UDP headers")]
    Short {
        /// Bytes given.
        len: usize,
    },
    /// Not IPv4 (an ARP frame is 0x0806, IPv6 0x86dd, a VLAN tag 0x8100).
    #[error("EtherType {ethertype:#06x} is not IPv4 (0x0800)")]
    EtherType {
        /// The EtherType.
        ethertype: u16,
    },
    /// IP version other than 4.
    #[error("IP version {version} is not 4")]
    Version {
        /// The version field.
        version: u8,
    },
    /// The IPv4 header carries options (IHL > 5): the payload does not start at byte 42.
    #[error("the IPv4 header has options (IHL {ihl}, {} bytes instead of 20)", usize::from(*ihl) * 4)]
    Options {
        /// Internet Header Length in 32-bit words.
        ihl: u8,
    },
    /// A fragment (MF set or a non-zero fragment offset): only part of a datagram.
    #[error("the datagram is fragmented (flags/fragment offset {flags_fragment:#06x})")]
    Fragment {
        /// The flags and fragment offset field.
        flags_fragment: u16,
    },
    /// Another protocol than UDP (6 is TCP, 1 ICMP).
    #[error("IPv4 protocol {protocol} is not UDP (17)")]
    Protocol {
        /// The protocol field.
        protocol: u8,
    },
    /// The IPv4 total length and the UDP length disagree, or the UDP length is under 8.
    #[error("IPv4 total length {total_length} and UDP length {udp_length} disagree (expected total = UDP + 20)")]
    Length {
        /// IPv4 total length.
        total_length: u16,
        /// UDP length.
        udp_length: u16,
    },
    /// The IPv4 header checksum does not verify (RFC 791 section 3.1, RFC 1071).
    #[error("the IPv4 header checksum {checksum:#06x} does not verify")]
    Checksum {
        /// The checksum field.
        checksum: u16,
    },
}

/// The IPv4 header checksum (RFC 791 section 3.1; RFC 1071): the one's complement of the
/// one's complement sum of the header's 16-bit words. Computed over a header whose
/// checksum field is zero it is the value to store; over a header as received it is 0
/// when the header verifies.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Ethernet II + IPv4 + UDP headers of a datagram of `payload_len` bytes from `src`
/// to `dst`: EtherType 0x0800; IPv4 version 4, IHL 5, TOS 0, total length
/// `payload_len + 28`, Identification `ident`, DF set (no fragmentation), TTL 64,
/// protocol 17, header checksum computed; UDP length `payload_len + 8`, checksum 0
/// ("no checksum", RFC 768).
///
/// `payload_len` must be at most 65507 (the UDP length field); larger values are
/// truncated to 16 bits, so callers keep it under their MTU − 28.
pub fn udp_headers(
    src: &UdpEndpoint,
    dst: &UdpEndpoint,
    ident: u16,
    payload_len: usize,
) -> [u8; UDP_HEADERS] {
    let mut h = [0u8; UDP_HEADERS];
    h[0..6].copy_from_slice(&dst.mac.0);
    h[6..12].copy_from_slice(&src.mac.0);
    h[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut h[ETH_HEADER..ETH_HEADER + IPV4_HEADER];
    ip[0] = 0x45; // version 4, IHL 5
    ip[2..4].copy_from_slice(&((payload_len + IP_UDP_OVERHEAD) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&src.ip.octets());
    ip[16..20].copy_from_slice(&dst.ip.octets());
    let sum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut h[ETH_HEADER + IPV4_HEADER..];
    udp[0..2].copy_from_slice(&src.port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port.to_be_bytes());
    udp[4..6].copy_from_slice(&((payload_len + UDP_HEADER) as u16).to_be_bytes());
    h
}

/// Reads the headers of a plain IPv4/UDP frame (Ethernet II, IPv4 without options, not
/// fragmented, header checksum verified; the UDP checksum is not checked: the payload
/// is elsewhere, e.g. in a BAR).
///
/// # Errors
///
/// [`NotUdp`] naming what the frame is instead.
pub fn parse_udp_headers(frame: &[u8]) -> Result<UdpHeaders, NotUdp> {
    if frame.len() < UDP_HEADERS {
        return Err(NotUdp::Short { len: frame.len() });
    }
    let be16 = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    let ethertype = be16(12);
    if ethertype != ETHERTYPE_IPV4 {
        return Err(NotUdp::EtherType { ethertype });
    }
    let ip = &frame[ETH_HEADER..ETH_HEADER + IPV4_HEADER];
    let version = ip[0] >> 4;
    if version != 4 {
        return Err(NotUdp::Version { version });
    }
    let ihl = ip[0] & 0xf;
    if ihl != 5 {
        return Err(NotUdp::Options { ihl });
    }
    let flags_fragment = be16(ETH_HEADER + 6);
    // MF (0x2000) or a fragment offset (low 13 bits); DF (0x4000) is fine.
    if flags_fragment & 0x3fff != 0 {
        return Err(NotUdp::Fragment { flags_fragment });
    }
    if ip[9] != IPPROTO_UDP {
        return Err(NotUdp::Protocol { protocol: ip[9] });
    }
    if ipv4_checksum(ip) != 0 {
        return Err(NotUdp::Checksum {
            checksum: be16(ETH_HEADER + 10),
        });
    }
    let total_length = be16(ETH_HEADER + 2);
    let u = ETH_HEADER + IPV4_HEADER;
    let udp_length = be16(u + 4);
    if usize::from(udp_length) < UDP_HEADER
        || usize::from(total_length) != usize::from(udp_length) + IPV4_HEADER
    {
        return Err(NotUdp::Length {
            total_length,
            udp_length,
        });
    }
    let mac = |at: usize| MacAddr(frame[at..at + 6].try_into().expect("6 bytes"));
    let ipv4 = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    Ok(UdpHeaders {
        src: UdpEndpoint {
            mac: mac(6),
            ip: ipv4(12),
            port: be16(u),
        },
        dst: UdpEndpoint {
            mac: mac(0),
            ip: ipv4(16),
            port: be16(u + 2),
        },
        ident: be16(ETH_HEADER + 4),
        payload_len: usize::from(udp_length) - UDP_HEADER,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> (UdpEndpoint, UdpEndpoint) {
        (
            UdpEndpoint {
                mac: "52:54:00:12:34:56".parse().unwrap(),
                ip: Ipv4Addr::new(10, 77, 0, 2),
                port: 40000,
            },
            UdpEndpoint {
                mac: "52:54:00:ab:cd:ef".parse().unwrap(),
                ip: Ipv4Addr::new(10, 77, 0, 1),
                port: 18521,
            },
        )
    }

    #[test]
    fn the_rfc_1071_example_sums_as_published() {
        // RFC 1071 section 3's example words 0001 f203 f4f5 f6f7 sum to ddf2 (before
        // the complement).
        assert_eq!(
            ipv4_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn a_known_ipv4_header_gets_its_published_checksum() {
        // The widely quoted example header 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(ipv4_checksum(&h), 0);
    }

    #[test]
    fn built_headers_have_the_agreed_fields_and_parse_back() {
        let (src, dst) = ends();
        let h = udp_headers(&src, &dst, 0xbeef, 1472);
        assert_eq!(&h[0..6], &dst.mac.0);
        assert_eq!(&h[6..12], &src.mac.0);
        assert_eq!(&h[12..14], &[0x08, 0x00]);
        assert_eq!(h[14], 0x45);
        assert_eq!(u16::from_be_bytes([h[16], h[17]]), 1500); // total length
        assert_eq!(u16::from_be_bytes([h[18], h[19]]), 0xbeef); // ident
        assert_eq!(u16::from_be_bytes([h[20], h[21]]), 0x4000); // DF
        assert_eq!((h[22], h[23]), (64, 17)); // TTL, UDP
        assert_eq!(u16::from_be_bytes([h[36], h[37]]), 18521);
        assert_eq!(u16::from_be_bytes([h[38], h[39]]), 1480); // UDP length
        assert_eq!(&h[40..42], &[0, 0]); // no UDP checksum
        let p = parse_udp_headers(&h).unwrap();
        assert_eq!(
            p,
            UdpHeaders {
                src,
                dst,
                ident: 0xbeef,
                payload_len: 1472
            }
        );
    }

    #[test]
    fn each_kind_of_other_frame_is_named() {
        let (src, dst) = ends();
        let good = udp_headers(&src, &dst, 1, 18);
        assert_eq!(
            parse_udp_headers(&good[..41]),
            Err(NotUdp::Short { len: 41 })
        );
        let mut f = good;
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            parse_udp_headers(&f),
            Err(NotUdp::EtherType { ethertype: 0x0806 })
        );
        let mut f = good;
        f[14] = 0x46;
        assert_eq!(parse_udp_headers(&f), Err(NotUdp::Options { ihl: 6 }));
        let mut f = good;
        f[14] = 0x65;
        assert_eq!(parse_udp_headers(&f), Err(NotUdp::Version { version: 6 }));
        // A fragment: MF set (checksum no longer matters, fragments are refused first).
        let mut f = good;
        f[20] = 0x20;
        assert!(matches!(
            parse_udp_headers(&f),
            Err(NotUdp::Fragment { .. })
        ));
        let mut f = good;
        f[23] = 6;
        assert_eq!(parse_udp_headers(&f), Err(NotUdp::Protocol { protocol: 6 }));
        // A changed TTL without a new checksum.
        let mut f = good;
        f[22] = 63;
        assert!(matches!(
            parse_udp_headers(&f),
            Err(NotUdp::Checksum { .. })
        ));
        // UDP length disagreeing with the IPv4 total length.
        let mut f = good;
        f[39] += 1;
        let e = parse_udp_headers(&f).unwrap_err();
        assert!(matches!(e, NotUdp::Length { .. }), "{e}");
        assert!(e.to_string().contains("disagree"), "{e}");
    }

    #[test]
    fn an_endpoint_prints_ip_port_and_mac() {
        assert_eq!(ends().1.to_string(), "10.77.0.1:18521 (52:54:00:ab:cd:ef)");
    }
}
