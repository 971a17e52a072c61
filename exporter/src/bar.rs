//! A BAR as the exporter sees it: VFIO region info (size, flags, mmap areas,
//! MSI-X mappable) joined with sysfs (physical base, memory/I/O, prefetchable,
//! 64-bit).

use peerdma_uapi::pci::{
    PCI_BASE_ADDRESS_MEM_PREFETCH, PCI_BASE_ADDRESS_MEM_TYPE_64, PCI_BASE_ADDRESS_MEM_TYPE_MASK,
    PCI_BASE_ADDRESS_SPACE, PCI_BASE_ADDRESS_SPACE_IO,
};

use crate::info_caps::SparseMmapArea;
use crate::region::RegionInfo;
use peerdma_host::sysfs::Resource;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Memory space.
    Memory {
        /// Prefetchable memory.
        prefetchable: bool,
        /// A 64-bit BAR (the next BAR index holds its upper half).
        is_64bit: bool,
    },
    /// I/O port space (cannot back a dma-buf).
    Io,
    /// Not implemented (size 0, or the upper half of a 64-bit BAR).
    Absent,
}

/// One of BAR0..BAR5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index, equal to its VFIO region index.
    pub index: u32,
    /// What it decodes.
    pub kind: BarKind,
    /// Physical base address, when sysfs told it.
    pub base: Option<u64>,
    /// The VFIO region info.
    pub region: RegionInfo,
}

impl Bar {
    /// Joins region info with the sysfs resource line, or, without sysfs, the
    /// type bits of the (vfio-virtualized) BAR register from config space.
    pub fn new(region: RegionInfo, resource: Option<&Resource>, config_bar: Option<u32>) -> Self {
        let kind = if region.size == 0 {
            BarKind::Absent
        } else if let Some(res) = resource.filter(|r| r.flags != 0) {
            if res.is_io() {
                BarKind::Io
            } else {
                BarKind::Memory {
                    prefetchable: res.is_prefetchable(),
                    is_64bit: res.is_mem64(),
                }
            }
        } else {
            match config_bar {
                Some(reg) if reg & PCI_BASE_ADDRESS_SPACE == PCI_BASE_ADDRESS_SPACE_IO => {
                    BarKind::Io
                }
                Some(reg) => BarKind::Memory {
                    prefetchable: reg & PCI_BASE_ADDRESS_MEM_PREFETCH != 0,
                    is_64bit: reg & PCI_BASE_ADDRESS_MEM_TYPE_MASK == PCI_BASE_ADDRESS_MEM_TYPE_64,
                },
                None => BarKind::Memory {
                    prefetchable: false,
                    is_64bit: false,
                },
            }
        };
        Self {
            index: region.index,
            kind,
            base: resource.map(|r| r.start).filter(|&s| s != 0),
            region,
        }
    }

    /// Size in bytes (0 when absent).
    pub fn size(&self) -> u64 {
        self.region.size
    }

    /// Whether the BAR decodes memory.
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, BarKind::Memory { .. })
    }

    /// Whether the whole BAR can be mmapped (mmap flag and no sparse areas).
    pub fn is_mappable(&self) -> bool {
        self.region.flags.mmap() && self.region.sparse_areas().is_none()
    }

    /// The mmap-able areas, when the region restricts mmap to them.
    pub fn sparse_areas(&self) -> Option<&[SparseMmapArea]> {
        self.region.sparse_areas()
    }

    /// Whether region info advertises MSI-X mappable for this BAR.
    pub fn msix_mappable(&self) -> bool {
        self.region.msix_mappable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info_caps::RegionCap;
    use crate::region::RegionFlags;
    use peerdma_uapi::pci::{
        IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH,
    };

    fn region(index: u32, size: u64, flags: u32) -> RegionInfo {
        RegionInfo {
            index,
            flags: RegionFlags(flags),
            size,
            offset: u64::from(index) << 40,
            caps: vec![],
        }
    }

    #[test]
    fn kinds_from_sysfs() {
        let res = Resource {
            start: 0xfc00_0000,
            end: 0xfcff_ffff,
            flags: IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64,
        };
        let bar = Bar::new(region(2, 0x100_0000, 7), Some(&res), None);
        assert_eq!(
            bar.kind,
            BarKind::Memory {
                prefetchable: true,
                is_64bit: true
            }
        );
        assert_eq!(bar.base, Some(0xfc00_0000));
        assert!(bar.is_mappable() && bar.is_memory());
        let io = Resource {
            start: 0xc000,
            end: 0xc01f,
            flags: IORESOURCE_IO,
        };
        assert_eq!(
            Bar::new(region(4, 0x20, 3), Some(&io), None).kind,
            BarKind::Io
        );
        assert_eq!(
            Bar::new(region(3, 0, 0), Some(&Resource::default()), None).kind,
            BarKind::Absent
        );
    }

    #[test]
    fn kinds_from_config_without_sysfs() {
        assert_eq!(
            Bar::new(region(4, 0x20, 3), None, Some(0xc001)).kind,
            BarKind::Io
        );
        assert_eq!(
            Bar::new(region(2, 0x1000, 7), None, Some(0xfc00_000c)).kind,
            BarKind::Memory {
                prefetchable: true,
                is_64bit: true
            }
        );
        assert_eq!(Bar::new(region(2, 0x1000, 7), None, None).base, None);
    }

    #[test]
    fn sparse_bar_is_not_wholly_mappable() {
        let mut r = region(0, 0x4000, 0xf);
        r.caps = vec![
            RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0,
                size: 0x1000,
            }]),
            RegionCap::MsixMappable,
        ];
        let bar = Bar::new(r, None, Some(0));
        assert!(!bar.is_mappable());
        assert!(bar.msix_mappable());
        assert_eq!(bar.sparse_areas().unwrap().len(), 1);
    }
}
