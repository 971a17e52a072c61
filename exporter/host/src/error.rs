//! The error type of the host readers: sysfs, the P2P route, the kernel facts.
//!
//! Every variant names the thing (the BDF, the sysfs file) and says how to fix it.
//! Variants are sorted by name (`tests/tests/sorted_variants.rs` keeps them so).

use std::io;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::addr::Bdf;

/// The kernel's name of an errno as users read it in man pages (`EINVAL`), or
/// `errno N` for a number without a name: the one spelling every crate's messages
/// and the tools' JSON use.
pub fn errno_name(errno: Errno) -> String {
    errno_name_raw(errno.raw_os_error())
}

/// [`errno_name`] of a raw number (any `i32`, such as one read back from a message).
pub fn errno_name_raw(n: i32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(n));
    if name.starts_with('E') {
        name
    } else {
        format!("errno {n}")
    }
}

/// Result type of this crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// What can go wrong while reading what the host says about a PCI function or the
/// route between two.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// No PCI function has this address (sysfs has no directory for it).
    #[error("no PCI device {bdf}; fix: list devices with `peerdma list` or lspci -D")]
    NoSuchDevice {
        /// The address that was given.
        bdf: Bdf,
    },

    /// A P2P route was asked for between a bridge and another function: routes
    /// run between endpoints.
    #[error(
        "{bdf} is a {kind}, not an endpoint; \
         fix: name the devices themselves (peerdma list shows them), not the ports above them"
    )]
    NotAnEndpoint {
        /// The bridge.
        bdf: Bdf,
        /// What it is (`root port`, `switch downstream port` …).
        kind: &'static str,
    },

    /// A P2P route was asked for from a function to itself.
    #[error("{bdf} was named twice; fix: a peer-to-peer route needs two different devices")]
    RouteToItself {
        /// The function.
        bdf: Bdf,
    },

    /// Reading a sysfs attribute failed.
    #[error("reading {path}: {source}; fix: check that the device exists and sysfs is mounted", path = .path.display())]
    Sysfs {
        /// The file or link.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// A sysfs attribute has an unexpected format.
    #[error("{path}: value {value:?}: {reason}; fix: this is a kernel format change, report it", path = .path.display())]
    SysfsParse {
        /// The file or link.
        path: PathBuf,
        /// What it contained.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl HostError {
    /// The errno behind the error: ENOENT for a device sysfs does not list, the read's
    /// errno for a sysfs read; `None` for the rest (parse and request errors).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            HostError::NoSuchDevice { .. } => Some(Errno::NOENT),
            HostError::Sysfs { source, .. } => Errno::from_io_error(source),
            HostError::NotAnEndpoint { .. }
            | HostError::RouteToItself { .. }
            | HostError::SysfsParse { .. } => None,
        }
    }

    /// A stable, machine-readable name for this error: the variant in snake_case
    /// (`no_such_device`, `sysfs_parse`), for scripts that branch on the kind of
    /// failure instead of parsing the message.
    pub fn kind(&self) -> &'static str {
        match self {
            HostError::NoSuchDevice { .. } => "no_such_device",
            HostError::NotAnEndpoint { .. } => "not_an_endpoint",
            HostError::RouteToItself { .. } => "route_to_itself",
            HostError::Sysfs { .. } => "sysfs",
            HostError::SysfsParse { .. } => "sysfs_parse",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HostError;

    #[test]
    fn each_kind_is_its_variant_in_snake_case() {
        let src = include_str!("error.rs");
        let body = src
            .split_once("pub enum HostError {")
            .and_then(|(_, rest)| rest.split_once("\n}\n"))
            .map(|(body, _)| body)
            .expect("the HostError enum");
        let names: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .filter_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()).next())
            .collect();
        assert_eq!(names.len(), 5, "the scan found {names:?}");
        for name in names {
            let mut snake = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            let arm = format!("HostError::{name} {{ .. }} => \"{snake}\",");
            assert!(src.contains(&arm), "{name}: no kind {snake:?}");
        }
        let e = HostError::NoSuchDevice {
            bdf: "0e:00.0".parse().unwrap(),
        };
        assert_eq!(e.kind(), "no_such_device");
    }
}
