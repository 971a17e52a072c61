//! The convention every library error message keeps: what went wrong, then `; fix: `
//! and what to do. A message that embeds another error's text (as a cause inside its
//! own) takes the cause without its fix, so that "fix:" appears once, for the outer
//! error.

/// Splits a message at its first `; fix: ` into the part before and the fix.
pub fn split_fix(message: &str) -> (&str, Option<&str>) {
    match message.split_once("; fix: ") {
        Some((what, fix)) => (what, Some(fix)),
        None => (message, None),
    }
}

/// An error's message without its fix, for use as a cause inside another message.
pub fn cause(e: &dyn std::fmt::Display) -> String {
    split_fix(&e.to_string()).0.to_string()
}

/// An error's message followed by those of its sources (`: ` between them), leaving
/// out a source whose text the message already holds: most library errors embed their
/// cause ("{engine}: {source}") and expose it as their source too, so printing the
/// chain as it is would say that cause twice in one line.
pub fn message_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("engine 00:13.0: {source}")]
    struct Embeds {
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("00:13.0 is in use; fix: end that process")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("the copy failed")]
    struct Wraps {
        #[source]
        inner: Inner,
    }

    #[test]
    fn a_source_the_message_embeds_is_said_once() {
        let e = Embeds { source: Inner };
        assert_eq!(
            message_chain(&e),
            "engine 00:13.0: 00:13.0 is in use; fix: end that process"
        );
        // A source the message does not hold is still said.
        assert_eq!(
            message_chain(&Wraps { inner: Inner }),
            "the copy failed: 00:13.0 is in use; fix: end that process"
        );
    }

    #[test]
    fn the_fix_is_split_off_once() {
        assert_eq!(
            split_fix("BAR2 is gone; fix: rebind it; then retry"),
            ("BAR2 is gone", Some("rebind it; then retry"))
        );
        assert_eq!(split_fix("no fix here"), ("no fix here", None));
        assert_eq!(cause(&"a; fix: b"), "a");
    }
}
