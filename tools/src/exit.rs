//! The exit statuses every peerdma tool (`peerdma`, `p2pcopy`, `vulkan_interop`) ends
//! with, one meaning each, so that a script can tell "the bytes differ" from "it could
//! not run" without reading the output. The man pages' EXIT STATUS section is
//! [`MAN_TEXT`].

use std::process::ExitCode;

/// How a tool ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// It did what was asked (a copy: every byte verified, or not asked to verify).
    Ok = 0,
    /// A copy ran and the destination holds other bytes than the source sent.
    DataDiffers = 1,
    /// The command line is wrong: an unknown or malformed flag or value, flags that
    /// contradict each other or one that would be ignored. Nothing was opened.
    Usage = 2,
    /// It could not run (or stopped): a device, driver, kernel feature or permission
    /// is missing, the device was revoked, an engine failed.
    CouldNotRun = 3,
    /// `peerdma doctor`: it ran, and at least one check failed.
    ChecksFailed = 4,
}

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// The EXIT STATUS section of every tool's man page: (status, meaning).
pub const MAN_TEXT: &[(u8, &str)] = &[
    (
        0,
        "Success (a copy: every byte verified, or verification was not asked for).",
    ),
    (
        1,
        "A copy ran and the destination differs from the source (the report, or the \
         error under --json, gives the seed and the first differing offset).",
    ),
    (
        2,
        "Usage: an unknown, malformed, contradictory or ignored flag or value; nothing \
         was opened.",
    ),
    (
        3,
        "Could not run: a device, driver, kernel feature or permission is missing, the \
         device was revoked, or an engine failed (the error names the cause and the fix).",
    ),
    (4, "peerdma doctor ran and at least one check failed."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_one_meaning_in_the_man_text() {
        let codes: Vec<u8> = MAN_TEXT.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
        assert_eq!(Exit::DataDiffers.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::CouldNotRun.code(), 3);
        assert_eq!(Exit::ChecksFailed.code(), 4);
    }
}
