//! `contract`: the engine contract, run for every engine device of the run (each
//! device whose PCI id is in the importer's driver table, or of the NVMe class), as
//! the kernel's `vfio_pci_driver_test.c` runs every driver. Each engine is taken
//! through [`AttachedEngine`] and each case through its checked copy, with sizes from
//! the engine (min(`max_transfer`, 64 KiB)); one typed [`ContractCase`] line per
//! (engine, scenario). Engine `k` works at `CONTRACT + k` MiB in the ivshmem BARs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerdma_engine::{AttachedEngine, EngineError, EngineId, Span, TransferReport};
use peerdma_exporter::{Device, DmaBuf, DmaRange, MappedRegion};
use peerdma_importer::iommufd::{
    Iommufd, Iova, Mapped, MappingState, Prot, UserBuffer, UserMapping,
};
use peerdma_testbed::manifest::{Manifest, ManifestDevice};
use peerdma_testbed::pattern;
use peerdma_testbed::reports::{ContractCase, ContractScenario, CONTRACT_REPORT};

use crate::rig::{open_cdev, KIB, MIB};

/// Where in the ivshmem BARs the contract works: engine `k` at `CONTRACT + k` MiB.
pub(crate) const CONTRACT: u64 = 32 * MIB;
/// Each case's slot inside an engine's MiB.
const SLOT: u64 = 128 * KIB;
/// The longest copy a case makes (the suite stays fast on TCG).
const MAX_LEN: u64 = 64 * KIB;
/// The copies meant to fault move one page: one fault record each, under the kernel's
/// DMAR log rate limit (10 messages per 5 s).
const FAULT_LEN: u64 = 4 * KIB;

/// The devices of the run an engine driver takes, in manifest order.
pub(crate) fn engines(m: &Manifest) -> Vec<&ManifestDevice> {
    m.devices
        .iter()
        .filter(|d| d.driver.as_deref() == Some("vfio-pci"))
        .filter(|d| {
            let (vendor, device) = d.kind.pci_id();
            let class = std::fs::read_to_string(
                Path::new("/sys/bus/pci/devices").join(&d.bdf).join("class"),
            )
            .ok()
            .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok());
            match class {
                Some(class) => EngineId::of_function(vendor, device, class).is_some(),
                None => EngineId::by_pci_id(vendor, device).is_some(),
            }
        })
        .collect()
}

/// A destination IOVA with nothing mapped behind it, that says it is live: what a
/// stale handle looks like to the checked copy.
pub(crate) struct Unmapped {
    pub(crate) ioas: u32,
    pub(crate) iova: u64,
    pub(crate) len: u64,
}

impl Mapped for Unmapped {
    fn ioas_id(&self) -> u32 {
        self.ioas
    }
    fn iova(&self) -> u64 {
        self.iova
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn prot(&self) -> Prot {
        Prot::ReadWrite
    }
    fn state(&mut self) -> MappingState {
        MappingState::Live
    }
}

/// The BARs every engine copies into and out of.
struct Bars {
    ivs0: Device,
    ivs1: Device,
    bar0: MappedRegion,
    bar1: MappedRegion,
}

impl Bars {
    fn export(dev: &Device, offset: u64, len: u64) -> Result<DmaBuf> {
        let length = len.next_multiple_of(4 * KIB);
        Ok(dev.export_dma_buf(2, &[DmaRange { offset, length }])?)
    }
}

fn read(bar: &MappedRegion, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut v = vec![0u8; len as usize];
    bar.read_bytes(offset as usize, &mut v)?;
    Ok(v)
}

fn pattern_of(seed: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    pattern::fill(seed, 0, &mut v);
    v
}

/// A host source holding `data`, readable by the engine.
fn host_source(e: &AttachedEngine, data: &[u8]) -> Result<UserMapping> {
    let src = e
        .ioas()
        .map_host(UserBuffer::new(data.len())?, Iova::Guarded, Prot::Read)?;
    src.buffer().write(0, data)?;
    Ok(src)
}

/// Fills `case` from a copy that had to land.
fn landed(case: &mut ContractCase, r: Result<TransferReport, EngineError>, arrived: bool) {
    match r {
        Ok(rep) => {
            case.bytes = Some(rep.bytes);
            case.iommu_faults = rep.iommu_faults;
            case.verified_in_guest = arrived;
            case.ok = rep.bytes == case.len && rep.iommu_faults == Some(0) && arrived;
        }
        Err(e) => {
            case.error_kind = Some(e.kind().to_string());
            case.error = Some(e.to_string());
        }
    }
}

/// Fills `case` from a copy that had to be refused with `want`.
fn refused(case: &mut ContractCase, r: Result<TransferReport, EngineError>, want: &str) -> bool {
    match r {
        Ok(rep) => {
            case.bytes = Some(rep.bytes);
            case.iommu_faults = rep.iommu_faults;
            case.error = Some("the copy returned Ok".into());
            false
        }
        Err(e) => {
            if let EngineError::NotLanded { faults, .. } = &e {
                case.iommu_faults = Some(faults.len() as u64);
            }
            case.error_kind = Some(e.kind().to_string());
            case.error = Some(e.to_string());
            e.kind() == want
        }
    }
}

fn run_case(e: &mut AttachedEngine, bars: &Bars, base: u64, case: &mut ContractCase) -> Result<()> {
    let len = case.len;
    let data = pattern_of(case.seed, len);
    match case.scenario {
        ContractScenario::HostToBar => {
            let mut src = host_source(e, &data)?;
            let buf = Bars::export(&bars.ivs0, base, len)?;
            let mut dst =
                e.ioas()
                    .map_vfio_dmabuf(&bars.ivs0, &buf, 0, len, Iova::Guarded, Prot::Write)?;
            let r = e.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
            let arrived = read(&bars.bar0, base, len)? == data;
            (case.dst_role, case.dst_offset) = (Some("ivshmem0".into()), Some(base));
            landed(case, r, arrived);
        }
        ContractScenario::BarToHost => {
            let at = base + SLOT;
            bars.bar0.write_bytes(at as usize, &data)?;
            let buf = Bars::export(&bars.ivs0, at, len)?;
            let mut src =
                e.ioas()
                    .map_vfio_dmabuf(&bars.ivs0, &buf, 0, len, Iova::Guarded, Prot::Read)?;
            let mut dst =
                e.ioas()
                    .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Write)?;
            let r = e.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
            let arrived = dst.buffer().to_vec() == data;
            landed(case, r, arrived);
        }
        ContractScenario::BarToBar => {
            let at = base + 2 * SLOT;
            bars.bar0.write_bytes(at as usize, &data)?;
            let sbuf = Bars::export(&bars.ivs0, at, len)?;
            let dbuf = Bars::export(&bars.ivs1, at, len)?;
            let mut src =
                e.ioas()
                    .map_vfio_dmabuf(&bars.ivs0, &sbuf, 0, len, Iova::Guarded, Prot::Read)?;
            let mut dst =
                e.ioas()
                    .map_vfio_dmabuf(&bars.ivs1, &dbuf, 0, len, Iova::Guarded, Prot::Write)?;
            let r = e.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
            let arrived = read(&bars.bar1, at, len)? == data;
            (case.dst_role, case.dst_offset) = (Some("ivshmem1".into()), Some(at));
            landed(case, r, arrived);
        }
        ContractScenario::ReadOnly => {
            let mut src = host_source(e, &data)?;
            let mut dst =
                e.ioas()
                    .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
            let r = e.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
            let untouched = dst.buffer().to_vec().iter().all(|&b| b == 0);
            let as_said = refused(case, r, "mapping_unusable");
            case.verified_in_guest = untouched;
            case.ok = as_said && untouched;
        }
        ContractScenario::Revoke => {
            let at = base + 3 * SLOT;
            let mut src = host_source(e, &data[..len as usize])?;
            // 1. Revoked through this process: the mapping follows its exporter, and
            //    the copy is refused before any DMA.
            let buf = Bars::export(&bars.ivs0, at, len)?;
            let mut dst =
                e.ioas()
                    .map_vfio_dmabuf(&bars.ivs0, &buf, 0, len, Iova::Guarded, Prot::Write)?;
            bars.ivs0.set_memory_decode(false)?;
            let first = e.copy(Span::start_of(&mut src), Span::start_of(&mut dst), len);
            bars.ivs0.set_memory_decode(true)?;
            drop(dst);
            let first_kind = first.err().map(|e| e.kind().to_string());
            let first_ok = first_kind.as_deref() == Some("mapping_unusable");
            case.refused_first_kind = first_kind;
            // 2. Revoked behind a mapping that does not follow its exporter: the engine
            //    DMAs, the IOMMU refuses it, the copy fails naming the fault.
            let blind_buf = Bars::export(&bars.ivs0, at, len)?;
            let mut blind = e
                .ioas()
                .map_dmabuf(&blind_buf, 0, len, Iova::Guarded, Prot::Write)?;
            bars.ivs0.set_memory_decode(false)?;
            let second = e.copy(
                Span::start_of(&mut src),
                Span::start_of(&mut blind),
                FAULT_LEN.min(len),
            );
            bars.ivs0.set_memory_decode(true)?;
            let untouched = read(&bars.bar0, at, len)?.iter().all(|&b| b == 0);
            let as_said = refused(case, second, "not_landed");
            (case.dst_role, case.dst_offset) = (Some("ivshmem0".into()), Some(at));
            case.verified_in_guest = untouched;
            case.ok = first_ok && as_said && untouched;
        }
        ContractScenario::UnmappedIova => {
            let fault_len = FAULT_LEN.min(len);
            let mut src = host_source(e, &data[..fault_len as usize])?;
            let gone = e.ioas().map_host(
                UserBuffer::new(fault_len as usize)?,
                Iova::Guarded,
                Prot::Write,
            )?;
            let mut hole = Unmapped {
                ioas: gone.ioas_id(),
                iova: gone.iova(),
                len: fault_len,
            };
            gone.unmap()?;
            let r = e.copy(
                Span::start_of(&mut src),
                Span::start_of(&mut hole),
                fault_len,
            );

            case.ok = refused(case, r, "not_landed");
            case.verified_in_guest = case.ok;
        }
    }
    Ok(())
}

/// VT-d's fault handler logs at most 10 messages per 5 s (`dmar_fault`'s rate limit,
/// drivers/iommu/intel/dmar.c), and a fault it does not log at all is one no checked
/// copy can see. Each deliberate fault here logs two (the status line and its record).
pub(crate) const DMAR_LOG_WINDOW: Duration = Duration::from_millis(5200);

/// The cases that make the IOMMU refuse the engine (one fault each).
fn faults(s: ContractScenario) -> bool {
    matches!(s, ContractScenario::Revoke | ContractScenario::UnmappedIova)
}

/// Runs every contract case on every engine of the run; one [`ContractCase`] each, in
/// engine then case order. The cases that land run first for every engine; the
/// faulting ones (two per engine, four messages for edu and NVMe, up to eight for a
/// NIC whose 4 KiB copy is three datagrams) run engine by engine, each engine's after a
/// full rate-limit window has passed since the faults before them, so that the kernel
/// logs every one of them: a deadline on the kernel's own interval (there is no event
/// that says the window closed).
pub(crate) fn contract(m: &Manifest) -> Result<Vec<ContractCase>> {
    let mut window_clear = Instant::now() + DMAR_LOG_WINDOW;
    let iommufd = Iommufd::open()?;
    let ivs0 = open_cdev(m, "ivshmem0")?;
    let ivs1 = open_cdev(m, "ivshmem1")?;
    let bars = Bars {
        bar0: ivs0.map_region(2)?,
        bar1: ivs1.map_region(2)?,
        ivs0,
        ivs1,
    };
    let mut opened = Vec::new();
    for (k, dev) in engines(m).into_iter().enumerate() {
        let bdf = dev
            .bdf
            .parse()
            .with_context(|| format!("{}: bad BDF {}", dev.role, dev.bdf))?;
        opened.push((k, dev, AttachedEngine::open(bdf, &iommufd)));
    }
    let mut out = Vec::new();
    for faulting in [false, true] {
        for (k, dev, engine) in &mut opened {
            if faulting {
                // Each engine's faulting cases get a rate-limit window of their own: a
                // NIC's 4 KiB copy is three datagrams, up to three fault records.
                std::thread::sleep(window_clear.saturating_duration_since(Instant::now()));
            }
            let base = CONTRACT + *k as u64 * MIB;
            let (max_transfer, engine_name) = match &engine {
                Ok(e) => (e.engine().max_transfer(), e.name()),
                Err(_) => (0, String::new()),
            };
            let len = max_transfer.min(MAX_LEN);
            for (i, scenario) in ContractScenario::ALL.into_iter().enumerate() {
                if faults(scenario) != faulting {
                    continue;
                }
                let mut case = ContractCase {
                    report: CONTRACT_REPORT.into(),
                    engine: dev.role.clone(),
                    engine_name: engine_name.clone(),
                    scenario,
                    max_transfer,
                    len,
                    seed: 0xc0de_0000 + ((*k as u64) << 4) + i as u64,
                    dst_role: None,
                    dst_offset: None,
                    bytes: None,
                    iommu_faults: None,
                    error_kind: None,
                    error: None,
                    refused_first_kind: None,
                    verified_in_guest: false,
                    ok: false,
                };
                match engine {
                    Ok(e) => {
                        if let Err(err) = run_case(e, &bars, base, &mut case) {
                            case.ok = false;
                            case.error = Some(format!("the case could not be set up: {err:#}"));
                        }
                    }
                    Err(err) => case.error = Some(format!("the engine did not open: {err}")),
                }
                out.push((*k, i, case));
            }
            if faulting {
                window_clear = Instant::now() + DMAR_LOG_WINDOW;
            }
        }
    }
    out.sort_by_key(|(k, i, _)| (*k, *i));
    Ok(out.into_iter().map(|(_, _, c)| c).collect())
}
