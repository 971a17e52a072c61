//! The peerdma VM testbed: boots a real kernel under QEMU with emulated PCI devices behind
//! a vIOMMU, binds them to vfio-pci and runs the project's own binaries inside.
//!
//! The host side ([`vm::Testbed`]) and the guest side ([`guest`], the same binary running
//! as PID 1 in the VM) talk through a scratch directory shared over 9p.

pub mod accel;
pub mod cache;
pub mod debian;
pub mod devices;
pub mod guest;
pub mod host;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod manifest;
pub mod pair;
pub mod pattern;
pub mod pcap;
pub mod process;
pub mod reports;
pub mod rng;
pub mod scratch;
pub mod udmabuf_emulation;
pub mod vm;
