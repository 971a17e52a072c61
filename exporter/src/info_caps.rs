//! The capability chain that VFIO appends to device and region info.
//!
//! A chain starts at `cap_offset` (relative to the start of the info buffer);
//! each capability begins with `{ u16 id; u16 version; u32 next; }` and `next`
//! (also relative to the buffer start) is 0 at the end. The parser works on a
//! byte slice so malformed chains are tested without a device: a header outside
//! the buffer, a header inside the fixed info struct, a loop, or a body that
//! runs past the buffer are errors, never panics.

use peerdma_host::pci_caps::ChainError;
use peerdma_uapi::vfio::{
    vfio_info_cap_header, VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
    VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_CAP_TYPE,
};

/// Size of `struct vfio_info_cap_header`.
pub const CAP_HEADER_LEN: usize = size_of::<vfio_info_cap_header>();

/// Result of the chain parsers.
type Result<T> = std::result::Result<T, ChainError>;

/// One raw capability: its header and the bytes from its header to the next
/// capability (or to the end of the buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawCap<'a> {
    /// Offset of the header in the info buffer.
    pub offset: u32,
    /// Capability id.
    pub id: u16,
    /// Capability version.
    pub version: u16,
    /// The capability, header included.
    pub bytes: &'a [u8],
}

fn ne_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ne_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Walks a capability chain.
///
/// `buf` is the whole info buffer (fixed struct first); `first` is its
/// `cap_offset` (0: no chain); `fixed_len` is the size of the fixed struct,
/// which no capability may overlap.
///
/// # Errors
///
/// [`ChainError`] for a header outside the buffer or inside the fixed struct,
/// and for a loop.
pub fn walk(buf: &[u8], first: u32, fixed_len: usize) -> Result<Vec<RawCap<'_>>> {
    let bad = |offset: u32, reason| ChainError { offset, reason };
    let mut caps: Vec<RawCap<'_>> = Vec::new();
    let mut offset = first;
    while offset != 0 {
        let at = offset as usize;
        if at < fixed_len {
            return Err(bad(offset, "capability overlaps the fixed info struct"));
        }
        if at
            .checked_add(CAP_HEADER_LEN)
            .is_none_or(|end| end > buf.len())
        {
            return Err(bad(
                offset,
                "capability header lies outside the info buffer",
            ));
        }
        if caps.iter().any(|c| c.offset == offset) {
            return Err(bad(offset, "capability chain loops"));
        }
        let id = ne_u16(buf, at).unwrap_or_default();
        let version = ne_u16(buf, at + 2).unwrap_or_default();
        let next = ne_u32(buf, at + 4).unwrap_or_default();
        let end = if next as usize > at && (next as usize) <= buf.len() {
            next as usize
        } else {
            buf.len()
        };
        caps.push(RawCap {
            offset,
            id,
            version,
            bytes: &buf[at..end],
        });
        offset = next;
    }
    Ok(caps)
}

/// One mmap-able area of a region with sparse mmap support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseMmapArea {
    /// Offset of the area inside the region.
    pub offset: u64,
    /// Size of the area.
    pub size: u64,
}

/// A parsed region info capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionCap {
    /// Only these areas of the region may be mmapped.
    SparseMmap(Vec<SparseMmapArea>),
    /// A device-specific region type (`VFIO_REGION_TYPE_*`, subtype).
    Type {
        /// Region type.
        region_type: u32,
        /// Region subtype.
        subtype: u32,
    },
    /// The MSI-X table and PBA of this BAR may be mmapped.
    MsixMappable,
    /// A capability this library does not interpret.
    Unknown {
        /// Capability id.
        id: u16,
        /// Capability version.
        version: u16,
    },
}

/// Parses the capability chain of a region info buffer (arguments as [`walk`]).
///
/// # Errors
///
/// What [`walk`] returns, and [`ChainError`] for a truncated capability.
pub fn region_caps(buf: &[u8], first: u32, fixed_len: usize) -> Result<Vec<RegionCap>> {
    let mut out = Vec::new();
    for cap in walk(buf, first, fixed_len)? {
        let bad = |reason| ChainError {
            offset: cap.offset,
            reason,
        };
        out.push(match u32::from(cap.id) {
            VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                let nr = ne_u32(cap.bytes, CAP_HEADER_LEN)
                    .ok_or(bad("sparse mmap capability is truncated"))?;
                let body = (nr as usize)
                    .checked_mul(16)
                    .and_then(|n| n.checked_add(CAP_HEADER_LEN + 8))
                    .ok_or(bad("sparse mmap area count overflows"))?;
                if body > cap.bytes.len() {
                    return Err(bad("sparse mmap areas run past the capability"));
                }
                let areas = (0..nr as usize)
                    .map(|i| {
                        let at = CAP_HEADER_LEN + 8 + i * 16;
                        SparseMmapArea {
                            offset: ne_u64(cap.bytes, at).unwrap_or_default(),
                            size: ne_u64(cap.bytes, at + 8).unwrap_or_default(),
                        }
                    })
                    .collect();
                RegionCap::SparseMmap(areas)
            }
            VFIO_REGION_INFO_CAP_TYPE => RegionCap::Type {
                region_type: ne_u32(cap.bytes, CAP_HEADER_LEN)
                    .ok_or(bad("type capability is truncated"))?,
                subtype: ne_u32(cap.bytes, CAP_HEADER_LEN + 4)
                    .ok_or(bad("type capability is truncated"))?,
            },
            VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => RegionCap::MsixMappable,
            _ => RegionCap::Unknown {
                id: cap.id,
                version: cap.version,
            },
        });
    }
    Ok(out)
}

/// A parsed device info capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceCap {
    /// AtomicOp completion widths the device may use towards the root
    /// (`VFIO_PCI_ATOMIC_COMP32/64/128`).
    PciAtomicComp {
        /// Width flags.
        flags: u32,
    },
    /// A capability this library does not interpret (e.g. s390 zPCI).
    Unknown {
        /// Capability id.
        id: u16,
        /// Capability version.
        version: u16,
    },
}

/// Parses the capability chain of a device info buffer (arguments as [`walk`]).
///
/// # Errors
///
/// What [`walk`] returns, and [`ChainError`] for a truncated capability.
pub fn device_caps(buf: &[u8], first: u32, fixed_len: usize) -> Result<Vec<DeviceCap>> {
    walk(buf, first, fixed_len)?
        .into_iter()
        .map(|cap| match u32::from(cap.id) {
            VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP => Ok(DeviceCap::PciAtomicComp {
                flags: ne_u32(cap.bytes, CAP_HEADER_LEN).ok_or(ChainError {
                    offset: cap.offset,
                    reason: "atomic completion capability is truncated",
                })?,
            }),
            _ => Ok(DeviceCap::Unknown {
                id: cap.id,
                version: cap.version,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of `struct vfio_region_info`.
    const FIXED: usize = 32;

    struct Builder(Vec<u8>);

    impl Builder {
        fn new() -> Self {
            Builder(vec![0u8; FIXED])
        }
        /// Appends a capability and returns its offset; `next` is patched later.
        fn cap(&mut self, id: u16, version: u16, body: &[u8]) -> u32 {
            let at = self.0.len() as u32;
            self.0.extend_from_slice(&id.to_ne_bytes());
            self.0.extend_from_slice(&version.to_ne_bytes());
            self.0.extend_from_slice(&0u32.to_ne_bytes());
            self.0.extend_from_slice(body);
            while self.0.len() & 7 != 0 {
                self.0.push(0);
            }
            at
        }
        fn link(&mut self, from: u32, to: u32) {
            let at = from as usize + 4;
            self.0[at..at + 4].copy_from_slice(&to.to_ne_bytes());
        }
    }

    fn sparse_body(areas: &[(u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(areas.len() as u32).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        for &(o, s) in areas {
            b.extend_from_slice(&o.to_ne_bytes());
            b.extend_from_slice(&s.to_ne_bytes());
        }
        b
    }

    fn type_body(t: u32, s: u32) -> Vec<u8> {
        [t.to_ne_bytes(), s.to_ne_bytes()].concat()
    }

    #[test]
    fn no_chain() {
        let b = Builder::new();
        assert!(region_caps(&b.0, 0, FIXED).unwrap().is_empty());
    }

    #[test]
    fn parses_all_region_caps_in_order() {
        let mut b = Builder::new();
        let a = b.cap(1, 1, &sparse_body(&[(0, 0x2000), (0x3000, 0x1000)]));
        let m = b.cap(3, 1, &[]);
        let t = b.cap(2, 1, &type_body(0x8000_8086, 1));
        let u = b.cap(42, 7, &[1, 2, 3]);
        b.link(a, m);
        b.link(m, t);
        b.link(t, u);
        let caps = region_caps(&b.0, a, FIXED).unwrap();
        assert_eq!(
            caps,
            vec![
                RegionCap::SparseMmap(vec![
                    SparseMmapArea {
                        offset: 0,
                        size: 0x2000
                    },
                    SparseMmapArea {
                        offset: 0x3000,
                        size: 0x1000
                    }
                ]),
                RegionCap::MsixMappable,
                RegionCap::Type {
                    region_type: 0x8000_8086,
                    subtype: 1
                },
                RegionCap::Unknown { id: 42, version: 7 },
            ]
        );
    }

    #[test]
    fn backwards_chain_without_loop_is_fine() {
        let mut b = Builder::new();
        let first = b.cap(3, 1, &[]);
        let second = b.cap(2, 1, &type_body(1, 1));
        b.link(second, first);
        let caps = region_caps(&b.0, second, FIXED).unwrap();
        assert_eq!(caps.len(), 2);
    }

    #[test]
    fn loop_is_an_error() {
        let mut b = Builder::new();
        let x = b.cap(3, 1, &[]);
        let y = b.cap(3, 1, &[]);
        b.link(x, y);
        b.link(y, x);
        let err = region_caps(&b.0, x, FIXED).unwrap_err();
        assert!(
            matches!(err, ChainError { reason, offset } if reason.contains("loops") && offset == x)
        );
        // A capability pointing at itself.
        let mut b = Builder::new();
        let x = b.cap(3, 1, &[]);
        b.link(x, x);
        assert!(matches!(
            region_caps(&b.0, x, FIXED),
            Err(ChainError { .. })
        ));
    }

    #[test]
    fn out_of_bounds_next_is_an_error() {
        let mut b = Builder::new();
        let x = b.cap(3, 1, &[]);
        b.link(x, 0x1000);
        let err = region_caps(&b.0, x, FIXED).unwrap_err();
        assert!(matches!(err, ChainError { offset: 0x1000, .. }), "{err:?}");
        // A header that starts inside but ends outside the buffer.
        let len = b.0.len() as u32;
        b.link(x, len - 4);
        assert!(region_caps(&b.0, x, FIXED).is_err());
        // Offsets near u32::MAX must not overflow.
        b.link(x, u32::MAX);
        assert!(region_caps(&b.0, x, FIXED).is_err());
        assert!(region_caps(&b.0, u32::MAX - 3, FIXED).is_err());
    }

    #[test]
    fn first_offset_out_of_bounds_is_an_error() {
        let b = Builder::new();
        assert!(region_caps(&b.0, 64, FIXED).is_err());
    }

    #[test]
    fn cap_inside_fixed_struct_is_an_error() {
        let mut b = Builder::new();
        let x = b.cap(3, 1, &[]);
        b.link(x, 8);
        let err = region_caps(&b.0, x, FIXED).unwrap_err();
        assert!(matches!(err, ChainError { offset: 8, .. }), "{err:?}");
    }

    #[test]
    fn truncated_sparse_areas_are_an_error() {
        let mut b = Builder::new();
        let mut body = sparse_body(&[(0, 0x1000)]);
        body[0..4].copy_from_slice(&3u32.to_ne_bytes()); // claims 3 areas, has 1
        let x = b.cap(1, 1, &body);
        let err = region_caps(&b.0, x, FIXED).unwrap_err();
        assert!(
            matches!(err, ChainError { reason, .. } if reason.contains("sparse")),
            "{err:?}"
        );
        // nr_areas = u32::MAX must not overflow or allocate.
        let mut b = Builder::new();
        let mut body = sparse_body(&[]);
        body[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        let x = b.cap(1, 1, &body);
        assert!(region_caps(&b.0, x, FIXED).is_err());
    }

    #[test]
    fn sparse_areas_stop_at_the_next_cap() {
        // Areas would fit in the buffer only by reading into the next capability.
        let mut b = Builder::new();
        let mut body = sparse_body(&[(0, 0x1000)]);
        body[0..4].copy_from_slice(&2u32.to_ne_bytes());
        let x = b.cap(1, 1, &body);
        let y = b.cap(2, 1, &type_body(1, 1));
        b.link(x, y);
        assert!(region_caps(&b.0, x, FIXED).is_err());
    }

    #[test]
    fn truncated_type_cap_is_an_error() {
        let mut b = Builder::new();
        let x = b.cap(2, 1, &[]);
        assert_eq!(b.0.len(), x as usize + CAP_HEADER_LEN);
        assert!(region_caps(&b.0, x, FIXED).is_err());
    }

    #[test]
    fn device_caps_parse() {
        let mut b = Builder(vec![0u8; 24]);
        let x = b.cap(5, 1, &[7u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat());
        let y = b.cap(1, 1, &[0u8; 8]);
        b.link(x, y);
        assert_eq!(
            device_caps(&b.0, x, 24).unwrap(),
            vec![
                DeviceCap::PciAtomicComp { flags: 7 },
                DeviceCap::Unknown { id: 1, version: 1 }
            ]
        );
    }
}
