//! [`MacAddr`]: a 48-bit IEEE 802 MAC address.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet (IEEE 802) address, in transmission byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00` (an ARP request's unknown target).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Whether the group bit (bit 0 of the first byte) is set: broadcast or multicast.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// The bytes.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

/// `52:54:00:12:34:56`: lower-case hex, colons.
impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A string that is not six hex bytes separated by `:` or `-`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a MAC address; write six hex bytes separated by colons, e.g. 52:54:00:12:34:56"
)]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Six hex bytes separated by `:` (or `-`), either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_prints_and_parses_back() {
        let m = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        assert_eq!("52:54:00:12:34:56".parse::<MacAddr>(), Ok(m));
        assert_eq!("52-54-00-12-34-56".parse::<MacAddr>(), Ok(m));
        assert_eq!(
            "FF:ff:ff:ff:ff:ff".parse::<MacAddr>(),
            Ok(MacAddr::BROADCAST)
        );
        assert!(MacAddr::BROADCAST.is_multicast() && !m.is_multicast());
    }

    #[test]
    fn malformed_macs_are_refused_with_an_example() {
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "525:4:00:12:34:56",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains("52:54:00:12:34:56"), "{e}");
        }
    }
}
