//! One module per scenario; `main.rs` runs the ones asked for on one [`crate::rig::Rig`].

pub(crate) mod bar_to_host;
pub(crate) mod bench;
pub(crate) mod checked;
pub(crate) mod contract;
pub(crate) mod errors;
pub(crate) mod guard;
pub(crate) mod host_to_bar;
pub(crate) mod nic;
pub(crate) mod nic_wire;
pub(crate) mod revoke;
pub(crate) mod revoke_latency;
pub(crate) mod stock;
