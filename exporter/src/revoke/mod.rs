//! The revoke lifecycle of a device's dma-bufs, as the kernel drives it.
//!
//! vfio-pci revokes every live dma-buf of a device (importers get
//! invalidate_mappings, new maps fail with ENODEV) when memory decode goes off
//! (PCI_COMMAND Memory Space Enable cleared through the config region), on
//! `VFIO_DEVICE_RESET` and on an FLR written through config space, on a power
//! state change to D3hot (PMCSR), and for good when the device is closed. It
//! restores them when decode is on again (bit set, reset finished with decode
//! on, back to D0); importers must then map again.
//!
//! [`RevokeState`] is computed from the device itself: the Memory Space Enable
//! bit (the kernel tests its virtualized copy, which is what a read through the
//! config region returns) and the PMCSR power state. [`RevokeEvent`]s report
//! the changes this library causes, each revoke with a new generation number.
//!
//! - `state`: the types ([`RevokeState`], [`RevokeReason`], [`RevokeEvent`],
//!   [`PowerState`], [`ResetMethod`], [`ResetRecord`]) and the bookkeeping.
//! - `ops`: the [`Device`](crate::Device) operations that revoke and restore
//!   (memory decode, `VFIO_DEVICE_RESET`, FLR, power state) and report it.

mod ops;
mod state;

pub(crate) use state::{Generation, Lifecycle};
pub use state::{
    PowerState, ResetMethod, ResetRecord, RevokeEvent, RevokeReason, RevokeState, SubscriptionToken,
};
