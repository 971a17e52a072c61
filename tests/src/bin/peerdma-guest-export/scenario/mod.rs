//! One module per scenario; `main.rs` runs them in order for each device.

pub(crate) mod bench;
pub(crate) mod errors;
pub(crate) mod exports;
pub(crate) mod handover;
pub(crate) mod iommufd;
pub(crate) mod leaks;
pub(crate) mod mmap;
pub(crate) mod open;
pub(crate) mod oracle;
pub(crate) mod revoke;
