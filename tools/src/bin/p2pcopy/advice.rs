//! A library error as p2pcopy reports it: its fix said in p2pcopy's flags where the
//! library's fix needs one, and what the copy had done (sides, seed, bytes, the
//! mismatch) in the report.

use peerdma_copy::{CopyError, Side, SpanField, Unavailable};
use peerdma_tools::failure::Failure;

use crate::flags::Cli;

/// The failure `e` as p2pcopy reports it: the fix in its flags where it has them, and
/// what the copy had done (sides, seed, bytes, the mismatch).
pub(crate) fn failure(cli: &Cli, e: &anyhow::Error) -> Failure {
    let mut f = Failure::from_error(e);
    f = f.with("src", cli.src.to_string());
    if let Some(dst) = &cli.dst {
        f = f.with("dst", dst.to_string());
    }
    let Some(c) = e.downcast_ref::<CopyError>() else {
        return f;
    };
    if let Some(flags) = advice(c, c.fix().as_deref()) {
        f.fix = Some(flags);
    }
    let mut c = c;
    if let CopyError::DmaFaulted { outcome, .. } = c {
        c = outcome;
    }
    match c {
        CopyError::Mismatch { first, count, .. } | CopyError::PeerMismatch { first, count, .. } => {
            let detail = match c {
                CopyError::Mismatch { detail, .. } => detail.as_deref(),
                _ => None,
            };
            if let Some(seed) = cli.used_seed.get() {
                // The library's message names the seed where its detail has it.
                if detail.and_then(|d| d.seed).is_none() {
                    f.message.push_str(&format!(" (pattern seed {seed})"));
                }
                f = f.with("seed", *seed);
            }
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            f = f.with("verified", false).with(
                "mismatch",
                serde_json::json!({
                    "first_offset": first,
                    "count": count,
                    "expected": detail.map(|d| hex(&d.expected)),
                    "actual": detail.map(|d| hex(&d.actual)),
                    "expected_from": detail.map(|d| if d.seed.is_some() {
                        "pattern"
                    } else {
                        "namespace-read-back"
                    }),
                }),
            );
        }
        CopyError::FaultedAfterAll { .. } => {
            f = f.with("verified", false);
            if let Some(seed) = cli.used_seed.get() {
                f = f.with("seed", *seed);
            }
        }
        CopyError::Revoked {
            done, total, bdf, ..
        } => {
            f = f
                .with("verified", false)
                .with("revoked", bdf.to_string())
                .with("bytes_done", *done)
                .with("bytes_total", *total);
            if let Some(seed) = cli.used_seed.get() {
                f = f.with("seed", *seed);
            }
        }
        _ => {}
    }
    f
}

/// The fix of a library error in p2pcopy's flags (`fix` is the library's own, in its
/// words), said once; `None` where the library's fix needs no flag.
pub(crate) fn advice(e: &CopyError, fix: Option<&str>) -> Option<String> {
    let side = |s: &Side| match s {
        Side::Src => "src",
        Side::Dst => "dst",
    };
    Some(match e {
        CopyError::BarTooSmall { side: s, .. } => {
            let s = side(s);
            format!("lower --size or --{s}-offset, or pick a larger BAR with --{s}-bar")
        }
        CopyError::BarUnusable { .. } | CopyError::NoUsableBar { .. } => {
            "leave out --src-bar/--dst-bar to use the largest usable BAR".to_string()
        }
        CopyError::Unaligned { field, .. } => {
            let flag = match field {
                SpanField::SrcOffset => "--src-offset",
                SpanField::DstOffset => "--dst-offset",
                SpanField::Size => "--size",
            };
            match fix {
                Some(fix) => format!("{flag}: {fix}"),
                None => flag.to_string(),
            }
        }
        CopyError::ZeroSize => "--size is 0; give e.g. --size 1M".to_string(),
        CopyError::RegisterBar { side: s, .. } => format!(
            "pick another BAR with --{}-bar, or --allow-register-bar if it is plain memory",
            side(s)
        ),
        CopyError::ZeroIterations => "give --iterations 1 or more".to_string(),
        CopyError::TransportUnavailable { why, .. } => match why {
            Unavailable::NoIommufd => "use --engine cpu".to_string(),
            Unavailable::EngineIsEndpoint { engine } => {
                format!("--via {engine} is also SRC or DST; name another device with --via")
            }
            Unavailable::NoEngine => {
                "bind one to vfio-pci and name it with --via BDF, or use --engine cpu".to_string()
            }
            Unavailable::RdmaNeedsPeer => {
                "run `p2pcopy --serve DST` on the receiving side and give rdma://HOST:PORT as DST, \
                 or use --engine cpu or --engine dma"
                    .to_string()
            }
            Unavailable::RdmaNotBuilt => {
                "reinstall with `cargo install --path tools --features rdma` (needs \
                 libibverbs-dev and librdmacm-dev)"
                    .to_string()
            }
            Unavailable::RemoteNeedsRdma => "use --engine rdma (or auto)".to_string(),
            Unavailable::NvmeNeedsIommufd => return None,
        },
        _ => return None,
    })
}

/// A library error kept typed, so that the report can give its kind and its fix in
/// p2pcopy's flags ([`failure`]).
pub(crate) fn with_advice(e: CopyError) -> anyhow::Error {
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_fixes_get_the_flags_that_carry_them_out() {
        let unaligned = CopyError::Unaligned {
            field: SpanField::DstOffset,
            value: 0x123,
            page: 4096,
            suggestions: vec![0, 4096],
        };
        assert_eq!(
            advice(&unaligned, Some("use 0x0 or 0x1000")).as_deref(),
            Some("--dst-offset: use 0x0 or 0x1000")
        );
        let via = CopyError::TransportUnavailable {
            transport: "dma",
            why: Unavailable::EngineIsEndpoint {
                engine: "00:11.0".parse().unwrap(),
            },
        };
        assert!(advice(&via, None)
            .unwrap()
            .contains("--via 0000:00:11.0 is also SRC or DST"));
        let no_iommufd = CopyError::TransportUnavailable {
            transport: "dma",
            why: Unavailable::NoIommufd,
        };
        assert_eq!(
            advice(&no_iommufd, None).as_deref(),
            Some("use --engine cpu")
        );
        let small = CopyError::BarTooSmall {
            bdf: "00:10.0".parse().unwrap(),
            side: Side::Src,
            bar: 2,
            bar_size: 1 << 20,
            offset: 0,
            size: 2 << 20,
        };
        assert!(advice(&small, None).unwrap().contains("--src-bar"));
        let mismatch = CopyError::Mismatch {
            first: 0,
            count: 1,
            detail: None,
        };
        assert!(advice(&mismatch, None).is_none());
    }
}
