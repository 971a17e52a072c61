//! The JSON this program prints: one line per check ([`emit`]), and how results,
//! errors and states are written into it.

use anyhow::Result;
use peerdma_exporter::{DmaBuf, DmaRange, Error, RevokeEvent};
use peerdma_testbed::manifest::ManifestDevice;
use serde_json::{json, Map, Value};

/// Prints one JSON line.
pub(crate) fn emit(
    scenario: &str,
    check: &str,
    access: &str,
    dev: Option<&ManifestDevice>,
    fields: Value,
) {
    let mut m = Map::new();
    m.insert("scenario".into(), scenario.into());
    m.insert("check".into(), check.into());
    m.insert("access".into(), access.into());
    if let Some(d) = dev {
        m.insert("role".into(), d.role.clone().into());
        m.insert("bdf".into(), d.bdf.clone().into());
    }
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    println!("{}", Value::Object(m));
}

/// The kernel's name of an errno (`EINVAL`; `errno N` for one without a name).
pub(crate) use peerdma_host::errno_name;

/// The variant name of an error (`RangeUnaligned`, `Export`, ...); for a host error
/// the exporter wraps (`Error::Host`), the host error's own (`NoSuchDevice`).
pub(crate) fn variant(e: &Error) -> String {
    let debug = match e {
        Error::Host(h) => format!("{h:?}"),
        e => format!("{e:?}"),
    };
    debug
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// An error as JSON: variant, errno, whether the library predicted it, the message.
pub(crate) fn err_json(e: &Error) -> Value {
    json!({
        "ok": false,
        "variant": variant(e),
        "errno": e.errno().map(errno_name),
        "predicted": e.is_predicted(),
        "message": e.to_string(),
    })
}

/// An export result as JSON.
pub(crate) fn export_json(r: &Result<DmaBuf, Error>) -> Value {
    match r {
        Ok(b) => json!({"ok": true, "size": b.size()}),
        Err(e) => err_json(e),
    }
}

pub(crate) fn state_json<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(s) => format!("{s:?}").into(),
        Err(e) => format!("error: {e}").into(),
    }
}

pub(crate) fn ranges_json(ranges: &[DmaRange]) -> Value {
    if ranges.len() > 4 {
        return json!({"count": ranges.len()});
    }
    ranges
        .iter()
        .map(|r| json!([r.offset, r.length]))
        .collect::<Vec<_>>()
        .into()
}

pub(crate) fn unit_json(r: Result<(), Error>) -> Value {
    match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => err_json(&e),
    }
}

pub(crate) fn event_json(e: &RevokeEvent) -> Value {
    match e {
        RevokeEvent::Revoked { generation, reason } => {
            json!({"kind": "revoked", "generation": generation, "reason": format!("{reason:?}")})
        }
        RevokeEvent::Restored { generation } => {
            json!({"kind": "restored", "generation": generation})
        }
    }
}

pub(crate) fn rounded(v: f64) -> Value {
    v.round().into()
}
