//! Import a dma-buf into a DRM device and scan it out (feature `drm`).
//!
//! A DRM driver that attaches dma-bufs **peer-to-peer and revocably** can take a
//! vfio-pci BAR dma-buf as a GEM object (`DRM_IOCTL_PRIME_FD_TO_HANDLE`) and show it
//! through KMS. In Linux 7.2 that is amdgpu, xe and virtio-gpu with blob resources
//! (no virgl 3D); vgem, i915 and nouveau attach statically and are refused by the
//! exporter with EOPNOTSUPP ([`peerdma_host::importers`] has the table and the source
//! lines).
//!
//! - [`Card`]: a DRM primary node opened by path or found by the GPU's PCI BDF in
//!   sysfs (never by card number), its driver and PRIME capabilities;
//! - [`Gem`]: an imported buffer, its GEM handle closed on drop;
//! - [`FbLayout`] and [`Framebuffer`]: width, height, format and pitch, checked
//!   against the buffer's size before `ADDFB2`;
//! - [`Scanout`]: a framebuffer shown on a connector (atomic where the driver
//!   offers it, legacy `SETCRTC` otherwise), the previous configuration restored on
//!   drop; [`Scanout::watch`] reports a revoked buffer and shows it again once the
//!   exporter restores it.
//!
//! Mapping a peer BAR goes through the kernel's P2P distance check
//! (`pci_p2pdma_distance`): an EINVAL import is explained with the route that
//! [`peerdma_host::sysfs::Sysfs::p2p_route`] computes, the same verdict `peerdma path`
//! prints.

mod card;
mod error;
mod framebuffer;
mod gem;
mod scanout;

pub use card::{Card, CardSpec};
pub use drm_fourcc::DrmFourcc;
pub use error::{errno_text, Error, Result};
pub use framebuffer::{parse_fourcc, FbLayout, Framebuffer};
pub use gem::Gem;
pub use scanout::{ModeSetting, Scanout, ScanoutEvent, ScanoutInfo};
