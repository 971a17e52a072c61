//! Shared pieces of the peerdma command-line tools (`peerdma`, `p2pcopy`).

#![deny(unsafe_code)]

pub mod args;
#[allow(unsafe_code)] // SIGPIPE's default disposition (one call)
pub mod cli;
pub mod doctor;
pub mod exit;
pub mod failure;
pub mod install;
pub mod route;
pub mod size;
#[cfg(test)]
mod size_fuzz;
