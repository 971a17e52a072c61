//! The peerdma VM testbed: boots a real kernel under QEMU with emulated PCI devices behind
//! a vIOMMU, binds them to vfio-pci and runs the project's own binaries inside.

pub mod cache;
pub mod debian;
