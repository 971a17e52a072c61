//! Raw Linux 7.2 kernel ABI for peerdma: `repr(C)` argument structs, flag values and
//! ioctl opcodes for VFIO, iommufd, dma-buf, udmabuf, DRM and PCI configuration space,
//! the NVMe controller registers and queue entries ([`nvme`], from the NVMe spec), and
//! the Intel 82576 (igb) registers and descriptors ([`igb`], from its datasheet).
//!
//! Each module is named after the kernel area whose user-space header it mirrors. Items
//! keep their kernel spelling so that a reader can grep the kernel for them. Structs that
//! `vfio-bindings` 0.7 and `iommufd-bindings` 0.2 carry correctly for 7.2 are re-exported
//! from those crates; everything else is written here. Ioctl opcodes are
//! [`rustix::ioctl::Opcode`] constants (neither bindings crate gives usable ones).
//!
//! The crate holds no logic except `flex`, the builder for variable-length ioctl
//! arguments (a fixed header followed by an array), and `ioctl`, the typed call
//! patterns that bind each opcode to its argument; they are the only places with
//! `unsafe`.
//!
//! Feature `vfio` (default) holds the VFIO, iommufd and udmabuf modules and the ioctl
//! layer, which need the bindings crates; without it only [`pci`], [`nvme`], [`igb`],
//! [`dma_buf`] and [`drm`] remain (plain constants and structs, no dependency but
//! `rustix`).
//!
//! The layout of every struct, every constant and every opcode here is checked against
//! the real 7.2 headers by `tests/tests/layout.rs` in `peerdma-testbed`.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![allow(non_camel_case_types)]

pub mod ahead;
pub mod dma_buf;
pub mod drm;
#[cfg(feature = "vfio")]
pub mod flex;
pub mod igb;
#[cfg(feature = "vfio")]
pub mod ioctl;
#[cfg(feature = "vfio")]
pub mod iommufd;
pub mod nvme;
pub mod pci;
#[cfg(feature = "vfio")]
pub mod udmabuf;
#[cfg(feature = "vfio")]
pub mod vfio;

pub use rustix::ioctl::Opcode;

/// Zero-sized marker for a C flexible array member (`T name[]`) at the end of a struct.
/// Shared by the structs re-exported from `vfio-bindings` and those defined here; build
/// such arguments with [`flex::FlexBuf`] rather than by hand.
#[cfg(feature = "vfio")]
pub use vfio_bindings::bindings::vfio::__IncompleteArrayField;
