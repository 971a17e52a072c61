//! VFIO regions: what `VFIO_DEVICE_GET_REGION_INFO` reports about each one.
//!
//! vfio-pci uses fixed indexes ([`RegionIndex`](peerdma_host::RegionIndex)): BAR0..BAR5
//! are regions 0..5, then the ROM (6), config space (7) and VGA (8);
//! device-specific regions follow from 9 and are identified by a type capability. The offset of each region inside the device
//! fd comes from region info (vfio-pci uses `index << 40`, but nothing here
//! assumes it).

use crate::info_caps::{RegionCap, SparseMmapArea};

use peerdma_uapi::vfio::{
    VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};

/// The flags of a region (`VFIO_REGION_INFO_FLAG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RegionFlags(pub u32);

impl RegionFlags {
    /// The region can be read with pread.
    pub fn read(self) -> bool {
        self.0 & VFIO_REGION_INFO_FLAG_READ != 0
    }
    /// The region can be written with pwrite.
    pub fn write(self) -> bool {
        self.0 & VFIO_REGION_INFO_FLAG_WRITE != 0
    }
    /// The region (or its sparse areas) can be mmapped.
    pub fn mmap(self) -> bool {
        self.0 & VFIO_REGION_INFO_FLAG_MMAP != 0
    }
    /// The info carried a capability chain.
    pub fn caps(self) -> bool {
        self.0 & VFIO_REGION_INFO_FLAG_CAPS != 0
    }
}

/// What `VFIO_DEVICE_GET_REGION_INFO` says about one region, capability
/// chain parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// Region flags.
    pub flags: RegionFlags,
    /// Size in bytes (0: not implemented).
    pub size: u64,
    /// Offset of the region inside the device fd.
    pub offset: u64,
    /// Parsed capabilities.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Sparse mmap areas, if the region restricts mmap to them.
    pub fn sparse_areas(&self) -> Option<&[SparseMmapArea]> {
        self.caps.iter().find_map(|c| match c {
            RegionCap::SparseMmap(areas) => Some(areas.as_slice()),
            _ => None,
        })
    }

    /// Whether the region advertises `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`.
    pub fn msix_mappable(&self) -> bool {
        self.caps
            .iter()
            .any(|c| matches!(c, RegionCap::MsixMappable))
    }

    /// Device-specific `(type, subtype)`, if the region has a type capability.
    pub fn region_type(&self) -> Option<(u32, u32)> {
        self.caps.iter().find_map(|c| match c {
            RegionCap::Type {
                region_type,
                subtype,
            } => Some((*region_type, *subtype)),
            _ => None,
        })
    }

    /// Whether `[offset, offset + len)` of the region may be mmapped: the
    /// region has the mmap flag and, when it lists sparse areas, the span lies
    /// inside one of them.
    pub fn mappable(&self, offset: u64, len: u64) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if !self.flags.mmap() || end > self.size {
            return false;
        }
        match self.sparse_areas() {
            None => true,
            Some(areas) => areas.iter().any(|a| {
                a.offset <= offset && a.offset.checked_add(a.size).is_some_and(|e| end <= e)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `peerdma-host` writes the region indexes out (it has no VFIO bindings); they
    /// are the ABI's, which the testbed's layout test checks against the headers.
    #[test]
    fn region_indexes_are_the_abi() {
        use peerdma_host::RegionIndex;
        use peerdma_uapi::vfio::{
            VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR5_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
            VFIO_PCI_ROM_REGION_INDEX, VFIO_PCI_VGA_REGION_INDEX,
        };
        assert_eq!(
            RegionIndex::bar(0).map(RegionIndex::get),
            Some(VFIO_PCI_BAR0_REGION_INDEX)
        );
        assert_eq!(
            RegionIndex::bar(5).map(RegionIndex::get),
            Some(VFIO_PCI_BAR5_REGION_INDEX)
        );
        assert_eq!(RegionIndex::ROM.get(), VFIO_PCI_ROM_REGION_INDEX);
        assert_eq!(RegionIndex::CONFIG.get(), VFIO_PCI_CONFIG_REGION_INDEX);
        assert_eq!(RegionIndex::VGA.get(), VFIO_PCI_VGA_REGION_INDEX);
    }

    fn info(flags: u32, caps: Vec<RegionCap>) -> RegionInfo {
        RegionInfo {
            index: 2,
            flags: RegionFlags(flags),
            size: 0x10000,
            offset: 2 << 40,
            caps,
        }
    }

    #[test]
    fn mappable_whole_region() {
        let r = info(7, vec![]);
        assert!(r.mappable(0, 0x10000));
        assert!(!r.mappable(0, 0x10001));
        assert!(!r.mappable(u64::MAX, 2));
        assert!(!info(3, vec![]).mappable(0, 0x1000));
    }

    #[test]
    fn mappable_sparse() {
        let r = info(
            0xf,
            vec![
                RegionCap::MsixMappable,
                RegionCap::SparseMmap(vec![
                    SparseMmapArea {
                        offset: 0,
                        size: 0x2000,
                    },
                    SparseMmapArea {
                        offset: 0x4000,
                        size: 0xc000,
                    },
                ]),
            ],
        );
        assert!(r.msix_mappable());
        assert!(r.mappable(0, 0x2000));
        assert!(r.mappable(0x4000, 0xc000));
        assert!(!r.mappable(0x1000, 0x2000));
        assert!(!r.mappable(0x2000, 0x1000));
        assert_eq!(r.sparse_areas().unwrap().len(), 2);
        assert_eq!(r.region_type(), None);
    }
}
