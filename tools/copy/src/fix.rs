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

#[cfg(test)]
mod tests {
    use super::*;

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
