//! The driver against the in-process controller model ([`model`](super::model)): bring
//! up, phase tags, doorbells, data pointers, and every error path with its recovery,
//! faults injected in the model.

use std::time::{Duration, Instant};

use peerdma_uapi::nvme::*;

use super::command::Io;
use super::model::{bdf, Config, Fault, Model, ModelBacking, ModelBuffer};
use super::{DataPointer, DmaBuffer, IoStats, Nvme, NvmeError, NvmeOptions};

type ModelNvme = Nvme<ModelBacking>;

fn opts(queue_depth: u32, transfer_size: u64) -> NvmeOptions {
    NvmeOptions {
        queue_depth,
        transfer_size,
        command_timeout: Duration::from_millis(200),
        ..NvmeOptions::default()
    }
}

fn open(config: Config, opts: NvmeOptions) -> (Model, Result<ModelNvme, NvmeError>) {
    let model = Model::new(config);
    let nvme = Nvme::with_registers(model.registers(), bdf(), opts);
    (model, nvme)
}

fn started(config: Config, opts: NvmeOptions) -> (Model, ModelNvme) {
    let (model, nvme) = open(config, opts);
    let mut nvme = nvme.expect("the model's controller opens");
    nvme.start(&model.memory())
        .expect("the model's controller starts");
    (model, nvme)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn buffer(model: &Model, len: usize) -> ModelBuffer {
    model.dma(len).expect("model DMA memory")
}

/// Writes `data` at LBA `lba` from a fresh buffer, reads it back into another and
/// returns what arrived (checking the namespace too).
fn round_trip(model: &Model, nvme: &mut ModelNvme, lba: u64, data: &[u8]) -> Vec<u8> {
    let src = buffer(model, data.len());
    src.buffer().write(0, data).expect("fill");
    let mut stats = IoStats::default();
    nvme.transfer(Io::Write, lba, src.iova(), data.len() as u64, &mut stats)
        .expect("write");
    let at = lba as usize * 512;
    assert_eq!(&model.state().namespace[at..at + data.len()], data);
    let dst = buffer(model, data.len());
    nvme.transfer(Io::Read, lba, dst.iova(), data.len() as u64, &mut stats)
        .expect("read");
    let mut back = vec![0u8; data.len()];
    dst.buffer().read(0, &mut back).expect("read back");
    back
}

#[test]
fn brings_the_controller_up_and_identifies_it() {
    let (model, nvme) = started(Config::default(), opts(4, 4096));
    let ctrl = nvme.controller().expect("Identify Controller");
    assert_eq!(
        (ctrl.serial.as_str(), ctrl.model.as_str()),
        ("model0", "peerdma model")
    );
    assert_eq!(
        (ctrl.mdts_bytes, ctrl.namespaces, ctrl.sgl),
        (Some(512 << 10), 1, true)
    );
    let ns = nvme.namespace().expect("Identify Namespace");
    assert_eq!((ns.blocks, ns.block_size), (4096, 512));
    assert!(nvme.uses_sgl());
    let s = model.state();
    assert_eq!(
        s.admin_opcodes,
        [
            NVME_ADMIN_IDENTIFY,
            NVME_ADMIN_IDENTIFY,
            NVME_ADMIN_CREATE_CQ,
            NVME_ADMIN_CREATE_SQ
        ]
    );
    assert_eq!(s.io_commands, 0);
}

#[test]
fn the_ready_wait_follows_csts_and_is_bounded_by_cap_to() {
    // RDY set only after 40 CSTS reads: the driver waits for it.
    let model = Model::new(Config::default());
    model.state().ready_after = 40;
    let mut nvme: ModelNvme =
        Nvme::with_registers(model.registers(), bdf(), opts(4, 4096)).expect("opens");
    nvme.start(&model.memory()).expect("starts after RDY");

    // RDY never set: ReadyTimeout after CAP.TO (1 × 500 ms).
    let model = Model::new(Config::default());
    model.state().never_ready = true;
    let mut nvme: ModelNvme = Nvme::with_registers(model.registers(), bdf(), opts(4, 4096))
        .expect("opens (disabling needs no RDY)");
    let t = Instant::now();
    let err = nvme.start(&model.memory()).expect_err("RDY never follows");
    assert!(t.elapsed() >= Duration::from_millis(500));
    match err {
        NvmeError::ReadyTimeout { want, after, .. } => {
            assert_eq!((want, after), (1, Duration::from_millis(500)));
        }
        other => panic!("expected ReadyTimeout, got {other}"),
    }
}

#[test]
fn phase_tags_wrap_over_many_more_commands_than_entries() {
    // Queue depth 4: an I/O queue of 5 entries; 2 MiB in 4 KiB commands is 512 of them.
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    let data = pattern(2 << 20, 7);
    assert_eq!(round_trip(&model, &mut nvme, 0, &data), data);
    let s = model.state();
    assert_eq!(s.io_commands, 1024);
    assert_eq!(s.phase_flips, 1024 / 5);
    assert_eq!(s.resets, 0);
}

#[test]
fn doorbells_carry_the_ring_positions() {
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    let src = buffer(&model, 12 * 4096);
    let mut stats = IoStats::default();
    nvme.transfer(Io::Write, 0, src.iova(), 12 * 4096, &mut stats)
        .expect("12 commands");
    assert_eq!(stats.commands, 12);
    assert_eq!(stats.bytes, 12 * 4096);
    let s = model.state();
    // Four pushed and announced at once, then one more after each completion, the
    // tail wrapping at 5 entries.
    assert_eq!(s.sq_doorbells, [4, 0, 1, 2, 3, 4, 0, 1, 2]);
    // Each completion released as it is consumed, the head wrapping at 5.
    assert_eq!(s.cq_doorbells, [1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]);
}

#[test]
fn a_failed_command_resets_the_controller_and_the_next_transfer_works() {
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    model.state().faults.insert(3, Fault::Status(2, 0x81));
    let dst = buffer(&model, 8 * 4096);
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Read, 16, dst.iova(), 8 * 4096, &mut stats)
        .expect_err("the third command fails");
    match &err {
        NvmeError::Command {
            command, status, ..
        } => {
            assert_eq!((command.name, command.queue), ("Read", 1));
            assert_eq!(command.lba, Some((16 + 2 * 8, 8)));
            assert_eq!((status.sct, status.sc), (2, 0x81));
        }
        other => panic!("expected a command error, got {other}"),
    }
    assert!(err.to_string().contains("Unrecovered Read Error"), "{err}");
    // The first two completed before the failure: a prefix of 8 KiB acknowledged.
    assert_eq!(stats.bytes, 2 * 4096);
    assert_eq!(model.state().resets, 1);
    let data = pattern(64 << 10, 3);
    assert_eq!(round_trip(&model, &mut nvme, 100, &data), data);
}

#[test]
fn a_command_that_never_completes_times_out_by_name_and_the_controller_recovers() {
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    model.state().faults.insert(2, Fault::Drop);
    let src = buffer(&model, 4 * 4096);
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Write, 40, src.iova(), 4 * 4096, &mut stats)
        .expect_err("the second command never completes");
    match &err {
        NvmeError::CommandTimeout { command, after, .. } => {
            assert_eq!((command.name, command.queue), ("Write", 1));
            assert_eq!(command.lba, Some((48, 8)));
            assert_eq!(*after, Duration::from_millis(200));
        }
        other => panic!("expected a command timeout, got {other}"),
    }
    assert!(err.to_string().contains("Write (cid "), "{err}");
    assert_eq!(model.state().resets, 1);
    let data = pattern(16 << 10, 9);
    assert_eq!(round_trip(&model, &mut nvme, 40, &data), data);
}

#[test]
fn the_stall_hook_times_out_and_the_controller_recovers() {
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    nvme.stall_next_transfer();
    let dst = buffer(&model, 4096);
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Read, 0, dst.iova(), 4096, &mut stats)
        .expect_err("never announced");
    assert!(matches!(err, NvmeError::CommandTimeout { .. }), "{err}");
    assert_eq!(model.state().io_commands, 0);
    let data = pattern(4096, 1);
    assert_eq!(round_trip(&model, &mut nvme, 0, &data), data);
}

#[test]
fn csts_cfs_is_fatal_and_the_controller_recovers() {
    let mut o = opts(4, 4096);
    o.command_timeout = Duration::from_secs(30);
    let (model, mut nvme) = started(Config::default(), o);
    model.state().faults.insert(1, Fault::Fatal);
    let dst = buffer(&model, 4096);
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Read, 0, dst.iova(), 4096, &mut stats)
        .expect_err("CSTS.CFS");
    match err {
        NvmeError::Fatal { csts, during, .. } => {
            assert_ne!(csts & NVME_CSTS_CFS, 0);
            assert_eq!(during, "Read");
        }
        other => panic!("expected Fatal, got {other}"),
    }
    let data = pattern(8192, 2);
    assert_eq!(round_trip(&model, &mut nvme, 8, &data), data);
}

#[test]
fn a_reset_under_the_driver_is_found_as_stopped_before_the_command_timeout() {
    let mut o = opts(4, 4096);
    o.command_timeout = Duration::from_secs(30);
    let (model, mut nvme) = started(Config::default(), o);
    model.state().faults.insert(1, Fault::Reset);
    let dst = buffer(&model, 4 * 4096);
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Read, 0, dst.iova(), 4 * 4096, &mut stats)
        .expect_err("the controller was reset");
    match err {
        NvmeError::Stopped { csts, .. } => assert_eq!(csts & NVME_CSTS_RDY, 0),
        other => panic!("expected Stopped, got {other}"),
    }
    let data = pattern(4 * 4096, 4);
    assert_eq!(round_trip(&model, &mut nvme, 0, &data), data);
}

#[test]
fn a_revoked_bar_is_named_not_misread() {
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    model.state().revoked = true;
    let dst = buffer(&model, 4096);
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Read, 0, dst.iova(), 4096, &mut stats)
        .expect_err("revoked");
    assert!(matches!(err, NvmeError::Revoked { .. }), "{err}");
}

#[test]
fn prp_entries_and_lists_are_resolved_by_the_model() {
    let mut o = opts(4, 64 << 10);
    o.data_pointer = DataPointer::Prp;
    let (model, mut nvme) = started(Config::default(), o);
    assert!(!nvme.uses_sgl());
    // From 0x800 into a page: PRP1 with an offset, then a list of pages per command.
    let data = pattern(256 << 10, 5);
    let src = buffer(&model, (256 << 10) + 4096);
    src.buffer().write(0x800, &data).expect("fill");
    let mut stats = IoStats::default();
    nvme.transfer(Io::Write, 0, src.iova() + 0x800, 256 << 10, &mut stats)
        .expect("PRP write");
    assert_eq!(&model.state().namespace[..256 << 10], &data[..]);
    {
        let s = model.state();
        assert_eq!(
            (s.prp_commands, s.prp_list_commands, s.sgl_commands),
            (4, 4, 0)
        );
    }
    let dst = buffer(&model, 256 << 10);
    nvme.transfer(Io::Read, 0, dst.iova(), 256 << 10, &mut stats)
        .expect("PRP read");
    let mut back = vec![0u8; 256 << 10];
    dst.buffer().read(0, &mut back).expect("read back");
    assert_eq!(back, data);

    // Two pages per command: PRP2 is the second page, no list.
    let mut o = opts(4, 8192);
    o.data_pointer = DataPointer::Prp;
    let (model, mut nvme) = started(Config::default(), o);
    let data = pattern(32 << 10, 6);
    assert_eq!(round_trip(&model, &mut nvme, 8, &data), data);
    let s = model.state();
    assert_eq!((s.prp_commands, s.prp_list_commands), (8, 0));
}

#[test]
fn sgl_data_blocks_are_checked_by_the_model() {
    let (model, mut nvme) = started(Config::default(), opts(8, 128 << 10));
    let data = pattern(1 << 20, 8);
    assert_eq!(round_trip(&model, &mut nvme, 0, &data), data);
    let s = model.state();
    assert_eq!((s.sgl_commands, s.prp_commands), (16, 0));
    drop(s);

    // SGLs asked for from a controller without them: refused when it starts.
    let mut o = opts(4, 4096);
    o.data_pointer = DataPointer::Sgl;
    let config = Config {
        sgl: false,
        ..Config::default()
    };
    let (model, nvme) = open(config, o);
    let err = nvme.unwrap().start(&model.memory()).expect_err("no SGLs");
    assert!(matches!(err, NvmeError::Unsupported { .. }), "{err}");
    assert_eq!(model.state().io_commands, 0);
}

#[test]
fn a_span_past_the_dma_memory_is_a_data_transfer_error() {
    let (model, mut nvme) = started(Config::default(), opts(4, 4096));
    let mut stats = IoStats::default();
    let err = nvme
        .transfer(Io::Read, 0, 0x10, 4096, &mut stats)
        .expect_err("IOVA 0x10 is nowhere");
    match err {
        NvmeError::Command { status, .. } => assert_eq!((status.sct, status.sc), (0, 0x04)),
        other => panic!("expected Data Transfer Error, got {other}"),
    }
    let data = pattern(4096, 0);
    assert_eq!(round_trip(&model, &mut nvme, 0, &data), data);
}

#[test]
fn a_namespace_with_metadata_is_refused_before_any_io_command() {
    let config = Config {
        metadata: Some((8, true)),
        ..Config::default()
    };
    let (model, nvme) = open(config, opts(4, 4096));
    let err = nvme.unwrap().start(&model.memory()).expect_err("metadata");
    match err {
        NvmeError::Metadata {
            nsid,
            metadata_size,
            metadata_extended,
            without_metadata,
            ..
        } => {
            assert_eq!((nsid, metadata_size, metadata_extended), (1, 8, true));
            assert_eq!(without_metadata, Some((0, 512)));
        }
        other => panic!("expected Metadata, got {other}"),
    }
    let s = model.state();
    assert_eq!(s.io_commands, 0);
    assert!(!s.admin_opcodes.contains(&NVME_ADMIN_CREATE_SQ));
}

#[test]
fn a_queue_depth_past_mqes_is_refused_and_one_at_mqes_runs() {
    // MQES 7: queues of at most 8 entries, so at most 7 commands in flight.
    let config = Config {
        mqes: 7,
        ..Config::default()
    };
    let (model, nvme) = open(config, opts(32, 4096));
    match nvme.expect_err("queue depth 32") {
        NvmeError::Unsupported { what, .. } => {
            assert!(
                what.contains("queue depth 32 does not fit")
                    && what.contains("8 entries (CAP.MQES 7, 0-based)")
                    && what.contains("1 to 7 commands in flight"),
                "{what}"
            );
        }
        other => panic!("expected Unsupported, got {other}"),
    }
    assert!(model.state().admin_opcodes.is_empty());
    let (model, mut nvme) = started(config, opts(7, 4096));
    let data = pattern(256 << 10, 11);
    assert_eq!(round_trip(&model, &mut nvme, 0, &data), data);
    assert!(model.state().phase_flips >= 128 / 8);
    // Without a depth asked for (0), the default 32 is lowered to what MQES allows.
    let (_model, nvme) = started(config, opts(0, 4096));
    assert_eq!(nvme.options().queue_depth, 7);
}

/// Per-command CPU cost of the driver, natively against the model: 4 KiB Reads with the
/// model moving no data, at queue depth 1 and 32, SGL and PRP. The model's own time
/// (inside the SQ doorbell) is measured and subtracted.
#[test]
#[ignore = "benchmark: prints ns/command; cargo test -p peerdma-engine --release --lib -- --ignored --nocapture per_command_cpu_cost"]
fn per_command_cpu_cost() {
    for dp in [DataPointer::Sgl, DataPointer::Prp] {
        for qd in [1u32, 32] {
            let mut o = opts(qd, 4096);
            o.data_pointer = dp;
            o.command_timeout = Duration::from_secs(10);
            let (model, mut nvme) = started(Config::default(), o);
            model.state().discard_data = true;
            let span = 2u64 << 20;
            let dst = buffer(&model, span as usize);
            let mut stats = IoStats::default();
            for _ in 0..20 {
                nvme.transfer(Io::Read, 0, dst.iova(), span, &mut stats)
                    .expect("warm up");
            }
            let mut best = f64::MAX;
            let mut best_model = 0.0;
            for _ in 0..5 {
                let mut stats = IoStats::default();
                stats.latencies.reserve(200 * 512);
                model.state().busy = Duration::ZERO;
                let t = Instant::now();
                for _ in 0..200 {
                    nvme.transfer(Io::Read, 0, dst.iova(), span, &mut stats)
                        .expect("read");
                }
                let total = t.elapsed().as_nanos() as f64 / stats.commands as f64;
                let in_model = model.state().busy.as_nanos() as f64 / stats.commands as f64;
                if total < best {
                    best = total;
                    best_model = in_model;
                }
            }
            println!(
                "{dp:?} QD {qd:>2}: {best:7.0} ns/command in all, {best_model:6.0} in the model, {:7.0} in the driver",
                best - best_model
            );
        }
    }
}
