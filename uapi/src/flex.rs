//! Variable-length ioctl arguments: a fixed header followed by an array, built in one
//! 8-byte-aligned buffer so that no call site lays them out by hand.
//!
//! The kernel passes such arguments as one block of memory: `vfio_device_feature
//! { argsz, flags, data[] }` whose `data` holds `vfio_device_feature_dma_buf { ...,
//! nr_ranges, dma_ranges[] }`, or the
//! `*_info` structs that the kernel extends with a capability chain when `argsz` leaves
//! room. [`FlexBuf`] owns such a block (backed by a `Vec<u64>`, so every offset the
//! kernel uses is correctly aligned), keeps the header's size and count fields in step
//! with the array, and hands out typed views of the header, the array and any offset.
//!
//! ```
//! use peerdma_uapi::flex::{Feature, FlexBuf};
//! use peerdma_uapi::vfio::*;
//!
//! let payload = vfio_device_feature_dma_buf {
//!     region_index: VFIO_PCI_BAR2_REGION_INDEX,
//!     open_flags: 0o2000002, // O_RDWR | O_CLOEXEC
//!     ..Default::default()
//! };
//! let ranges = [vfio_region_dma_range { offset: 0, length: 0x1000 }];
//! let flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
//! let mut arg = FlexBuf::from_elems(Feature::new(flags, payload), &ranges);
//! let ptr = arg.as_mut_ptr(); // pass to ioctl(device_fd, VFIO_DEVICE_FEATURE, ptr)
//! # let _ = ptr;
//! assert_eq!(arg.header().header.argsz, 8 + 16 + 16);
//! assert_eq!(arg.header().payload.nr_ranges, 1);
//! ```
//!
//! This module and [`ioctl`](crate::ioctl) are the only places in the crate with
//! `unsafe` code.

#![allow(unsafe_code)]

use core::marker::PhantomData;
use core::mem::{align_of, offset_of, size_of};
use core::{ptr, slice};

use crate::__IncompleteArrayField;
use crate::udmabuf::udmabuf_create;
use crate::vfio::{
    vfio_device_bind_iommufd, vfio_device_feature, vfio_device_feature_dma_buf, vfio_device_info,
    vfio_info_cap_header, vfio_iommu_type1_info, vfio_iommu_type1_info_cap_iova_range,
    vfio_iova_range, vfio_region_dma_range, vfio_region_info, vfio_region_info_cap_sparse_mmap,
    vfio_region_info_cap_type, vfio_region_sparse_mmap_area,
};

/// Plain data: a type that may be read from any initialized bytes of its size.
///
/// # Safety
///
/// Every bit pattern of `size_of::<Self>()` initialized bytes must be a valid value:
/// only integers, arrays and `repr(C)` structs of such types, and zero-sized
/// [`__IncompleteArrayField`] markers. No references, pointers, bools, enums or niches.
pub unsafe trait Pod: Sized {}

/// A `repr(C)` header whose C definition ends in a flexible array (or is followed by a
/// trailing area the kernel fills, such as a capability chain): what [`FlexBuf`] builds.
///
/// # Safety
///
/// - `Self` and [`FlexHeader::Elem`] are [`Pod`] and have no padding bytes between their
///   fields, so that writing one leaves every byte of the buffer initialized. (Trailing
///   padding of the header is ruled out at compile time by [`FlexBuf`], which requires
///   `ELEMS_OFFSET == size_of::<Self>()`.)
/// - [`FlexHeader::ELEMS_OFFSET`] is the byte offset at which the kernel reads or writes
///   the array.
pub unsafe trait FlexHeader: Pod {
    /// Type of one array element (`u8` for a trailing byte area such as a cap chain).
    type Elem: Pod;
    /// Byte offset of the array from the start of the header.
    const ELEMS_OFFSET: usize;
    /// Stores the total argument size and the element count in the header's own fields
    /// (`argsz`, `nr_ranges`, `count`...), whichever it has.
    fn set_lengths(&mut self, total_bytes: u32, elems: u32);
}

/// A `VFIO_DEVICE_FEATURE` argument: the `vfio_device_feature` header with the feature's
/// payload laid out in its `data[]`.
///
/// Used bare for fixed-size payloads (`Feature<()>` for a PROBE, whose `argsz` is 8),
/// or as `FlexBuf<Feature<P>>` when the payload ends in an array, as DMA_BUF's does.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Feature<P> {
    /// `argsz` (kept up to date by [`Feature::new`] and [`FlexBuf`]) and `flags`
    /// (feature number | `VFIO_DEVICE_FEATURE_GET`/`SET`/`PROBE`).
    pub header: vfio_device_feature,
    /// The feature's argument, at `data` (offset 8).
    pub payload: P,
}

impl<P> Feature<P> {
    /// `payload` sits exactly where the kernel reads `vfio_device_feature.data`.
    const PAYLOAD_AT_DATA: () = assert!(
        offset_of!(Feature<P>, payload) == offset_of!(vfio_device_feature, data),
        "a VFIO feature payload must start at vfio_device_feature.data"
    );

    /// A feature argument with `flags` and `argsz = size_of::<Self>()`.
    ///
    /// # Panics
    ///
    /// If the argument is larger than `u32::MAX` bytes (no kernel payload is).
    pub fn new(flags: u32, payload: P) -> Self {
        let () = Self::PAYLOAD_AT_DATA;
        Self {
            header: vfio_device_feature {
                argsz: byte_len_u32(size_of::<Self>()),
                flags,
                data: __IncompleteArrayField::new(),
            },
            payload,
        }
    }
}

// SAFETY: a `vfio_device_feature` (two u32 and a zero-sized marker) followed by a `Pod`
// payload: any initialized bytes are valid for both parts, and so for the whole.
unsafe impl<P: Pod> Pod for Feature<P> {}

// SAFETY: the header has no padding; the payload starts at offset 8 with nothing in
// between (`PAYLOAD_AT_DATA`, evaluated here through ELEMS_OFFSET); the payload and its
// elements have no padding by `P`'s own contract; trailing padding is excluded by
// `FlexBuf`'s compile-time check that ELEMS_OFFSET == size_of::<Self>().
unsafe impl<P: FlexHeader> FlexHeader for Feature<P> {
    type Elem = P::Elem;
    const ELEMS_OFFSET: usize = {
        let () = Self::PAYLOAD_AT_DATA;
        offset_of!(Feature<P>, payload) + P::ELEMS_OFFSET
    };
    fn set_lengths(&mut self, total_bytes: u32, elems: u32) {
        self.header.argsz = total_bytes;
        // The payload sees the argument from `data` on.
        self.payload
            .set_lengths(total_bytes - offset_of!(Feature<P>, payload) as u32, elems);
    }
}

/// The `VFIO_DEVICE_FEATURE` argument of `VFIO_DEVICE_FEATURE_DMA_BUF`: feature header,
/// dma-buf request, then the BAR ranges as the array.
pub type DmaBufFeature = FlexBuf<Feature<vfio_device_feature_dma_buf>>;

/// One variable-length ioctl argument: a `H` header followed by `len()` `H::Elem`s, in a
/// zero-initialized, 8-byte-aligned buffer of [`FlexBuf::byte_len`] bytes.
///
/// The header's size and count fields ([`FlexHeader::set_lengths`]) are set when the
/// buffer is built or resized and again by [`FlexBuf::as_mut_ptr`], so they always
/// describe the buffer the kernel receives.
pub struct FlexBuf<H: FlexHeader> {
    /// Backing store; `u64` words give the 8-byte alignment every kernel struct needs.
    words: Vec<u64>,
    /// Number of elements after the header.
    len: usize,
    _header: PhantomData<H>,
}

impl<H: FlexHeader> FlexBuf<H> {
    /// Compile-time proof that the header and the array fit the buffer's alignment and
    /// that the array starts right after the header.
    const LAYOUT: () = {
        assert!(
            align_of::<H>() <= align_of::<u64>(),
            "header needs more than 8-byte alignment"
        );
        assert!(
            align_of::<H::Elem>() <= align_of::<u64>(),
            "element needs more than 8-byte alignment"
        );
        assert!(size_of::<H::Elem>() > 0, "zero-sized array element");
        assert!(
            H::ELEMS_OFFSET == size_of::<H>(),
            "the array must start where the header ends"
        );
        assert!(
            H::ELEMS_OFFSET % align_of::<H::Elem>() == 0,
            "misaligned array"
        );
    };

    /// `header` followed by `len` zeroed elements.
    ///
    /// # Panics
    ///
    /// If the argument would be larger than `u32::MAX` bytes (the kernel's `argsz` limit).
    #[inline]
    pub fn new(header: H, len: usize) -> Self {
        let () = Self::LAYOUT;
        let mut buf = Self {
            words: vec![0; Self::bytes_for(len).div_ceil(8)],
            len,
            _header: PhantomData,
        };
        // SAFETY: the buffer holds at least size_of::<H>() bytes (ELEMS_OFFSET ==
        // size_of::<H>() by LAYOUT) and is 8-byte aligned, which covers align_of::<H>().
        // `H` has no padding, so every byte stays initialized.
        unsafe { ptr::write(buf.words.as_mut_ptr().cast::<H>(), header) };
        buf.sync_lengths();
        buf
    }

    /// `header` followed by a copy of `elems`.
    ///
    /// # Panics
    ///
    /// As [`FlexBuf::new`].
    pub fn from_elems(header: H, elems: &[H::Elem]) -> Self
    where
        H::Elem: Copy,
    {
        let mut buf = Self::new(header, elems.len());
        buf.elems_mut().copy_from_slice(elems);
        buf
    }

    /// The header.
    pub fn header(&self) -> &H {
        // SAFETY: aligned and in bounds (see `new`); all bytes are initialized and `H` is
        // `Pod`, so they form a valid `H`; the borrow of `self` guards the memory.
        unsafe { &*self.words.as_ptr().cast::<H>() }
    }

    /// The header, to fill in. Size and count fields are rewritten by
    /// [`FlexBuf::as_mut_ptr`], so there is no need to set them.
    pub fn header_mut(&mut self) -> &mut H {
        // SAFETY: as in `header`; `&mut self` makes the borrow unique.
        unsafe { &mut *self.words.as_mut_ptr().cast::<H>() }
    }

    /// The array after the header.
    #[inline]
    pub fn elems(&self) -> &[H::Elem] {
        // SAFETY: ELEMS_OFFSET + len * size_of::<Elem>() == byte_len() <= the buffer's
        // size; the start is aligned (8-aligned base, ELEMS_OFFSET a multiple of the
        // element alignment, checked in LAYOUT); the bytes are initialized and `Elem` is
        // `Pod`; the range does not overlap the header.
        unsafe {
            slice::from_raw_parts(
                self.words
                    .as_ptr()
                    .cast::<u8>()
                    .add(H::ELEMS_OFFSET)
                    .cast::<H::Elem>(),
                self.len,
            )
        }
    }

    /// The array after the header, to fill in.
    #[inline]
    pub fn elems_mut(&mut self) -> &mut [H::Elem] {
        // SAFETY: as in `elems`; `&mut self` makes the borrow unique, and `Elem` has no
        // padding, so whatever is written keeps every byte initialized.
        unsafe {
            slice::from_raw_parts_mut(
                self.words
                    .as_mut_ptr()
                    .cast::<u8>()
                    .add(H::ELEMS_OFFSET)
                    .cast::<H::Elem>(),
                self.len,
            )
        }
    }

    /// Number of array elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array is empty (the header alone).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Size of the whole argument in bytes: what `argsz` says.
    pub fn byte_len(&self) -> usize {
        Self::bytes_for(self.len)
    }

    /// Grows or shrinks the array to `len` elements; the header and the elements that
    /// remain are kept, new ones are zeroed.
    ///
    /// # Panics
    ///
    /// As [`FlexBuf::new`].
    pub fn resize(&mut self, len: usize) {
        let words = Self::bytes_for(len).div_ceil(8);
        if len < self.len {
            // Zero the bytes past the new end inside the last kept word, so that a later
            // grow starts from zeroed elements again.
            let end = Self::bytes_for(len);
            let bytes = self.byte_len();
            self.bytes_mut()[end..bytes].fill(0);
        }
        self.words.resize(words, 0);
        self.len = len;
        self.sync_lengths();
    }

    /// Resizes the array so that the argument holds at least `total_bytes` bytes (never
    /// fewer than the header): the retry after the kernel answered with a larger `argsz`.
    ///
    /// # Panics
    ///
    /// As [`FlexBuf::new`].
    pub fn resize_to_bytes(&mut self, total_bytes: usize) {
        let array = total_bytes.saturating_sub(H::ELEMS_OFFSET);
        self.resize(array.div_ceil(size_of::<H::Elem>()));
    }

    /// Pointer to the header for reading ioctls (the kernel only reads).
    pub fn as_ptr(&self) -> *const H {
        self.words.as_ptr().cast()
    }

    /// Pointer to the header for the ioctl call; first rewrites the header's size and
    /// count fields from the buffer. Valid until `self` is next used.
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut H {
        self.sync_lengths();
        self.words.as_mut_ptr().cast()
    }

    /// Reads a `T` at byte `offset` from the start of the header (e.g. a capability the
    /// kernel wrote); `None` if it does not fit in the buffer. Any alignment is fine.
    pub fn read_at<T: Pod>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.byte_len() {
            return None;
        }
        // SAFETY: offset..end lies within the buffer (byte_len() <= its size); every byte
        // of the buffer is initialized and `T` is `Pod`, so the bytes form a valid `T`;
        // `read_unaligned` has no alignment requirement.
        Some(unsafe {
            ptr::read_unaligned(self.words.as_ptr().cast::<u8>().add(offset).cast::<T>())
        })
    }

    /// Reads `count` consecutive `T`s starting at byte `offset` (e.g. the areas of a
    /// sparse-mmap capability); `None` if they do not all fit in the buffer.
    pub fn read_array_at<T: Pod>(&self, offset: usize, count: usize) -> Option<Vec<T>> {
        let total = size_of::<T>().checked_mul(count)?;
        let end = offset.checked_add(total)?;
        if end > self.byte_len() {
            return None;
        }
        (0..count)
            .map(|i| self.read_at(offset + i * size_of::<T>()))
            .collect()
    }

    #[inline]
    fn bytes_for(len: usize) -> usize {
        let bytes = len
            .checked_mul(size_of::<H::Elem>())
            .and_then(|array| array.checked_add(H::ELEMS_OFFSET));
        match bytes {
            Some(bytes) if bytes <= u32::MAX as usize => bytes,
            _ => panic!("variable-length ioctl argument of {len} elements exceeds u32::MAX bytes"),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.words.len() * 8;
        // SAFETY: the `u64` words are initialized and any byte is a valid `u8`; the
        // slice covers exactly the vector's storage and borrows `self` mutably.
        unsafe { slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), len) }
    }

    #[inline]
    fn sync_lengths(&mut self) {
        let total = byte_len_u32(self.byte_len());
        // `len <= byte_len <= u32::MAX` (bytes_for) because elements are not zero-sized.
        let elems = self.len as u32;
        self.header_mut().set_lengths(total, elems);
    }
}

impl<H: FlexHeader> Clone for FlexBuf<H> {
    fn clone(&self) -> Self {
        Self {
            words: self.words.clone(),
            len: self.len,
            _header: PhantomData,
        }
    }
}

impl<H: FlexHeader + core::fmt::Debug> core::fmt::Debug for FlexBuf<H>
where
    H::Elem: core::fmt::Debug,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlexBuf")
            .field("header", self.header())
            .field("elems", &self.elems())
            .finish()
    }
}

#[inline]
fn byte_len_u32(bytes: usize) -> u32 {
    u32::try_from(bytes).expect("ioctl argument larger than u32::MAX bytes")
}

/// Size of the field `f` points to; used at compile time only (never called).
const fn field_size<S, F>(_f: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// Implements [`Pod`] for kernel structs, proving at compile time that the listed fields
/// are all the fields (exhaustive pattern) and that they fill the struct (no padding).
macro_rules! pod {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
        // SAFETY: a `repr(C)` struct of integers, integer arrays and zero-sized
        // flexible-array markers (the layout test checks it against the C header); the
        // assertion below shows it has no padding.
        unsafe impl Pod for $ty {}
        const _: () = {
            let fields = 0 $(+ field_size(|s: &$ty| &s.$field))*;
            assert!(fields == size_of::<$ty>(), concat!(stringify!($ty), " has padding"));
        };
        const _: fn(&$ty) = |s| {
            let $ty { $($field: _),* } = s;
        };
    )*};
}

// SAFETY: integers: every bit pattern is valid and there is no padding.
unsafe impl Pod for u8 {}
// SAFETY: as for u8.
unsafe impl Pod for u16 {}
// SAFETY: as for u8.
unsafe impl Pod for u32 {}
// SAFETY: as for u8.
unsafe impl Pod for u64 {}
// SAFETY: as for u8.
unsafe impl Pod for i32 {}
// SAFETY: zero-sized, no bytes to be invalid.
unsafe impl Pod for () {}

pod! {
    vfio_info_cap_header { id, version, next }
    vfio_device_info { argsz, flags, num_regions, num_irqs, cap_offset, pad }
    vfio_region_info { argsz, flags, index, cap_offset, size, offset }
    vfio_region_sparse_mmap_area { offset, size }
    vfio_region_info_cap_sparse_mmap { header, nr_areas, reserved, areas }
    vfio_region_info_cap_type { header, type_, subtype }
    vfio_device_feature { argsz, flags, data }
    vfio_region_dma_range { offset, length }
    vfio_device_feature_dma_buf { region_index, open_flags, flags, nr_ranges, dma_ranges }
    vfio_iommu_type1_info { argsz, flags, iova_pgsizes, cap_offset, pad }
    vfio_iova_range { start, end }
    vfio_iommu_type1_info_cap_iova_range { header, nr_iovas, reserved, iova_ranges }
    vfio_device_bind_iommufd { argsz, flags, iommufd, out_devid, token_uuid_ptr }
    udmabuf_create { memfd, flags, offset, size }
}

// SAFETY: no padding (pod! above); the ranges follow at the `dma_ranges` marker.
unsafe impl FlexHeader for vfio_device_feature_dma_buf {
    type Elem = vfio_region_dma_range;
    const ELEMS_OFFSET: usize = offset_of!(vfio_device_feature_dma_buf, dma_ranges);
    fn set_lengths(&mut self, _total_bytes: u32, elems: u32) {
        self.nr_ranges = elems;
    }
}

/// `*_info` structs that the kernel extends with a capability chain after the struct,
/// up to `argsz` bytes: the array is that trailing byte area.
macro_rules! info_with_caps {
    ($($ty:ident)*) => {$(
        // SAFETY: no padding (pod! above); the capability area starts right after the
        // struct, where the kernel's cap_offset values point.
        unsafe impl FlexHeader for $ty {
            type Elem = u8;
            const ELEMS_OFFSET: usize = size_of::<$ty>();
            fn set_lengths(&mut self, total_bytes: u32, _elems: u32) {
                self.argsz = total_bytes;
            }
        }
    )*};
}

info_with_caps!(vfio_device_info vfio_region_info vfio_iommu_type1_info);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::*;

    fn dma_buf_arg(
        ranges: &[vfio_region_dma_range],
    ) -> FlexBuf<Feature<vfio_device_feature_dma_buf>> {
        let payload = vfio_device_feature_dma_buf {
            region_index: VFIO_PCI_BAR2_REGION_INDEX,
            open_flags: 0x80002,
            ..Default::default()
        };
        let flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
        FlexBuf::from_elems(Feature::new(flags, payload), ranges)
    }

    fn range(offset: u64, length: u64) -> vfio_region_dma_range {
        vfio_region_dma_range { offset, length }
    }

    #[test]
    fn dma_buf_argument_has_the_kernel_layout() {
        let ranges = [
            range(0, 0x1000),
            range(0x4000, 0x2000),
            range(0x10000, 0x1000),
        ];
        let mut arg = dma_buf_arg(&ranges);
        let ptr = arg.as_mut_ptr();
        assert_eq!(ptr as usize % 8, 0, "buffer must be 8-byte aligned");

        // vfio_device_feature (8) + vfio_device_feature_dma_buf (16) + 3 ranges (48).
        assert_eq!(arg.byte_len(), 72);
        assert_eq!(arg.read_at::<u32>(0), Some(72), "argsz");
        assert_eq!(
            arg.read_at::<u32>(4),
            Some((1 << 16) | 11),
            "flags = GET | DMA_BUF"
        );
        assert_eq!(arg.read_at::<u32>(8), Some(2), "region_index");
        assert_eq!(arg.read_at::<u32>(12), Some(0x80002), "open_flags");
        assert_eq!(arg.read_at::<u32>(16), Some(0), "flags");
        assert_eq!(arg.read_at::<u32>(20), Some(3), "nr_ranges");
        let raw: Vec<u64> = (0..6)
            .map(|i| arg.read_at::<u64>(24 + 8 * i).unwrap())
            .collect();
        assert_eq!(raw, [0, 0x1000, 0x4000, 0x2000, 0x10000, 0x1000]);
        assert_eq!(arg.read_at::<u8>(72), None, "nothing past the end");

        assert_eq!(arg.elems(), &ranges);
        assert_eq!(arg.header().header.argsz, 72);
        assert_eq!(arg.header().payload.nr_ranges, 3);
    }

    #[test]
    fn as_mut_ptr_restores_sizes_the_caller_overwrote() {
        let mut arg = dma_buf_arg(&[range(0, 0x1000)]);
        arg.header_mut().header.argsz = 1;
        arg.header_mut().payload.nr_ranges = 99;
        let _ = arg.as_mut_ptr();
        assert_eq!(arg.header().header.argsz, 40);
        assert_eq!(arg.header().payload.nr_ranges, 1);
    }

    #[test]
    fn resize_keeps_header_and_elements_and_zeroes_new_ones() {
        let mut arg = dma_buf_arg(&[range(0x1000, 0x1000), range(0x3000, 0x1000)]);
        arg.resize(4);
        assert_eq!(arg.len(), 4);
        assert_eq!(arg.header().header.argsz, 8 + 16 + 4 * 16);
        assert_eq!(arg.header().payload.nr_ranges, 4);
        assert_eq!(arg.header().payload.region_index, 2);
        assert_eq!(
            arg.elems()[..2],
            [range(0x1000, 0x1000), range(0x3000, 0x1000)]
        );
        assert_eq!(arg.elems()[2..], [range(0, 0), range(0, 0)]);

        arg.elems_mut()[1] = range(0xdead_0000, 0xbeef_0000);
        let copy = arg.clone();
        arg.resize(1);
        assert_eq!(
            copy.elems()[1],
            range(0xdead_0000, 0xbeef_0000),
            "a clone is independent"
        );
        assert_eq!(arg.header().payload.nr_ranges, 1);
        assert_eq!(arg.byte_len(), 40);
        arg.resize(2);
        assert_eq!(
            arg.elems()[1],
            range(0, 0),
            "a shrunk-away element comes back zeroed"
        );
    }

    #[test]
    fn empty_array_is_the_header_alone() {
        let arg = dma_buf_arg(&[]);
        assert!(arg.is_empty());
        assert_eq!(arg.byte_len(), 24);
        assert_eq!(arg.header().header.argsz, 24);
        assert_eq!(arg.header().payload.nr_ranges, 0);
        assert!(arg.elems().is_empty());
    }

    #[test]
    fn bare_feature_probe_is_eight_bytes() {
        let probe = Feature::new(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET, ());
        assert_eq!(size_of::<Feature<()>>(), 8);
        assert_eq!(probe.header.argsz, 8);
    }

    /// Writes `bytes` into the trailing area at `offset` from the header start.
    fn put(buf: &mut FlexBuf<vfio_region_info>, offset: usize, bytes: &[u8]) {
        let at = offset - size_of::<vfio_region_info>();
        buf.elems_mut()[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn cap_header(id: u16, version: u16, next: u32) -> Vec<u8> {
        [
            &id.to_ne_bytes()[..],
            &version.to_ne_bytes(),
            &next.to_ne_bytes(),
        ]
        .concat()
    }

    #[test]
    fn region_info_grows_to_the_size_the_kernel_asks_and_walks_caps() {
        let mut info = FlexBuf::new(
            vfio_region_info {
                index: 2,
                ..Default::default()
            },
            0,
        );
        assert_eq!(info.header().argsz, 32);
        // The kernel answers with the size it needs for the chain.
        info.header_mut().argsz = 32 + 48;
        let needed = info.header().argsz as usize;
        info.resize_to_bytes(needed);
        assert_eq!(info.byte_len(), 80);
        assert_eq!(info.header().argsz, 80);
        assert_eq!(info.header().index, 2, "header kept");

        // What the kernel writes: a sparse-mmap cap with one area at 32, then an
        // MSI-X-mappable cap (header only) at 64.
        put(
            &mut info,
            32,
            &cap_header(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16, 1, 64),
        );
        put(&mut info, 40, &[1, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut info, 48, &0x1000u64.to_ne_bytes());
        put(&mut info, 56, &0x3000u64.to_ne_bytes());
        put(
            &mut info,
            64,
            &cap_header(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16, 1, 0),
        );
        info.header_mut().cap_offset = 32;

        let first = info
            .read_at::<vfio_info_cap_header>(info.header().cap_offset as usize)
            .unwrap();
        assert_eq!((first.id, first.next), (1, 64));

        let sparse = info
            .read_at::<vfio_region_info_cap_sparse_mmap>(32)
            .unwrap();
        assert_eq!(sparse.nr_areas, 1);
        let areas = info
            .read_array_at::<vfio_region_sparse_mmap_area>(32 + 16, sparse.nr_areas as usize)
            .unwrap();
        assert_eq!(areas.len(), 1);
        assert_eq!((areas[0].offset, areas[0].size), (0x1000, 0x3000));
        assert!(info
            .read_array_at::<vfio_region_sparse_mmap_area>(32 + 16, 3)
            .is_none());
    }

    #[test]
    fn read_at_rejects_overflowing_offsets() {
        let info = FlexBuf::new(vfio_region_info::default(), 0);
        assert_eq!(info.read_at::<u64>(usize::MAX - 2), None);
        assert_eq!(info.read_array_at::<u64>(0, usize::MAX), None);
        assert_eq!(info.read_at::<u64>(24), Some(0));
        assert_eq!(info.read_at::<u64>(25), None);
    }

    #[test]
    #[should_panic(expected = "exceeds u32::MAX")]
    fn oversized_argument_panics() {
        let _ = FlexBuf::new(vfio_region_info::default(), usize::MAX / 2);
    }
}
