//! The IOMMU's side of a DMA copy: faults the kernel logged for the engine while
//! it ran, read from the kernel log ([`peerdma_host::fault_log`]). When a copy
//! fails (bytes differ, the engine timed out or reported an error) and the IOMMU
//! refused the engine's accesses meanwhile, those refusals are the cause and the
//! error says so, instead of only "N bytes differ".

use std::io;

use peerdma_host::fault_log::{FaultLog, IommuFault};
use peerdma_host::Bdf;

use super::CopyError;

/// Watches the kernel log for IOMMU faults by one engine, from [`FaultWatch::start`] on.
pub(super) struct FaultWatch {
    engine: Bdf,
    log: io::Result<FaultLog>,
    seen: Vec<IommuFault>,
}

impl FaultWatch {
    /// Starts watching for faults by `engine` (the log is read from now on).
    pub(super) fn start(engine: Bdf) -> FaultWatch {
        FaultWatch::on(engine, FaultLog::open())
    }

    fn on(engine: Bdf, log: io::Result<FaultLog>) -> FaultWatch {
        FaultWatch {
            engine,
            log,
            seen: Vec::new(),
        }
    }

    /// Reads what was logged since the last call; faults naming another device are
    /// not the engine's and are left out (a line naming none is kept).
    fn collect(&mut self) {
        let Ok(log) = &mut self.log else { return };
        match log.read_new_by(self.engine) {
            Ok(new) => self.seen.extend(new),
            Err(e) => self.log = Err(e),
        }
    }

    /// [`CopyError::DmaFaulted`] with `outcome` when the engine faulted since the
    /// watch started, else `outcome` as it is.
    fn cause_of(&mut self, outcome: CopyError) -> CopyError {
        self.collect();
        match self.seen.first() {
            None => outcome,
            Some(first) => CopyError::DmaFaulted {
                engine: self.engine,
                count: self.seen.len(),
                first: Box::new(first.clone()),
                outcome: Box::new(outcome),
            },
        }
    }

    /// `err`, or, when the IOMMU refused the engine's DMA since the watch started
    /// and `err` is the kind of failure such refusals cause (bytes differ, an
    /// engine error or timeout), [`CopyError::DmaFaulted`] with `err` as the outcome.
    /// A revoke stays a revoke: it tears the mappings down, so faults follow it.
    pub(super) fn explain(&mut self, err: CopyError) -> CopyError {
        if !matches!(err, CopyError::Mismatch { .. } | CopyError::Engine(_)) {
            return err;
        }
        self.cause_of(err)
    }

    /// Ends a copy that ran to its end: `Ok` when the kernel logged no fault by the
    /// engine since the watch started (or the log is unreadable: then the report's
    /// `iommu_faults` is `None` and says so), else [`CopyError::DmaFaulted`] with
    /// [`CopyError::FaultedAfterAll`] as the outcome, whatever the compare said.
    /// `compared`: whether the bytes were checked (and matched).
    pub(super) fn finish(&mut self, compared: bool) -> Result<(), CopyError> {
        match self.cause_of(CopyError::FaultedAfterAll { compared }) {
            CopyError::FaultedAfterAll { .. } => Ok(()),
            faulted => Err(faulted),
        }
    }

    /// How many faults by the engine the kernel logged during the copy; `None`
    /// where the kernel log cannot be read.
    pub(super) fn count(&mut self) -> Option<u64> {
        self.collect();
        self.log.is_ok().then_some(self.seen.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const OTHER: &str = "3,7,7,-;DMAR: [DMA Read NO_PASID] Request device [0000:00:05.0] \
                         fault addr 0x9000 [fault reason 0x06] PTE Read access is not set\n";
    const ENGINE: &str = "3,8,8,-;DMAR: [DMA Write NO_PASID] Request device [0000:00:12.0] \
                          fault addr 0x24000 [fault reason 0x05] PTE Write access is not set\n";

    /// A watch on a file standing in for /dev/kmsg, and a writer that appends records.
    fn watch(tag: &str) -> (FaultWatch, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("peerdma-faults-{tag}-{}", std::process::id()));
        std::fs::write(&path, ENGINE).unwrap(); // before the watch: not counted
        let engine = "0000:00:12.0".parse().unwrap();
        (FaultWatch::on(engine, FaultLog::open_at(&path)), path)
    }

    fn log(path: &std::path::Path, record: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(record.as_bytes()).unwrap();
    }

    #[test]
    fn a_mismatch_with_the_engines_faults_logged_names_them_as_the_cause() {
        let (mut w, path) = watch("cause");
        log(&path, OTHER);
        log(&path, ENGINE);
        let err = w.explain(CopyError::Mismatch {
            first: 0,
            count: 8192,
            detail: None,
        });
        std::fs::remove_file(&path).unwrap();
        let CopyError::DmaFaulted {
            count,
            first,
            outcome,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*count, 1, "the other device's fault is not the engine's");
        assert_eq!(first.iova, Some(0x24000));
        assert!(matches!(**outcome, CopyError::Mismatch { count: 8192, .. }));
        assert!(
            err.to_string()
                .starts_with("the IOMMU refused 1 DMA access(es) by the engine 0000:00:12.0"),
            "{err}"
        );
        assert_eq!(w.count(), Some(1));
    }

    #[test]
    fn a_copy_whose_bytes_match_is_not_verified_when_the_engine_faulted() {
        let (mut w, path) = watch("finish");
        assert!(w.finish(true).is_ok(), "no fault since the start: clean");
        log(&path, OTHER);
        assert!(
            w.finish(true).is_ok(),
            "another device's fault is not the engine's"
        );
        log(&path, ENGINE);
        let err = w.finish(true).unwrap_err();
        let err_off = w.finish(false).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let CopyError::DmaFaulted { outcome, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(matches!(
            **outcome,
            CopyError::FaultedAfterAll { compared: true }
        ));
        let text = err.to_string();
        assert!(
            text.contains("so the copy is not verified although the compared bytes match"),
            "{text}"
        );
        assert!(
            err_off.to_string().contains("verification was off"),
            "{err_off}"
        );
        let unreadable = FaultWatch::on(
            "0000:00:12.0".parse().unwrap(),
            Err(io::Error::from_raw_os_error(1)),
        )
        .finish(true);
        assert!(
            unreadable.is_ok(),
            "an unreadable log is reported as null, not a fault"
        );
    }

    #[test]
    fn without_faults_or_for_a_revoke_the_error_stays_as_it_was() {
        let (mut w, path) = watch("plain");
        let err = w.explain(CopyError::Mismatch {
            first: 4,
            count: 1,
            detail: None,
        });
        assert!(
            matches!(
                err,
                CopyError::Mismatch {
                    first: 4,
                    count: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        log(&path, ENGINE);
        let revoked = CopyError::Revoked {
            bdf: "0000:00:10.0".parse().unwrap(),
            done: 0,
            total: 1,
            why: "memory decode is off".into(),
        };
        let err = w.explain(revoked);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, CopyError::Revoked { .. }), "{err:?}");
        let unreadable = FaultWatch::on(
            "0000:00:12.0".parse().unwrap(),
            Err(io::Error::from_raw_os_error(1)),
        )
        .count();
        assert_eq!(unreadable, None);
    }
}
