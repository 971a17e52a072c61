//! DRM (`drm/drm.h`, `drm/drm_mode.h`): the PRIME import of a dma-buf as a GEM handle
//! and the KMS framebuffer calls that scan it out. Written here (only what peerdma uses).

use rustix::ioctl::{opcode, Opcode};

/// `DRM_IOCTL_PRIME_FD_TO_HANDLE` / `HANDLE_TO_FD` argument.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct drm_prime_handle {
    /// GEM handle (out for FD_TO_HANDLE, in for HANDLE_TO_FD).
    pub handle: u32,
    /// `DRM_CLOEXEC` / `DRM_RDWR` for HANDLE_TO_FD; 0 otherwise.
    pub flags: u32,
    /// dma-buf fd (in for FD_TO_HANDLE, out for HANDLE_TO_FD).
    pub fd: i32,
}
const _: () = assert!(size_of::<drm_prime_handle>() == 12);

/// `DRM_IOCTL_GEM_CLOSE` argument: drops a GEM handle (and the import it holds).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct drm_gem_close {
    /// The handle to close.
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
}
const _: () = assert!(size_of::<drm_gem_close>() == 8);

/// `DRM_IOCTL_MODE_ADDFB2` argument: a framebuffer of up to 4 planes over GEM handles.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct drm_mode_fb_cmd2 {
    /// Out: the new framebuffer id.
    pub fb_id: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// DRM fourcc pixel format (e.g. XR24).
    pub pixel_format: u32,
    /// `DRM_MODE_FB_INTERLACED`, `DRM_MODE_FB_MODIFIERS`.
    pub flags: u32,
    /// GEM handle per plane (0 = plane unused).
    pub handles: [u32; 4],
    /// Bytes per line, per plane.
    pub pitches: [u32; 4],
    /// Byte offset of each plane in its buffer.
    pub offsets: [u32; 4],
    /// Format modifier per plane (read only with `DRM_MODE_FB_MODIFIERS`).
    pub modifier: [u64; 4],
}
const _: () = assert!(size_of::<drm_mode_fb_cmd2>() == 104);

/// A damage rectangle (`x2`/`y2` exclusive), as passed to `DRM_IOCTL_MODE_DIRTYFB`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct drm_clip_rect {
    /// Left edge.
    pub x1: u16,
    /// Top edge.
    pub y1: u16,
    /// Right edge (exclusive).
    pub x2: u16,
    /// Bottom edge (exclusive).
    pub y2: u16,
}
const _: () = assert!(size_of::<drm_clip_rect>() == 8);

/// `DRM_IOCTL_MODE_DIRTYFB` argument: tells the driver which parts of a framebuffer
/// changed (virtio-gpu then transfers and flushes them to the host).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct drm_mode_fb_dirty_cmd {
    /// The framebuffer.
    pub fb_id: u32,
    /// `DRM_MODE_FB_DIRTY_ANNOTATE_*` or 0.
    pub flags: u32,
    /// Fill colour for `DRM_MODE_FB_DIRTY_ANNOTATE_FILL`.
    pub color: u32,
    /// Number of rectangles at `clips_ptr` (0 = the whole framebuffer).
    pub num_clips: u32,
    /// User pointer to `num_clips` [`drm_clip_rect`]s.
    pub clips_ptr: u64,
}
const _: () = assert!(size_of::<drm_mode_fb_dirty_cmd>() == 24);

/// `drm_prime_handle.flags`: the exported dma-buf fd is close-on-exec (`O_CLOEXEC`).
pub const DRM_CLOEXEC: u32 = rustix::fs::OFlags::CLOEXEC.bits();
/// `drm_prime_handle.flags`: the exported dma-buf fd allows CPU writes (`O_RDWR`).
pub const DRM_RDWR: u32 = rustix::fs::OFlags::RDWR.bits();

/// `drm_mode_fb_cmd2.flags`: interlaced framebuffer.
pub const DRM_MODE_FB_INTERLACED: u32 = 1 << 0;
/// `drm_mode_fb_cmd2.flags`: `modifier[]` is valid.
pub const DRM_MODE_FB_MODIFIERS: u32 = 1 << 1;
/// `drm_mode_fb_dirty_cmd.flags`: the clips come in pairs (copy source, destination).
pub const DRM_MODE_FB_DIRTY_ANNOTATE_COPY: u32 = 0x01;
/// `drm_mode_fb_dirty_cmd.flags`: the clips were filled with `color`.
pub const DRM_MODE_FB_DIRTY_ANNOTATE_FILL: u32 = 0x02;
/// Every flag `DRM_IOCTL_MODE_DIRTYFB` accepts.
pub const DRM_MODE_FB_DIRTY_FLAGS: u32 = 0x03;
/// Most rectangles one `DRM_IOCTL_MODE_DIRTYFB` call accepts.
pub const DRM_MODE_FB_DIRTY_MAX_CLIPS: u32 = 256;

/// The ioctl type byte of DRM (`'d'`).
pub const DRM_IOCTL_BASE: u8 = b'd';
/// Closes a GEM handle ([`drm_gem_close`]).
pub const DRM_IOCTL_GEM_CLOSE: Opcode = opcode::write::<drm_gem_close>(DRM_IOCTL_BASE, 0x09);
/// Exports a GEM handle as a dma-buf fd ([`drm_prime_handle`]).
pub const DRM_IOCTL_PRIME_HANDLE_TO_FD: Opcode =
    opcode::read_write::<drm_prime_handle>(DRM_IOCTL_BASE, 0x2d);
/// Imports a dma-buf fd as a GEM handle ([`drm_prime_handle`]); this is where a driver
/// that cannot attach a peer-to-peer, revocable buffer fails.
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: Opcode =
    opcode::read_write::<drm_prime_handle>(DRM_IOCTL_BASE, 0x2e);
/// Removes a framebuffer (argument: `*mut u32` framebuffer id).
pub const DRM_IOCTL_MODE_RMFB: Opcode = opcode::read_write::<u32>(DRM_IOCTL_BASE, 0xAF);
/// Flushes damaged framebuffer areas ([`drm_mode_fb_dirty_cmd`]).
pub const DRM_IOCTL_MODE_DIRTYFB: Opcode =
    opcode::read_write::<drm_mode_fb_dirty_cmd>(DRM_IOCTL_BASE, 0xB1);
/// Creates a framebuffer over GEM handles ([`drm_mode_fb_cmd2`]).
pub const DRM_IOCTL_MODE_ADDFB2: Opcode =
    opcode::read_write::<drm_mode_fb_cmd2>(DRM_IOCTL_BASE, 0xB8);
