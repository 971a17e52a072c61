//! What p2pcopy prints about a finished copy, whatever its kind: the rate, the time,
//! the IOMMU line, and the one JSON schema every report shares.

/// A throughput in the unit that suits it.
pub(crate) fn rate(gbps: f64) -> String {
    if gbps >= 0.1 {
        format!("{gbps:.3} GB/s")
    } else if gbps * 1e3 >= 0.1 {
        format!("{:.2} MB/s", gbps * 1e3)
    } else {
        format!("{:.2} KB/s", gbps * 1e6)
    }
}

/// What the kernel log said about the engine's DMA during the copy.
pub(crate) fn iommu_line(faults: Option<u64>) -> String {
    match faults {
        Some(0) => "IOMMU: no fault logged for the engine during the copy".to_string(),
        Some(n) => format!(
            "IOMMU: warning: the kernel logged {n} fault(s) for the engine during the copy \
             (see dmesg), though every check passed"
        ),
        None => "IOMMU: faults not checked: the kernel log (/dev/kmsg) is unreadable here \
                 (CAP_SYSLOG needed under kernel.dmesg_restrict=1)"
            .to_string(),
    }
}

/// The time a summary gives: the copy alone (what the rate is computed from), and the
/// whole command's when filling, checking and opening took noticeably longer.
pub(crate) fn timing(copy: f64, wall: f64) -> String {
    if wall >= copy * 1.5 && wall - copy >= 0.05 {
        format!("{copy:.3} s of copying ({wall:.3} s in all, with opening, fill and check)")
    } else {
        format!("{copy:.3} s")
    }
}

/// Every copy report in one schema: the keys of a BAR → BAR report and of a report
/// with an NVMe or host side are the same (the ones a kind does not have are null),
/// each side has its `kind` (`bar`, `nvme`, `host`), and `wall_seconds` is the whole
/// command's time beside `seconds`, the copy's (fill and verify excluded).
pub(crate) fn one_schema(mut v: serde_json::Value, wall: f64) -> serde_json::Value {
    use serde_json::Value;
    const KEYS: &[&str] = &[
        "src",
        "dst",
        "engine",
        "path",
        "importer",
        "engine_reason",
        "via",
        "bytes",
        "iterations",
        "seconds",
        "wall_seconds",
        "gbps",
        "verified",
        "seed",
        "iommu_faults",
        "route",
        "iops",
        "queue_depth",
        "transfer_size",
        "data_pointer",
        "commands",
        "latency",
    ];
    let Value::Object(obj) = &mut v else {
        return v;
    };
    let storage = obj.contains_key("iops");
    for side in ["src", "dst"] {
        if let Some(Value::Object(s)) = obj.get_mut(side) {
            s.entry("kind").or_insert_with(|| "bar".into());
        }
    }
    if storage {
        obj.entry("engine").or_insert_with(|| "nvme".into());
    }
    obj.insert("wall_seconds".into(), wall.into());
    for k in KEYS {
        obj.entry(*k).or_insert(Value::Null);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_says_what_it_covers_and_reports_share_one_schema() {
        assert_eq!(timing(0.5, 0.52), "0.500 s");
        let t = timing(0.014, 6.2);
        assert!(
            t.starts_with("0.014 s of copying") && t.contains("6.200 s in all"),
            "{t}"
        );
        let bar = one_schema(
            serde_json::json!({"src": {"bdf": "a"}, "dst": {"bdf": "b"}, "engine": "cpu",
                               "seconds": 0.1}),
            0.3,
        );
        let nvme = one_schema(
            serde_json::json!({"src": {"kind": "nvme"}, "dst": {"kind": "bar"}, "iops": 1.0,
                               "seconds": 0.1}),
            0.3,
        );
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&bar), keys(&nvme));
        assert_eq!(bar["src"]["kind"], "bar");
        assert_eq!(nvme["engine"], "nvme");
        assert_eq!(bar["wall_seconds"], 0.3);
        assert!(bar["iops"].is_null());
    }
}
