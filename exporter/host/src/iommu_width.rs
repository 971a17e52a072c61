//! How many physical address bits the IOMMU in front of a device can put in its page
//! tables. A BAR beyond them can still be mapped into an IOAS (the kernel checks the
//! IOVA against the aperture, not the physical address it points at), but every DMA to
//! it faults: the IOMMU treats the high address bits as reserved. Intel VT-d only (the
//! one IOMMU the testbed emulates): the ACPI DMAR table's host address width (HAW, one
//! for the platform), else the unit's MGAW from its capability register.

use std::fs;
use std::path::Path;

use crate::addr::Bdf;
use crate::sysfs::Sysfs;

/// An IOMMU's physical address width and where it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuWidth {
    /// The IOMMU unit (`dmar0`).
    pub iommu: String,
    /// Address bits: physical addresses up to `2^bits - 1` are reachable.
    pub bits: u32,
    /// Where the figure comes from, in words.
    pub source: &'static str,
}

impl IommuWidth {
    /// Whether `[start, end]` (inclusive) lies within the width.
    pub fn reaches(&self, end: u64) -> bool {
        self.bits >= 64 || end >> self.bits == 0
    }
}

/// MGAW of a VT-d capability register as `intel-iommu/cap` prints it (hex).
pub fn mgaw_from_cap(text: &str) -> Option<u32> {
    let t = text.trim();
    let cap = u64::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()?;
    Some(((cap >> 16) & 0x3f) as u32 + 1)
}

/// HAW of an ACPI DMAR table (the byte after the 36-byte header holds HAW - 1).
pub fn haw_from_dmar(table: &[u8]) -> Option<u32> {
    if table.get(..4)? != b"DMAR" {
        return None;
    }
    Some(u32::from(*table.get(36)?) + 1)
}

impl Sysfs {
    /// The physical address width of the IOMMU translating `bdf`'s DMA, where it can be
    /// read (Intel VT-d; the DMAR table needs root); `None` for other IOMMUs, without an
    /// IOMMU, or when nothing is readable.
    pub fn iommu_address_width(&self, bdf: Bdf) -> Option<IommuWidth> {
        let link = fs::read_link(self.device_path(bdf).join("iommu")).ok()?;
        let iommu = link.file_name()?.to_string_lossy().into_owned();
        let unit = self.root().join("class/iommu").join(&iommu);
        let dmar = fs::read(self.root().join("firmware/acpi/tables/DMAR")).ok();
        if let Some(bits) = dmar.as_deref().and_then(haw_from_dmar) {
            return Some(IommuWidth {
                iommu,
                bits,
                source: "the ACPI DMAR table's host address width",
            });
        }
        let cap = fs::read_to_string(Path::new(&unit).join("intel-iommu/cap")).ok()?;
        Some(IommuWidth {
            iommu,
            bits: mgaw_from_cap(&cap)?,
            source: "the VT-d unit's MGAW (capability register)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vtd_widths() {
        // QEMU's intel-iommu with aw-bits=48: MGAW field 47.
        assert_eq!(mgaw_from_cap("d2008c2fe8ef0462\n"), Some(48));
        assert_eq!(mgaw_from_cap("12008c22260206"), Some(39));
        assert_eq!(mgaw_from_cap("zz"), None);
        let mut dmar = b"DMAR".to_vec();
        dmar.resize(48, 0);
        dmar[36] = 38;
        assert_eq!(haw_from_dmar(&dmar), Some(39));
        assert_eq!(haw_from_dmar(b"DMAR"), None);
        assert_eq!(haw_from_dmar(&[0u8; 48]), None);
        let w = IommuWidth {
            iommu: "dmar0".into(),
            bits: 39,
            source: "",
        };
        assert!(w.reaches((1 << 39) - 1));
        assert!(!w.reaches(1 << 39));
    }
}
