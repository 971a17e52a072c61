//! PCI addresses: domain, bus, device, function (`0000:01:00.0`).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A PCI function address as the kernel names it in sysfs (`DDDD:BB:DD.F`).
///
/// Parsed from the long form (`0000:01:00.0`) or the short form without a
/// domain (`01:00.0`, domain 0). Displayed in the long form, which is the
/// name `VFIO_GROUP_GET_DEVICE_FD` and `/sys/bus/pci/devices/` expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdf {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

impl Bdf {
    /// Builds an address; `device` must be below 32 and `function` below 8.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self, Error> {
        if device > 0x1f {
            return Err(Error::BdfParse {
                input: format!("{domain:04x}:{bus:02x}:{device:02x}.{function}"),
                reason: "device number must be 00..1f",
            });
        }
        if function > 7 {
            return Err(Error::BdfParse {
                input: format!("{domain:04x}:{bus:02x}:{device:02x}.{function}"),
                reason: "function number must be 0..7",
            });
        }
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// PCI segment (domain).
    pub fn domain(&self) -> u32 {
        self.domain
    }

    /// Bus number.
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// Device (slot) number, 0..=31.
    pub fn device(&self) -> u8 {
        self.device
    }

    /// Function number, 0..=7.
    pub fn function(&self) -> u8 {
        self.function
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

fn hex_field(input: &str, text: &str, max_digits: usize, what: &'static str) -> Result<u32, Error> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BdfParse {
            input: input.to_owned(),
            reason: what,
        });
    }
    u32::from_str_radix(text, 16).map_err(|_| Error::BdfParse {
        input: input.to_owned(),
        reason: what,
    })
}

impl FromStr for Bdf {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BdfParse {
            input: input.to_owned(),
            reason,
        };
        let (head, function) = input
            .rsplit_once('.')
            .ok_or_else(|| bad("expected DDDD:BB:DD.F or BB:DD.F (no '.' before the function)"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => (0, *bus, *device),
            [domain, bus, device] => (
                hex_field(input, domain, 8, "domain must be 1 to 8 hex digits")?,
                *bus,
                *device,
            ),
            _ => return Err(bad("expected DDDD:BB:DD.F or BB:DD.F")),
        };
        if bus.len() != 2 {
            return Err(bad("bus must be exactly 2 hex digits"));
        }
        if device.len() != 2 {
            return Err(bad("device must be exactly 2 hex digits"));
        }
        if function.len() != 1 {
            return Err(bad("function must be exactly 1 digit 0..7"));
        }
        let bus = hex_field(input, bus, 2, "bus must be exactly 2 hex digits")?;
        let device = hex_field(input, device, 2, "device must be exactly 2 hex digits")?;
        let function = hex_field(input, function, 1, "function must be exactly 1 digit 0..7")?;
        if device > 0x1f {
            return Err(bad("device number must be 00..1f"));
        }
        if function > 7 {
            return Err(bad("function number must be 0..7"));
        }
        Ok(Self {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Bdf, Error> {
        s.parse()
    }

    #[test]
    fn long_form() {
        let bdf = parse("0000:01:00.0").unwrap();
        assert_eq!(
            (bdf.domain(), bdf.bus(), bdf.device(), bdf.function()),
            (0, 1, 0, 0)
        );
        assert_eq!(bdf.to_string(), "0000:01:00.0");
    }

    #[test]
    fn short_form_means_domain_zero() {
        assert_eq!(parse("01:00.0").unwrap(), parse("0000:01:00.0").unwrap());
        assert_eq!(parse("01:00.0").unwrap().to_string(), "0000:01:00.0");
    }

    #[test]
    fn hex_digits_any_case() {
        let bdf = parse("abcd:Ef:1F.7").unwrap();
        assert_eq!(
            (bdf.domain(), bdf.bus(), bdf.device(), bdf.function()),
            (0xabcd, 0xef, 0x1f, 7)
        );
        assert_eq!(bdf.to_string(), "abcd:ef:1f.7");
    }

    #[test]
    fn wide_domain_round_trips() {
        // VMD and some hypervisors use domains above 0xffff.
        let bdf = parse("10000:e1:00.0").unwrap();
        assert_eq!(bdf.domain(), 0x10000);
        assert_eq!(bdf.to_string(), "10000:e1:00.0");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "0000:01:00",
            "0000:01:00.",
            "0000:01:00.8",
            "0000:01:20.0",
            "0000:1:00.0",
            "0000:001:00.0",
            "0000:01:0.0",
            "0000:01:00.00",
            "x000:01:00.0",
            ":01:00.0",
            "0:0000:01:00.0",
            "000000000:01:00.0",
            " 0000:01:00.0",
            "0000:01:00.0 ",
            "0000:01:00.+1",
            "0000:+1:00.0",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::BdfParse { .. }),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn new_checks_ranges() {
        assert!(Bdf::new(0, 0, 31, 7).is_ok());
        assert!(Bdf::new(0, 0, 32, 0).is_err());
        assert!(Bdf::new(0, 0, 0, 8).is_err());
    }
}
