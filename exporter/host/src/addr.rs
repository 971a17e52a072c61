//! The leaf vocabulary of the workspace, which depends on nothing else in it: PCI
//! function addresses ([`Bdf`], parsed once for the whole workspace, with
//! [`ParseBdfError`]) and VFIO region indexes ([`RegionIndex`], named "BAR2",
//! "config space (region 7)"... in messages).

use std::fmt;
use std::str::FromStr;

use peerdma_uapi::pci::PCI_STD_NUM_BARS;

// The region indexes of a vfio-pci device, the anonymous enum of `linux/vfio.h`
// (`VFIO_PCI_BAR0_REGION_INDEX` …). Written here so that this crate needs no VFIO
// bindings; the exporter's `region_indexes_are_the_abi` test checks them against
// `peerdma_uapi::vfio`, which the testbed's layout test checks against the headers.
const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
const VFIO_PCI_BAR5_REGION_INDEX: u32 = 5;
const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
const VFIO_PCI_VGA_REGION_INDEX: u32 = 8;

/// A PCI address that did not parse (like std's `ParseIntError`): the text and
/// what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a PCI address: {reason}; \
     fix: write it as DDDD:BB:DD.F (0000:01:00.0) or BB:DD.F (01:00.0)"
)]
pub struct ParseBdfError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A PCI function address as the kernel names it in sysfs (`DDDD:BB:DD.F`).
///
/// Parsed from the long form (`0000:01:00.0`), the short form without a
/// domain (`01:00.0`, domain 0) or the function's sysfs path
/// (`/sys/bus/pci/devices/0000:01:00.0`, a trailing `/` allowed); surrounding
/// whitespace (a pasted line's newline) is ignored. Displayed in the long form, which is the
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
    ///
    /// # Errors
    ///
    /// [`ParseBdfError`] when `device` or `function` is out of range.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self, ParseBdfError> {
        if device > 0x1f {
            return Err(ParseBdfError {
                input: format!("{domain:04x}:{bus:02x}:{device:02x}.{function}"),
                reason: "device number must be 00 to 1f",
            });
        }
        if function > 7 {
            return Err(ParseBdfError {
                input: format!("{domain:04x}:{bus:02x}:{device:02x}.{function}"),
                reason: "function number must be 0 to 7",
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

fn hex_field(
    input: &str,
    text: &str,
    max_digits: usize,
    what: &'static str,
) -> Result<u32, ParseBdfError> {
    if text.is_empty() || text.len() > max_digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseBdfError {
            input: input.to_owned(),
            reason: what,
        });
    }
    u32::from_str_radix(text, 16).map_err(|_| ParseBdfError {
        input: input.to_owned(),
        reason: what,
    })
}

/// Where sysfs lists PCI functions by address; a path under it names the
/// function (`Bdf::from_str`).
const SYSFS_DEVICES: &str = "/sys/bus/pci/devices/";

impl FromStr for Bdf {
    type Err = ParseBdfError;

    fn from_str(given: &str) -> Result<Self, ParseBdfError> {
        let input = given.trim();
        let input = match input.strip_prefix(SYSFS_DEVICES) {
            Some(name) => name.strip_suffix('/').unwrap_or(name),
            None => input,
        };
        let bad = |reason| ParseBdfError {
            input: given.to_owned(),
            reason,
        };
        if input.contains('/') {
            return Err(bad(
                "a path is accepted only as /sys/bus/pci/devices/DDDD:BB:DD.F",
            ));
        }
        let (head, function) = input
            .rsplit_once('.')
            .ok_or_else(|| bad("expected DDDD:BB:DD.F or BB:DD.F (no '.' before the function)"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => (0, *bus, *device),
            [domain, bus, device] => (
                hex_field(given, domain, 8, "domain must be 1 to 8 hex digits")?,
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
            return Err(bad("function must be exactly 1 digit 0 to 7"));
        }
        let bus = hex_field(given, bus, 2, "bus must be exactly 2 hex digits")?;
        let device = hex_field(given, device, 2, "device must be exactly 2 hex digits")?;
        let function = hex_field(
            given,
            function,
            1,
            "function must be exactly 1 digit 0 to 7",
        )?;
        if device > 0x1f {
            return Err(bad("device number must be 00 to 1f"));
        }
        if function > 7 {
            return Err(bad("function number must be 0 to 7"));
        }
        Ok(Self {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

/// A VFIO region index. vfio-pci uses fixed indexes: BAR0..BAR5 are regions
/// 0..5, then the ROM (6), config space (7) and VGA (8); device-specific
/// regions follow from 9.
///
/// Displayed by name for messages: "BAR2", "ROM (region 6)", "config space
/// (region 7)", "VGA (region 8)", "device-specific region 9".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionIndex(pub u32);

impl RegionIndex {
    /// Config space (`VFIO_PCI_CONFIG_REGION_INDEX`).
    pub const CONFIG: RegionIndex = RegionIndex(VFIO_PCI_CONFIG_REGION_INDEX);
    /// The expansion ROM (`VFIO_PCI_ROM_REGION_INDEX`).
    pub const ROM: RegionIndex = RegionIndex(VFIO_PCI_ROM_REGION_INDEX);
    /// Legacy VGA ranges (`VFIO_PCI_VGA_REGION_INDEX`).
    pub const VGA: RegionIndex = RegionIndex(VFIO_PCI_VGA_REGION_INDEX);
    /// The number of standard BARs, BAR0..BAR5 (`PCI_STD_NUM_BARS`).
    pub const NUM_BARS: usize = PCI_STD_NUM_BARS as usize;

    /// BAR `n` (region `n`); `None` unless `n` is 0..=5.
    pub const fn bar(n: u32) -> Option<RegionIndex> {
        if n < PCI_STD_NUM_BARS {
            Some(RegionIndex(VFIO_PCI_BAR0_REGION_INDEX + n))
        } else {
            None
        }
    }

    /// BAR0..BAR5, in order.
    pub fn bars() -> impl Iterator<Item = RegionIndex> {
        (0..PCI_STD_NUM_BARS).map(|n| RegionIndex(VFIO_PCI_BAR0_REGION_INDEX + n))
    }

    /// Whether this is one of BAR0..BAR5.
    pub const fn is_bar(self) -> bool {
        self.0 <= VFIO_PCI_BAR5_REGION_INDEX
    }

    /// The index as the kernel's `u32`.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for RegionIndex {
    fn from(index: u32) -> Self {
        RegionIndex(index)
    }
}

impl From<RegionIndex> for u32 {
    fn from(index: RegionIndex) -> u32 {
        index.0
    }
}

impl fmt::Display for RegionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            i @ VFIO_PCI_BAR0_REGION_INDEX..=VFIO_PCI_BAR5_REGION_INDEX => write!(f, "BAR{i}"),
            VFIO_PCI_ROM_REGION_INDEX => f.write_str("ROM (region 6)"),
            VFIO_PCI_CONFIG_REGION_INDEX => f.write_str("config space (region 7)"),
            VFIO_PCI_VGA_REGION_INDEX => f.write_str("VGA (region 8)"),
            i => write!(f, "device-specific region {i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        let name = |i: u32| RegionIndex(i).to_string();
        assert_eq!(name(2), "BAR2");
        assert_eq!(name(6), "ROM (region 6)");
        assert_eq!(name(7), "config space (region 7)");
        assert_eq!(name(8), "VGA (region 8)");
        assert_eq!(name(9), "device-specific region 9");
        assert!(RegionIndex(5).is_bar() && !RegionIndex(6).is_bar());
        assert_eq!(RegionIndex::bars().count(), RegionIndex::NUM_BARS);
        assert_eq!(RegionIndex::bar(5), Some(RegionIndex(5)));
        assert_eq!(RegionIndex::bar(6), None);
        assert_eq!(RegionIndex::CONFIG, RegionIndex::from(7));
    }

    fn parse(s: &str) -> Result<Bdf, ParseBdfError> {
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
            "0000:01:00.0 x",
            "/sys/bus/pci/devices/",
            "/sys/devices/pci0000:00/0000:00:10.0",
            "/sys/bus/pci/devices/0000:00:10.0/driver",
            "0000:01:00.+1",
            "0000:+1:00.0",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.input, bad, "{bad:?} gave {err:?}");
            assert!(err.to_string().contains("fix:"), "{err}");
            // Ranges in words, not Rust's `a..b` (which would read as "up to b - 1").
            assert!(!err.to_string().contains(".."), "{err}");
        }
        assert!(parse("0000:01:20.0")
            .unwrap_err()
            .to_string()
            .contains("device number must be 00 to 1f"));
        assert!(Bdf::new(0, 1, 0, 8)
            .unwrap_err()
            .to_string()
            .contains("function number must be 0 to 7"));
    }

    #[test]
    fn whitespace_and_sysfs_paths() {
        let want = parse("0000:00:10.1").unwrap();
        for ok in [
            " 0000:00:10.1",
            "0000:00:10.1 ",
            "0000:00:10.1\n",
            "\t00:10.1\r\n",
            "/sys/bus/pci/devices/0000:00:10.1",
            "/sys/bus/pci/devices/0000:00:10.1/",
            "/sys/bus/pci/devices/0000:00:10.1\n",
        ] {
            assert_eq!(parse(ok), Ok(want), "{ok:?}");
        }
        // A path elsewhere is named as the problem, not one of its fields.
        let err = parse("/sys/devices/pci0000:00/0000:00:10.1").unwrap_err();
        assert!(err.to_string().contains("/sys/bus/pci/devices/"), "{err}");
        assert!(!err.to_string().contains("bus must"), "{err}");
    }

    #[test]
    fn new_checks_ranges() {
        assert!(Bdf::new(0, 0, 31, 7).is_ok());
        assert!(Bdf::new(0, 0, 32, 0).is_err());
        assert!(Bdf::new(0, 0, 0, 8).is_err());
    }
}
