//! One error contract for every peerdma tool: a failure is a stable machine `kind`
//! (snake_case), a `message` in the user's words (errno names, not "os error 22"; each
//! thing said once), the `fix` (said once: the tool's flags where the tool knows them,
//! else the library's), the [`Exit`] status, and whatever was done so far. Under
//! `--json` it is printed on stdout as
//!
//! ```json
//! {"error":{"kind":"no_such_device","message":"…","fix":"…"|null}, …partial report…}
//! ```
//!
//! and always, as text, on stderr (`TOOL: error: MESSAGE` and `  fix: FIX`).

use serde_json::{Map, Value};

use crate::exit::Exit;
use peerdma_copy::CopyError;

/// Splits a message at its first `; fix: ` into what went wrong and the fix: for the
/// exporter's and importer's errors, which give their fix only inside their message. A
/// copy error gives both typed ([`CopyError::what`], [`CopyError::fix`]) and is not
/// read back.
pub fn split_fix(message: &str) -> (&str, Option<&str>) {
    match message.split_once("; fix: ") {
        Some((what, fix)) => (what, Some(fix)),
        None => (message, None),
    }
}

/// A refusal the tool makes itself: of the command line after clap has parsed it
/// (flags that contradict each other or would be ignored: [`Exit::Usage`]), or of a
/// command this build lacks ([`Exit::CouldNotRun`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Stable machine name (`conflicting_flags`, `flag_not_applicable`, …).
    pub kind: &'static str,
    /// What is wrong, naming the flags.
    pub message: String,
    /// What to do.
    pub fix: Option<String>,
    /// The status it ends with.
    pub exit: Exit,
}

/// A usage [`Refusal`] as an `anyhow::Error`, for `?` in the binaries.
pub fn usage(kind: &'static str, message: impl Into<String>, fix: Option<&str>) -> anyhow::Error {
    refusal(kind, message, fix, Exit::Usage)
}

/// A [`Refusal`] ending with `exit`, as an `anyhow::Error`.
pub fn refusal(
    kind: &'static str,
    message: impl Into<String>,
    fix: Option<&str>,
    exit: Exit,
) -> anyhow::Error {
    Refusal {
        kind,
        message: message.into(),
        fix: fix.map(str::to_string),
        exit,
    }
    .into()
}

/// A failure as the tools report it.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Stable machine name of what went wrong.
    pub kind: String,
    /// What went wrong, in the user's words, without the fix.
    pub message: String,
    /// What to do, said once.
    pub fix: Option<String>,
    /// The status the process ends with.
    pub exit: Exit,
    /// What was done so far (bytes, seed, sides, …), merged into the JSON object
    /// beside `error`.
    pub details: Map<String, Value>,
}

impl Failure {
    /// A failure of `kind` with `message` (which may still carry a `; fix: ` tail:
    /// it is split off and becomes the fix unless `fix` is given).
    pub fn new(kind: &str, message: &str, fix: Option<String>, exit: Exit) -> Failure {
        let message = user_words(message);
        let (what, library_fix) = split_fix(&message);
        Failure {
            kind: kind.to_string(),
            message: what.to_string(),
            fix: fix.or_else(|| library_fix.map(str::to_string)),
            exit,
            details: Map::new(),
        }
    }

    /// The failure an error chain stands for: its kind from the first typed error in
    /// the chain (a [`Refusal`], a [`CopyError`], an exporter or iommufd error, an
    /// I/O error), its exit status (usage 2, data differs 1, else could not run 3).
    pub fn from_error(e: &anyhow::Error) -> Failure {
        let text = chain_text(e);
        for cause in e.chain() {
            if let Some(r) = cause.downcast_ref::<Refusal>() {
                return Failure::new(r.kind, &text, r.fix.clone(), r.exit);
            }
            if let Some(c) = cause.downcast_ref::<CopyError>() {
                let exit = if c.data_differs() {
                    Exit::DataDiffers
                } else if c.is_usage() {
                    Exit::Usage
                } else {
                    Exit::CouldNotRun
                };
                // The copy's own errors give their fix typed; read it, not the message.
                let outermost = e.chain().next().is_some_and(|first| {
                    first
                        .downcast_ref::<CopyError>()
                        .is_some_and(|first| std::ptr::eq(first, c))
                });
                return match c.fix() {
                    Some(fix) if c.is_own() && outermost => {
                        Failure::new(c.kind(), &c.what(), Some(fix), exit)
                    }
                    _ => Failure::new(c.kind(), &text, None, exit),
                };
            }
            if let Some(x) = cause.downcast_ref::<peerdma_exporter::Error>() {
                let f = Failure::new(x.kind(), &text, None, Exit::CouldNotRun);
                return match x.errno() {
                    Some(errno) => f.with("errno", errno_name(errno.raw_os_error())),
                    None => f,
                };
            }
            if let Some(x) = cause.downcast_ref::<peerdma_exporter::posted::FeatureError>() {
                return Failure::new(x.kind(), &text, None, Exit::CouldNotRun)
                    .with("errno", errno_name(x.errno().raw_os_error()));
            }
            if let Some(x) = cause.downcast_ref::<peerdma_exporter::posted::HeldError>() {
                let f = Failure::new(x.kind(), &text, None, Exit::CouldNotRun);
                return match x {
                    peerdma_exporter::posted::HeldError::Feature(e) => {
                        f.with("errno", errno_name(e.errno().raw_os_error()))
                    }
                    _ => f,
                };
            }
            if let Some(x) = cause.downcast_ref::<peerdma_host::HostError>() {
                let f = Failure::new(x.kind(), &text, None, Exit::CouldNotRun);
                return match x.errno() {
                    Some(errno) => f.with("errno", errno_name(errno.raw_os_error())),
                    None => f,
                };
            }
            if let Some(x) = cause.downcast_ref::<peerdma_importer::iommufd::Error>() {
                return Failure::new(x.kind(), &text, None, Exit::CouldNotRun);
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                let f = Failure::new("io", &text, None, Exit::CouldNotRun);
                return match io.raw_os_error() {
                    Some(n) => f.with("errno", errno_name(n)),
                    None => f,
                };
            }
        }
        Failure::new("failed", &text, None, Exit::CouldNotRun)
    }

    /// Adds `key: value` to what the JSON reports beside `error`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Failure {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// The JSON object: `{"error":{"kind","message","fix"}, …details}`.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert(
            "error".into(),
            serde_json::json!({
                "kind": self.kind,
                "message": self.message,
                "fix": self.fix,
            }),
        );
        for (k, v) in &self.details {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(obj)
    }

    /// The text for stderr: `TOOL: error: MESSAGE`, then `  fix: FIX` where there is one.
    pub fn text(&self, tool: &str) -> String {
        match &self.fix {
            Some(fix) => format!("{tool}: error: {}\n  fix: {fix}", self.message),
            None => format!("{tool}: error: {}", self.message),
        }
    }

    /// Reports the failure (JSON on stdout under `json`, text on stderr always) and
    /// returns the exit status.
    pub fn report(&self, tool: &str, json: bool) -> Exit {
        if json {
            println!("{}", self.to_json());
        }
        eprintln!("{}", self.text(tool));
        self.exit
    }
}

/// Ends the process for a command line clap refused: `--help` and `--version` print
/// and exit 0 as clap does; a usage error is printed by clap on stderr and, under
/// `json`, as the error object on stdout, with [`Exit::Usage`].
pub fn clap_exit(e: clap::Error, json: bool) -> std::process::ExitCode {
    use clap::error::ErrorKind as K;
    let kind = match e.kind() {
        K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        K::InvalidValue | K::ValueValidation | K::InvalidUtf8 => "invalid_value",
        K::UnknownArgument | K::InvalidSubcommand => "unknown_argument",
        K::ArgumentConflict => "conflicting_flags",
        K::MissingRequiredArgument | K::MissingSubcommand => "missing_argument",
        K::NoEquals | K::TooManyValues | K::TooFewValues | K::WrongNumberOfValues => {
            "wrong_number_of_values"
        }
        _ => "usage",
    };
    if json {
        println!(
            "{}",
            Failure::new(
                kind,
                &clap_message(&e),
                Some("see --help".into()),
                Exit::Usage
            )
            .to_json()
        );
    }
    let _ = e.print();
    Exit::Usage.into()
}

/// Clap's error as one line: the message and what it lists (`… not provided: <SRC>,
/// <DST>`), without the usage and help lines that follow.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first
    } else if first.ends_with(':') {
        format!("{first} {}", rest.join(", "))
    } else {
        format!("{first}: {}", rest.join(", "))
    }
}

/// An error and its causes, `outer: inner: …`, each said once: a cause whose text the
/// message already holds (an error that prints its source, as `{path}: {source}` does)
/// is not repeated, and the fix (`; fix: `) of a cause inside another message is
/// dropped in favour of the outermost one.
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut fix: Option<String> = None;
    for cause in e.chain() {
        let full = cause.to_string();
        let (what, its_fix) = split_fix(&full);
        if fix.is_none() {
            fix = its_fix.map(str::to_string);
        }
        if text.contains(what) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(what);
    }
    match fix {
        Some(fix) => format!("{text}; fix: {fix}"),
        None => text,
    }
}

// `EINVAL` for 22 (`errno 99999` for a number without a name).
use peerdma_host::errno_name_raw as errno_name;

/// A message in the user's words, each thing once: Rust's `(os error 22)` becomes
/// `(EINVAL)`, and a part repeated right after itself (`0000:00:1f.2: 0000:00:1f.2:
/// …`, `reading X: reading X: …`) is said once.
pub fn user_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("(os error ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "(os error ".len()..];
        match tail.split_once(')') {
            Some((num, after)) if num.parse::<i32>().is_ok() => {
                out.push('(');
                out.push_str(&errno_name(num.parse().unwrap_or_default()));
                out.push(')');
                rest = after;
            }
            _ => {
                out.push_str("(os error ");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    let mut parts: Vec<&str> = Vec::new();
    for part in out.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clap_error_is_one_line_with_what_it_lists() {
        let e = clap::Command::new("t")
            .arg(clap::Arg::new("src").required(true).value_name("SRC"))
            .arg(clap::Arg::new("dst").required(true).value_name("DST"))
            .try_get_matches_from(["t"])
            .unwrap_err();
        assert_eq!(
            clap_message(&e),
            "the following required arguments were not provided: <SRC>, <DST>"
        );
    }

    #[test]
    fn the_fix_is_split_off_once() {
        assert_eq!(
            split_fix("BAR2 is gone; fix: rebind it; then retry"),
            ("BAR2 is gone", Some("rebind it; then retry"))
        );
        assert_eq!(split_fix("no fix here"), ("no fix here", None));
    }

    #[test]
    fn a_copy_errors_kind_message_and_fix_are_its_typed_ones() {
        let e = anyhow::Error::from(CopyError::ZeroSize);
        let f = Failure::from_error(&e);
        assert_eq!(f.kind, "zero_size");
        assert_eq!(f.message, "the copy size is 0: nothing to copy");
        assert_eq!(f.fix.as_deref(), Some("give a size such as 1 MiB"));
        assert_eq!(f.exit, Exit::Usage);
        // Under a context the chain is said as a whole, with the copy's fix once.
        let f = Failure::from_error(&e.context("copying"));
        assert_eq!(f.message, "copying: the copy size is 0: nothing to copy");
        assert_eq!(f.fix.as_deref(), Some("give a size such as 1 MiB"));
    }

    #[test]
    fn os_errors_become_errno_names_and_doubled_parts_are_said_once() {
        assert_eq!(
            user_words("0000:00:1f.2: 0000:00:1f.2: mmap failed: Invalid argument (os error 22)"),
            "0000:00:1f.2: mmap failed: Invalid argument (EINVAL)"
        );
        assert_eq!(
            user_words("reading /x: reading /x: No such file or directory (os error 2)"),
            "reading /x: No such file or directory (ENOENT)"
        );
        assert_eq!(user_words("(os error x)"), "(os error x)");
        assert_eq!(errno_name(22), "EINVAL");
        assert_eq!(errno_name(99999), "errno 99999");
    }

    #[test]
    fn a_failure_says_its_fix_once_and_prints_one_json_shape() {
        let e = anyhow::Error::from(CopyError::ZeroSize);
        let f = Failure::from_error(&e);
        assert_eq!(f.kind, "zero_size");
        assert_eq!(f.exit, Exit::Usage, "a zero size is the request's fault");
        assert!(!f.message.contains("fix"), "{}", f.message);
        assert_eq!(f.fix.as_deref(), Some("give a size such as 1 MiB"));
        let v = f.clone().with("seed", 7).to_json();
        assert_eq!(v["error"]["kind"], "zero_size");
        assert_eq!(v["seed"], 7);
        assert_eq!(f.text("p2pcopy").matches("fix").count(), 1);
        let e = anyhow::Error::from(CopyError::BadPeerPort {
            peer: "rdma://10.0.0.2:0".into(),
            port: "0".into(),
        });
        assert_eq!(
            Failure::from_error(&e).exit,
            Exit::Usage,
            "port 0 is the request's fault"
        );

        let e = anyhow::Error::from(CopyError::Mismatch {
            first: 8,
            count: 1,
            detail: None,
        });
        assert_eq!(Failure::from_error(&e).exit, Exit::DataDiffers);

        let e = usage(
            "conflicting_flags",
            "--verify and --no-verify",
            Some("give one"),
        );
        let f = Failure::from_error(&e);
        assert_eq!(
            (f.kind.as_str(), f.exit),
            ("conflicting_flags", Exit::Usage)
        );
        assert_eq!(f.to_json()["error"]["fix"], "give one");

        let e = anyhow::Error::from(std::io::Error::from_raw_os_error(2)).context("reading /x");
        let f = Failure::from_error(&e);
        assert_eq!(f.kind, "io");
        assert_eq!(f.details["errno"], "ENOENT");
        assert!(
            f.message.ends_with("(ENOENT)") && !f.message.contains("os error"),
            "{}",
            f.message
        );
        assert!(Failure::from_error(&anyhow::anyhow!("x")).fix.is_none());

        // A cause the message already printed is not repeated, in the message or the fix.
        #[derive(Debug, thiserror::Error)]
        #[error("reading /p: {source}; fix: mount /proc")]
        struct Reading {
            #[source]
            source: std::io::Error,
        }
        let e = anyhow::Error::from(Reading {
            source: std::io::Error::from_raw_os_error(2),
        });
        let f = Failure::from_error(&e);
        assert_eq!(f.message, "reading /p: No such file or directory (ENOENT)");
        assert_eq!(f.fix.as_deref(), Some("mount /proc"));
    }
}
