//! The one harness every local copy runs under, whatever moves its bytes: the test
//! hooks' thread beside the copy, the step loop with progress and the revoke checks
//! between steps, the engine's IOMMU faults (which explain a failure, and fail a copy
//! that otherwise passed), and the revoke generations that turn a mismatch into the
//! revoke that caused it.
//!
//! What moves the bytes is a [`Transport`] (the CPU, a DMA engine, an NVMe stream).
//! Opening the sides, poisoning and filling them, and checking them after are the
//! caller's: each kind of copy has its own sides and its own check, and hands the
//! check's outcome to [`Harness::checked`].

use std::time::{Duration, Instant};

use peerdma_exporter::Device;

use peerdma_host::Bdf;

use super::faults::FaultWatch;
use super::transport::{Side, StepError, Transport};
use super::{CopyError, CopyWatch, Hooks, Progress};

/// The span a copy moves, and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    /// Bytes per iteration.
    pub(crate) size: u64,
    /// Bytes per step at most (the transport may take less: [`Transport::max_step`]).
    pub(crate) chunk: u64,
    /// How many times the span is moved.
    pub(crate) iterations: u32,
}

impl Span {
    /// Bytes to move in all.
    pub(crate) fn total(&self) -> u64 {
        self.size.saturating_mul(u64::from(self.iterations))
    }
}

/// One copy under way: its hooks, the devices they act on, the engine's fault watch.
pub(crate) struct Harness<'a, 'h> {
    hooks: &'a Hooks<'h>,
    /// The source's and the destination's devices, as the copy opened them, and their
    /// revoke generations when the harness started (`None`: a side is host memory, and
    /// the hooks do not run).
    sides: Option<[(&'a Device, u64); 2]>,
    faults: Option<FaultWatch>,
}

impl<'a, 'h> Harness<'a, 'h> {
    /// Starts a copy's harness: the revoke generations of `sides` (source, destination)
    /// are read now, and the kernel log is watched for `engine`'s IOMMU faults from now
    /// on (`None`: the CPU moves the bytes, no device's DMA to watch).
    pub(crate) fn start(
        hooks: &'a Hooks<'h>,
        sides: Option<(&'a Device, &'a Device)>,
        engine: Option<Bdf>,
    ) -> Harness<'a, 'h> {
        Harness {
            hooks,
            sides: sides.map(|(s, d)| [(s, s.revoke_generation()), (d, d.revoke_generation())]),
            faults: engine.map(FaultWatch::start),
        }
    }

    /// Moves `span` along `transport`, with the alongside hook (if any) running on its
    /// own thread until the last step ends, and `progress` told after each step. A
    /// revoked side becomes `revoked(side, bytes done before the step, total)`.
    ///
    /// Returns the time the steps took.
    ///
    /// # Errors
    ///
    /// The transport's, or the revoke; a mismatch or an engine error that the engine's
    /// IOMMU faults explain becomes [`CopyError::DmaFaulted`].
    pub(crate) fn drive(
        &mut self,
        transport: &mut dyn Transport,
        span: Span,
        progress: &mut dyn FnMut(Progress),
        revoked: &dyn Fn(Side, u64, u64) -> CopyError,
    ) -> Result<Duration, CopyError> {
        let step = span.chunk.min(transport.max_step()).max(1);
        let watch = CopyWatch::default();
        let hooks = self.hooks;
        let sides = self.sides;
        let start = Instant::now();
        let outcome = std::thread::scope(|s| {
            if let Some([(src, _), (dst, _)]) = sides {
                hooks.spawn(s, src, dst, step, &watch);
            }
            let mut on_step = |p: Progress| {
                watch.progress(p.done);
                progress(p);
            };
            let result = steps(transport, span, step, &mut on_step, revoked);
            // The hook ends once the copy does; the scope waits for it.
            watch.finish();
            result.map(|()| start.elapsed())
        });
        outcome.map_err(|e| self.explain(e))
    }

    /// `e`, or [`CopyError::DmaFaulted`] when the engine's IOMMU faults explain it
    /// (see [`FaultWatch::explain`]).
    pub(crate) fn explain(&mut self, e: CopyError) -> CopyError {
        match &mut self.faults {
            Some(w) => w.explain(e),
            None => e,
        }
    }

    /// The revoke generation of `side`'s device when the harness started and now, when
    /// it moved (the device was revoked, and maybe restored, since).
    pub(crate) fn generation_moved(&self, side: Side) -> Option<(u64, u64)> {
        let [src, dst] = self.sides?;
        let (device, before) = match side {
            Side::Src => src,
            Side::Dst => dst,
        };
        let now = device.revoke_generation();
        (now != before).then_some((before, now))
    }

    /// The outcome of the caller's check of the destination: a mismatch is the revoke
    /// `revoked_meanwhile` (given the harness and the mismatch) names, where it names one (a revoke and restore between two
    /// steps is not met by the copy: it is the cause, not "bytes differ"); any other
    /// failure as the engine's IOMMU faults explain it.
    ///
    /// # Errors
    ///
    /// As said.
    pub(crate) fn checked(
        &mut self,
        check: Result<(), CopyError>,
        revoked_meanwhile: impl FnOnce(&Self, &CopyError) -> Option<CopyError>,
    ) -> Result<(), CopyError> {
        match check {
            Ok(()) => Ok(()),
            Err(e @ CopyError::Mismatch { .. }) => {
                Err(revoked_meanwhile(self, &e).unwrap_or_else(|| self.explain(e)))
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Ends a copy that ran to its end: the IOMMU faults the kernel logged for the
    /// engine meanwhile (`None`: no engine, or the kernel log is unreadable).
    /// `compared`: whether the bytes were checked (and matched).
    ///
    /// # Errors
    ///
    /// [`CopyError::DmaFaulted`] with [`CopyError::FaultedAfterAll`] as its outcome
    /// when the engine faulted: such a copy never counts as verified.
    pub(crate) fn finish(mut self, compared: bool) -> Result<Option<u64>, CopyError> {
        match &mut self.faults {
            Some(w) => {
                w.finish(compared)?;
                Ok(w.count())
            }
            None => Ok(None),
        }
    }
}

/// Moves the span `span.iterations` times along `transport`, in steps of at most
/// `step` bytes, reporting progress after each step; a revoked side becomes
/// `revoked(side, done, total)`.
fn steps(
    transport: &mut dyn Transport,
    span: Span,
    step: u64,
    progress: &mut dyn FnMut(Progress),
    revoked: &dyn Fn(Side, u64, u64) -> CopyError,
) -> Result<(), CopyError> {
    let total = span.total();
    let mut done = 0;
    for _ in 0..span.iterations {
        let mut off = 0;
        while off < span.size {
            let n = step.min(span.size - off);
            transport
                .step(off, n, Progress { done, total })
                .map_err(|e| match e {
                    StepError::Revoked(side) => revoked(side, done, total),
                    StepError::Failed(e) => e,
                })?;
            off += n;
            done += n;
            progress(Progress { done, total });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::transport::TransportKind;
    use super::*;

    /// A transport that records its steps and stops as told.
    struct Script {
        max: u64,
        steps: Vec<(u64, u64)>,
        revoke_at: Option<(usize, Side)>,
        fail_at: Option<usize>,
    }

    impl Transport for Script {
        fn kind(&self) -> TransportKind {
            TransportKind::Dma
        }
        fn engine(&self) -> Option<String> {
            Some("script".into())
        }
        fn max_step(&self) -> u64 {
            self.max
        }
        fn step(&mut self, offset: u64, len: u64, _: Progress) -> Result<(), StepError> {
            let i = self.steps.len();
            self.steps.push((offset, len));
            if let Some((at, side)) = self.revoke_at {
                if at == i {
                    return Err(StepError::Revoked(side));
                }
            }
            if self.fail_at == Some(i) {
                return Err(CopyError::ZeroSize.into());
            }
            Ok(())
        }
    }

    fn script(max: u64) -> Script {
        Script {
            max,
            steps: Vec::new(),
            revoke_at: None,
            fail_at: None,
        }
    }

    fn no_revoke(side: Side, done: u64, total: u64) -> CopyError {
        panic!("unexpected revoke of {side} at {done}/{total}")
    }

    fn drive(
        t: &mut Script,
        size: u64,
        chunk: u64,
        iterations: u32,
        progress: &mut dyn FnMut(Progress),
        revoked: &dyn Fn(Side, u64, u64) -> CopyError,
    ) -> Result<Duration, CopyError> {
        let hooks = Hooks::default();
        Harness::start(&hooks, None, None).drive(
            t,
            Span {
                size,
                chunk,
                iterations,
            },
            progress,
            revoked,
        )
    }

    #[test]
    fn steps_cover_the_span_each_iteration_within_the_transports_limit() {
        let mut p = script(4096);
        let mut seen = Vec::new();
        drive(
            &mut p,
            10_000,
            1 << 20,
            2,
            &mut |pr| seen.push(pr.done),
            &no_revoke,
        )
        .unwrap();
        let one = [(0, 4096), (4096, 4096), (8192, 10_000 - 8192)];
        assert_eq!(p.steps, [one, one].concat());
        assert_eq!(seen.last(), Some(&20_000));
        assert_eq!(seen.len(), 6);
        // The request's chunk wins when it is the smaller.
        let mut p = script(u64::MAX);
        drive(&mut p, 8192, 2048, 1, &mut |_| {}, &no_revoke).unwrap();
        assert_eq!(p.steps.len(), 4);
    }

    #[test]
    fn a_revoked_side_stops_with_the_bytes_done_before_the_step() {
        let mut p = script(4096);
        p.revoke_at = Some((2, Side::Dst));
        let err = drive(&mut p, 16384, 4096, 1, &mut |_| {}, &|side, done, total| {
            assert_eq!((side, done, total), (Side::Dst, 8192, 16384));
            CopyError::Mismatch {
                first: 0,
                count: 0,
                detail: None,
            }
        })
        .unwrap_err();
        assert!(matches!(err, CopyError::Mismatch { .. }), "{err:?}");
        assert_eq!(p.steps.len(), 3, "no step after the revoke");
    }

    #[test]
    fn a_failed_step_is_the_error() {
        let mut p = script(4096);
        p.fail_at = Some(0);
        let err = drive(&mut p, 8192, 4096, 3, &mut |_| {}, &no_revoke).unwrap_err();
        assert!(matches!(err, CopyError::ZeroSize), "{err:?}");
        assert_eq!(p.steps.len(), 1);
    }

    #[test]
    fn without_sides_no_generation_moves_and_a_check_passes_through() {
        let hooks = Hooks::default();
        let mut h = Harness::start(&hooks, None, None);
        assert_eq!(h.generation_moved(Side::Src), None);
        let mismatch = CopyError::Mismatch {
            first: 1,
            count: 2,
            detail: None,
        };
        let e = h.checked(Err(mismatch), |_, _| None).unwrap_err();
        assert!(matches!(e, CopyError::Mismatch { first: 1, .. }), "{e:?}");
        let e = h
            .checked(
                Err(CopyError::Mismatch {
                    first: 1,
                    count: 2,
                    detail: None,
                }),
                |_, _| Some(CopyError::ZeroSize),
            )
            .unwrap_err();
        assert!(matches!(e, CopyError::ZeroSize), "{e:?}");
        assert!(h.checked(Ok(()), |_, _| unreachable!()).is_ok());
        assert_eq!(h.finish(true).unwrap(), None);
    }
}
