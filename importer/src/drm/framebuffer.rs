//! A KMS framebuffer over an imported buffer: layout checked against the buffer's
//! size before `DRM_IOCTL_MODE_ADDFB2`, removed (`RMFB`) on drop.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use drm::buffer::{Handle, PlanarBuffer};
use drm::control::{framebuffer, Device as _, FbCmd2Flags};
use drm_fourcc::{DrmFourcc, DrmModifier};

use super::error::{Error, Result};
use super::gem::Gem;

/// Width, height, format and pitch of a single-plane framebuffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FbLayout {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Pixel format.
    pub format: DrmFourcc,
    /// Bytes per row (at least `width * bytes_per_pixel`).
    pub pitch: u32,
    /// Where the first pixel is in the buffer.
    pub offset: u32,
}

/// Bytes per pixel of the single-plane RGB formats this importer shows.
pub fn bytes_per_pixel(format: DrmFourcc) -> Option<u32> {
    use DrmFourcc as F;
    Some(match format {
        F::Xrgb8888
        | F::Argb8888
        | F::Xbgr8888
        | F::Abgr8888
        | F::Rgbx8888
        | F::Rgba8888
        | F::Bgrx8888
        | F::Bgra8888
        | F::Xrgb2101010
        | F::Argb2101010
        | F::Xbgr2101010
        | F::Abgr2101010 => 4,
        F::Rgb888 | F::Bgr888 => 3,
        F::Rgb565 | F::Bgr565 | F::Xrgb1555 | F::Argb1555 | F::Xrgb4444 | F::Argb4444 => 2,
        F::C8 | F::R8 => 1,
        _ => return None,
    })
}

/// Parses a fourcc as DRM spells it (`XR24`, `AR24`, `RG16`...) or by its name
/// (`XRGB8888`).
///
/// # Errors
///
/// [`Error::UnsupportedFormat`] for text that is neither, or a format that is not a
/// single-plane RGB format.
pub fn parse_fourcc(text: &str) -> Result<DrmFourcc> {
    let unsupported = || Error::UnsupportedFormat {
        format: text.to_string(),
        fix: "use a single-plane RGB fourcc: XR24 (XRGB8888), AR24, XB24, AB24, RG24, BG24, \
              RG16 or C8"
            .into(),
    };
    let code = if text.len() == 4 && text.is_ascii() {
        let b = text.as_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    } else {
        let named = [
            ("xrgb8888", DrmFourcc::Xrgb8888),
            ("argb8888", DrmFourcc::Argb8888),
            ("xbgr8888", DrmFourcc::Xbgr8888),
            ("abgr8888", DrmFourcc::Abgr8888),
            ("rgb888", DrmFourcc::Rgb888),
            ("bgr888", DrmFourcc::Bgr888),
            ("rgb565", DrmFourcc::Rgb565),
            ("c8", DrmFourcc::C8),
        ];
        let want = text.to_ascii_lowercase();
        match named.iter().find(|(n, _)| *n == want) {
            Some((_, f)) => *f as u32,
            None => return Err(unsupported()),
        }
    };
    let format = DrmFourcc::try_from(code).map_err(|_| unsupported())?;
    bytes_per_pixel(format).ok_or_else(unsupported)?;
    Ok(format)
}

impl FbLayout {
    /// A layout with the tightest pitch (`width * bytes_per_pixel`) at offset 0.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedFormat`] for a format without a known pixel size.
    pub fn packed(width: u32, height: u32, format: DrmFourcc) -> Result<FbLayout> {
        let bpp = bytes_per_pixel(format).ok_or_else(|| Error::UnsupportedFormat {
            format: format.to_string(),
            fix: "use a single-plane RGB format such as XR24".into(),
        })?;
        Ok(FbLayout {
            width,
            height,
            format,
            pitch: width.saturating_mul(bpp),
            offset: 0,
        })
    }

    /// The bytes the kernel requires of the buffer for this layout:
    /// `offset + (height - 1) * pitch + width * bytes_per_pixel`
    /// (`drm_gem_fb_init_with_funcs`).
    pub fn bytes_needed(&self) -> Option<u64> {
        let bpp = u64::from(bytes_per_pixel(self.format)?);
        let h = u64::from(self.height.max(1));
        u64::from(self.offset)
            .checked_add((h - 1).checked_mul(u64::from(self.pitch))?)?
            .checked_add(u64::from(self.width) * bpp)
    }

    /// Checks the layout on its own: a width and height of at least 1, a known pixel
    /// size, a pitch that holds a row and fits DRM's 32-bit pitch.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedFormat`] for an unknown pixel size; [`Error::BadLayout`]
    /// with the numbers and the fix.
    pub fn validate(&self) -> Result<()> {
        let bpp = bytes_per_pixel(self.format).ok_or_else(|| Error::UnsupportedFormat {
            format: self.format.to_string(),
            fix: "use a single-plane RGB format such as XR24".into(),
        })?;
        let bad = |fix: String| Error::BadLayout {
            width: self.width,
            height: self.height,
            format: self.format.to_string(),
            pitch: self.pitch,
            fix,
        };
        if self.width == 0 || self.height == 0 {
            return Err(bad("width and height must be at least 1".into()));
        }
        let row = u64::from(self.width) * u64::from(bpp);
        if row > u64::from(u32::MAX) {
            return Err(bad(format!(
                "a row of {} pixels x {bpp} bytes = {row} bytes does not fit DRM's 32-bit \
                 pitch; use a smaller width",
                self.width
            )));
        }
        if u64::from(self.pitch) < row {
            return Err(bad(format!(
                "the pitch is shorter than one row ({} pixels x {bpp} bytes = {row}); use a \
                 pitch of at least {row}",
                self.width
            )));
        }
        Ok(())
    }

    /// Checks the layout against a buffer of `size` bytes, as the kernel would.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate); [`Error::Layout`] when the buffer is too small,
    /// with the numbers and what would fit.
    pub fn check(&self, size: u64) -> Result<()> {
        self.validate()?;
        let row = u64::from(self.width) * u64::from(bytes_per_pixel(self.format).unwrap_or(1));
        let layout = |needed: u64, fix: String| Error::Layout {
            width: self.width,
            height: self.height,
            format: self.format.to_string(),
            pitch: self.pitch,
            needed,
            size,
            fix,
        };
        let exact = self.bytes_needed();
        let needed = exact.unwrap_or(u64::MAX);
        if exact.is_none_or(|n| n > size) {
            let rows = if size > u64::from(self.offset) + row {
                (size - u64::from(self.offset) - row) / u64::from(self.pitch.max(1)) + 1
            } else {
                0
            };
            return Err(layout(
                needed,
                format!(
                    "export a range of at least {needed} bytes (rounded up to the page size), \
                     or show at most {rows} rows at this pitch"
                ),
            ));
        }
        Ok(())
    }
}

impl FbLayout {
    /// Checks the size against a card's framebuffer range (`DRM_IOCTL_MODE_GETRESOURCES`:
    /// widths `width.0` to `width.1`, heights likewise), as `drm_mode_addfb2` does.
    ///
    /// # Errors
    ///
    /// [`Error::BadLayout`] naming the card's range.
    pub fn fits_card(&self, width: (u32, u32), height: (u32, u32), card: &str) -> Result<()> {
        let inside = |v: u32, (lo, hi): (u32, u32)| lo <= v && v <= hi;
        if inside(self.width, width) && inside(self.height, height) {
            return Ok(());
        }
        Err(Error::BadLayout {
            width: self.width,
            height: self.height,
            format: self.format.to_string(),
            pitch: self.pitch,
            fix: format!(
                "{card} takes framebuffers {}x{} to {}x{} pixels (its mode_config); use a \
                 width of at most {} and a height of at most {}",
                width.0, height.0, width.1, height.1, width.1, height.1
            ),
        })
    }
}

/// A range's inclusive ends (0 and `u32::MAX` where open).
fn bounds(r: &impl RangeBounds<u32>) -> (u32, u32) {
    let lo = match r.start_bound() {
        Bound::Included(&v) => v,
        Bound::Excluded(&v) => v.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let hi = match r.end_bound() {
        Bound::Included(&v) => v,
        Bound::Excluded(&v) => v.saturating_sub(1),
        Bound::Unbounded => u32::MAX,
    };
    (lo, hi)
}

/// A framebuffer; it keeps its [`Gem`] alive and is removed on drop.
#[derive(Debug)]
pub struct Framebuffer {
    gem: Arc<Gem>,
    handle: framebuffer::Handle,
    layout: FbLayout,
}

struct Planes<'a>(&'a FbLayout, Handle);

impl PlanarBuffer for Planes<'_> {
    fn size(&self) -> (u32, u32) {
        (self.0.width, self.0.height)
    }
    fn format(&self) -> DrmFourcc {
        self.0.format
    }
    fn modifier(&self) -> Option<DrmModifier> {
        None
    }
    fn pitches(&self) -> [u32; 4] {
        [self.0.pitch, 0, 0, 0]
    }
    fn handles(&self) -> [Option<Handle>; 4] {
        [Some(self.1), None, None, None]
    }
    fn offsets(&self) -> [u32; 4] {
        [self.0.offset, 0, 0, 0]
    }
}

impl Framebuffer {
    /// Creates a framebuffer over `gem` (`DRM_IOCTL_MODE_ADDFB2`), after checking the
    /// layout against the buffer's size.
    ///
    /// # Errors
    ///
    /// [`Error::BadLayout`], [`Error::Layout`] and [`Error::UnsupportedFormat`] from
    /// [`FbLayout::check`]; [`Error::Ioctl`] when ADDFB2 fails.
    pub fn new(gem: Arc<Gem>, layout: FbLayout) -> Result<Framebuffer> {
        layout.check(gem.size())?;
        let card = gem.card();
        // The card's framebuffer size range (mode_config min/max_width and _height,
        // which drm_mode_addfb2 checks: EINVAL past them).
        if let Ok(res) = card.resource_handles() {
            layout.fits_card(
                bounds(&res.supported_fb_width()),
                bounds(&res.supported_fb_height()),
                &card.describe(),
            )?;
        }
        let handle = card
            .add_planar_framebuffer(&Planes(&layout, gem.handle()), FbCmd2Flags::empty())
            .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_ADDFB2", &e))?;
        Ok(Framebuffer {
            gem,
            handle,
            layout,
        })
    }

    /// The KMS framebuffer id.
    pub fn handle(&self) -> framebuffer::Handle {
        self.handle
    }

    /// Its layout.
    pub fn layout(&self) -> &FbLayout {
        &self.layout
    }

    /// The imported buffer under it.
    pub fn gem(&self) -> &Arc<Gem> {
        &self.gem
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        let _ = self.gem.card().destroy_framebuffer(self.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourccs_parse_by_code_and_name() {
        assert_eq!(parse_fourcc("XR24").unwrap(), DrmFourcc::Xrgb8888);
        assert_eq!(parse_fourcc("xrgb8888").unwrap(), DrmFourcc::Xrgb8888);
        assert_eq!(parse_fourcc("RG16").unwrap(), DrmFourcc::Rgb565);
        let e = parse_fourcc("NV12").unwrap_err().to_string();
        assert!(e.contains("NV12") && e.contains("XR24"), "{e}");
        assert!(parse_fourcc("nope!").is_err());
    }

    #[test]
    fn a_framebuffer_past_the_cards_maximum_names_it() {
        let card = "/dev/dri/card0 (virtio_gpu, 0000:00:11.0)";
        let l = FbLayout::packed(16384, 16, DrmFourcc::Xrgb8888).unwrap();
        let e = l
            .fits_card((0, 8192), (0, 8192), card)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("16384x16") && e.contains(card) && e.contains("at most 8192"),
            "{e}"
        );
        let ok = FbLayout::packed(1024, 768, DrmFourcc::Xrgb8888).unwrap();
        ok.fits_card((0, 8192), (0, 8192), card).unwrap();
        assert_eq!(bounds(&(16..=8192)), (16, 8192));
        assert_eq!(bounds(&(..)), (0, u32::MAX));
    }

    #[test]
    fn layout_is_checked_with_numbers() {
        let l = FbLayout::packed(1024, 768, DrmFourcc::Xrgb8888).unwrap();
        assert_eq!(l.pitch, 4096);
        assert_eq!(l.bytes_needed(), Some(3 << 20));
        l.check(3 << 20).unwrap();
        let e = l.check(2 << 20).unwrap_err().to_string();
        assert!(
            e.contains("1024x768")
                && e.contains("pitch 4096")
                && e.contains("3145728")
                && e.contains("2097152")
                && e.contains("at most 512 rows"),
            "{e}"
        );
        let short = FbLayout { pitch: 4000, ..l };
        let e = short.check(4 << 20).unwrap_err().to_string();
        assert!(
            e.contains("shorter than one row") && e.contains("4096"),
            "{e}"
        );
        let zero = FbLayout { width: 0, ..l };
        assert!(zero.check(4 << 20).is_err());
        // Sizes past u64 are "too big", not an overflow.
        let huge = FbLayout::packed(u32::MAX, u32::MAX, DrmFourcc::Xrgb8888).unwrap();
        assert_eq!(huge.bytes_needed(), None);
        assert!(huge.check(u64::MAX).is_err());
        // A wider pitch: the last row needs only width * bpp.
        let wide = FbLayout { pitch: 8192, ..l };
        assert_eq!(wide.bytes_needed(), Some(767 * 8192 + 4096));
    }
}
