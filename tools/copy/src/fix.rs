//! The fix of a failure, typed. Every copy error says what went wrong
//! ([`CopyError::what`](crate::CopyError::what)) and what to do
//! ([`CopyError::fix`](crate::CopyError::fix), [`Unavailable::fix`](crate::Unavailable::fix))
//! as two values; its message joins them as `WHAT; fix: FIX`, the convention every
//! peerdma library error keeps. A binary takes the two values; nothing here reads a
//! copy error's message back.
//!
//! The one exception is the crate-private `foreign`: the exporter's and the importer's
//! errors (the engines' and RDMA's too) give their fix only inside their message, so
//! where a copy error wraps one, or names one as a cause inside its own message, the
//! text is cut at its `; fix: ` there, and only there.

/// The exporter's and importer's errors, whose fix is only inside their message.
pub(crate) mod foreign {
    use std::fmt::Display;

    /// `e`'s message without its fix: what a message that names `e` as a cause
    /// inside its own says, so that "fix:" appears once, for the outer error.
    pub(crate) fn what(e: &dyn Display) -> String {
        let message = e.to_string();
        match message.split_once("; fix: ") {
            Some((what, _)) => what.to_string(),
            None => message,
        }
    }

    /// The fix `e`'s message gives, if it gives one.
    pub(crate) fn fix(e: &dyn Display) -> Option<String> {
        e.to_string()
            .split_once("; fix: ")
            .map(|(_, fix)| fix.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::foreign;
    use crate::{CopyError, Unavailable};

    #[test]
    fn a_foreign_message_is_cut_at_its_first_fix_once() {
        assert_eq!(
            foreign::what(&"BAR2 is gone; fix: rebind it; then retry"),
            "BAR2 is gone"
        );
        assert_eq!(
            foreign::fix(&"BAR2 is gone; fix: rebind it; then retry").as_deref(),
            Some("rebind it; then retry")
        );
        assert_eq!(foreign::what(&"no fix here"), "no fix here");
        assert_eq!(foreign::fix(&"no fix here"), None);
    }

    #[test]
    fn a_copy_errors_message_is_its_what_and_its_typed_fix() {
        let unavailable = CopyError::TransportUnavailable {
            transport: "dma",
            why: Unavailable::NoIommufd,
        };
        let errors = [
            CopyError::ZeroSize,
            CopyError::Mismatch {
                first: 0x10,
                count: 2,
                detail: None,
            },
            unavailable,
            CopyError::FaultedAfterAll { compared: true },
        ];
        for e in errors {
            let message = e.to_string();
            let what = e.what();
            assert!(!what.contains("fix:"), "{what}");
            match e.fix() {
                Some(fix) => assert_eq!(message, format!("{what}; fix: {fix}")),
                None => assert_eq!(message, what),
            }
            assert!(e.is_own());
        }
        assert_eq!(
            CopyError::ZeroIterations.fix().as_deref(),
            Some("give 1 or more")
        );
        assert_eq!(
            Unavailable::NoIommufd.fix(),
            "copy with the CPU through the BAR mmaps"
        );
    }
}
