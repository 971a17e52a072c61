//! Read and Write of a span at a queue depth: the span is cut into commands of
//! [`Nvme::command_bytes`] (transfer size, MDTS, one PRP list), up to the queue depth of
//! them in flight on I/O queue 1, completions polled, each command's latency recorded.

use std::time::{Duration, Instant};

use super::command::{self, Dptr, Io, PAGE};
use super::error::{CommandDesc, NvmeError, Status};
use super::{Backing, DmaBuffer, Nvme};

/// What transfers did: accumulated over calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Bytes acknowledged as a prefix of each span (completions can arrive out of
    /// order; a byte counts once every command before it completed too).
    pub bytes: u64,
    /// Commands completed.
    pub commands: u64,
    /// Each completed command's time from submission to completion.
    pub latencies: Vec<Duration>,
    /// Time spent in [`Nvme::transfer`].
    pub elapsed: Duration,
}

impl IoStats {
    /// The latency at quantile `q` (0.0..=1.0), nearest rank; `None` without commands.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort_unstable();
        let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(v[rank - 1])
    }
}

impl<B: Backing> Nvme<B> {
    /// Moves `len` bytes between LBA `lba` of the namespace and IOVA `iova` (contiguous
    /// in the controller's IOAS): [`Io::Read`] namespace → memory, [`Io::Write`]
    /// memory → namespace. Up to the queue depth of commands are in flight.
    ///
    /// A controller that an earlier error left reset is brought up again first. On an
    /// error status, a timeout or CSTS.CFS the controller is reset (which stops every
    /// command still in flight) and brought up again before the error is returned;
    /// `stats.bytes` then says how much of the span was acknowledged.
    ///
    /// # Errors
    ///
    /// Before anything is submitted: [`NvmeError::NotBlockMultiple`],
    /// [`NvmeError::OutOfRange`], [`NvmeError::IovaBeyondReach`]. While running:
    /// [`NvmeError::Command`] (the status by name), [`NvmeError::CommandTimeout`],
    /// [`NvmeError::Fatal`], [`NvmeError::Device`]; and [`recover`](Self::recover)'s.
    pub fn transfer(
        &mut self,
        dir: Io,
        lba: u64,
        iova: u64,
        len: u64,
        stats: &mut IoStats,
    ) -> Result<(), NvmeError> {
        if !self.started.as_ref().is_some_and(|s| s.ready) {
            self.recover()?;
        }
        let bdf = self.bdf;
        let ns = self
            .namespace()
            .expect("a recovered controller has its namespace");
        let bs = u64::from(ns.block_size);
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(NvmeError::NotBlockMultiple {
                bdf,
                nsid: ns.nsid,
                len,
                block_size: ns.block_size,
            });
        }
        let blocks = len / bs;
        if lba.checked_add(blocks).is_none_or(|end| end > ns.blocks) {
            return Err(NvmeError::OutOfRange {
                bdf,
                nsid: ns.nsid,
                lba,
                blocks,
                capacity: ns.blocks,
                block_size: ns.block_size,
            });
        }
        let reach = |why| NvmeError::IovaBeyondReach {
            bdf,
            iova,
            len,
            mask: u64::MAX,
            why,
        };
        if !iova.is_multiple_of(4) {
            return Err(reach("PRP entries must be dword aligned"));
        }
        if iova.checked_add(len - 1).is_none() {
            return Err(reach("the span wraps the 64-bit address space"));
        }
        let start = Instant::now();
        let result = self.run(dir, lba, iova, len, stats);
        stats.elapsed += start.elapsed();
        if let Err(e) = result {
            // The reset stops whatever is still in flight; the error that got us here
            // is the one worth reporting, a failed recovery is reported on next use.
            let _ = self.recover();
            return Err(e);
        }
        Ok(())
    }

    fn run(
        &mut self,
        dir: Io,
        lba: u64,
        iova: u64,
        len: u64,
        stats: &mut IoStats,
    ) -> Result<(), NvmeError> {
        let per = self.command_bytes();
        let sgl = self.uses_sgl();
        let stall = std::mem::take(&mut self.stall_next);
        let Nvme {
            regs,
            bdf,
            opts,
            started,
            ..
        } = self;
        let bdf = *bdf;
        let s = started.as_mut().expect("started");
        let ns = s.ns.expect("namespace");
        let bs = u64::from(ns.block_size);
        let qd = opts.queue_depth as usize;
        let n_cmds = len.div_ceil(per) as usize;
        let mut slots: Vec<Option<(usize, Instant)>> = vec![None; qd];
        let mut free: Vec<u16> = (0..qd as u16).rev().collect();
        let mut done = vec![false; n_cmds];
        let (mut prefix, mut next, mut inflight) = (0usize, 0usize, 0usize);
        let base = stats.bytes;
        let list_base = s.prp_lists.iova();
        let mut list_bytes = Vec::with_capacity(PAGE as usize);
        let desc = |cid: u16, idx: usize| {
            let off = idx as u64 * per;
            CommandDesc {
                name: dir.name(),
                queue: 1,
                cid,
                lba: Some((lba + off / bs, (per.min(len - off) / bs) as u32)),
            }
        };
        let mut spins = 0u32;
        loop {
            while inflight < qd && next < n_cmds {
                let cid = free.pop().expect("a free slot while under the queue depth");
                let off = next as u64 * per;
                let n = per.min(len - off);
                let dptr = if sgl {
                    Dptr::Sgl {
                        addr: iova + off,
                        len: n as u32,
                    }
                } else {
                    let prp = command::prp(iova + off, n, list_base + u64::from(cid) * PAGE);
                    if !prp.list.is_empty() {
                        list_bytes.clear();
                        list_bytes.extend(prp.list.iter().flat_map(|e| e.to_le_bytes()));
                        s.prp_lists
                            .buffer()
                            .write(usize::from(cid) * PAGE as usize, &list_bytes)
                            .map_err(|source| NvmeError::Iommufd { bdf, source })?;
                    }
                    Dptr::Prp(prp)
                };
                let sqe = command::io(cid, dir, ns.nsid, lba + off / bs, (n / bs) as u32, &dptr);
                s.io.sq.push(&sqe);
                slots[usize::from(cid)] = Some((next, Instant::now()));
                next += 1;
                inflight += 1;
            }
            if !stall {
                s.io.sq.announce(regs)?;
            }
            if inflight == 0 {
                return Ok(());
            }
            if let Some(cqe) = s.io.cq.poll(regs)? {
                let cid = cqe.cid;
                let Some((idx, t)) = slots.get_mut(usize::from(cid)).and_then(Option::take) else {
                    continue; // not one of ours (cannot happen on a private queue)
                };
                free.push(cid);
                inflight -= 1;
                stats.latencies.push(t.elapsed());
                stats.commands += 1;
                let status = Status::from_cqe(cqe.status);
                if !status.is_success() {
                    return Err(NvmeError::Command {
                        bdf,
                        command: desc(cid, idx),
                        status,
                    });
                }
                done[idx] = true;
                while prefix < n_cmds && done[prefix] {
                    prefix += 1;
                }
                stats.bytes = base + (prefix as u64 * per).min(len);
                continue;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) {
                regs.check_running(dir.name())?;
                let oldest = slots
                    .iter()
                    .enumerate()
                    .filter_map(|(cid, s)| s.map(|(idx, t)| (t, cid as u16, idx)))
                    .min_by_key(|(t, _, _)| *t);
                if let Some((t, cid, idx)) = oldest {
                    if t.elapsed() >= opts.command_timeout {
                        return Err(NvmeError::CommandTimeout {
                            bdf,
                            command: desc(cid, idx),
                            after: opts.command_timeout,
                        });
                    }
                }
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s = IoStats::default();
        assert_eq!(s.percentile(0.5), None);
        s.latencies = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(s.percentile(0.5), Some(Duration::from_micros(50)));
        assert_eq!(s.percentile(0.99), Some(Duration::from_micros(99)));
        assert_eq!(s.percentile(1.0), Some(Duration::from_micros(100)));
        assert_eq!(s.percentile(0.0), Some(Duration::from_micros(1)));
    }
}
