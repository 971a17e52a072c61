//! The pure part of the engine: checking a request against the block device's and the
//! dma-buf's limits, cutting it into I/Os no longer than the device's
//! `max_hw_sectors_kb`, and the SQE of each I/O.

use std::ffi::c_void;
use std::os::fd::RawFd;

use rustix::io_uring::{io_uring_ptr, io_uring_sqe, io_uring_user_data, IoringOp, IoringSqeFlags};

use super::error::KernelNvmeError;

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Namespace → dma-buf (`IORING_OP_READ_FIXED`).
    Read,
    /// Dma-buf → namespace (`IORING_OP_WRITE_FIXED`).
    Write,
}

impl Direction {
    /// The io_uring opcode's name, for messages.
    pub fn op_name(self) -> &'static str {
        match self {
            Direction::Read => "IORING_OP_READ_FIXED",
            Direction::Write => "IORING_OP_WRITE_FIXED",
        }
    }
}

/// What the block device allows, from `/sys/block/<name>/queue/` and `size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLimits {
    /// Logical block size in bytes (`logical_block_size`): device offsets and lengths
    /// are multiples of it (O_DIRECT).
    pub logical_block: u64,
    /// Longest single I/O in bytes (`max_hw_sectors_kb` × 1024). The posted v3 series
    /// leaks a dma-buf mapping reference on a longer I/O submitted without
    /// `IOSQE_ASYNC`, so the engine never submits one.
    pub max_io: u64,
    /// Capacity in bytes (`size` × 512).
    pub capacity: u64,
}

/// The dma-buf's offset alignment in bytes (nvme-pci's `dma_alignment` + 1): the
/// kernel refuses other offsets with `EINVAL`.
pub const DMABUF_ALIGN: u64 = 4;

/// One I/O of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedIo {
    /// Byte offset on the namespace.
    pub device_offset: u64,
    /// Byte offset into the dma-buf.
    pub buf_offset: u64,
    /// Bytes.
    pub len: u32,
}

/// Checks a request of `len` bytes at `device_offset` on the namespace and `buf_offset`
/// in a dma-buf of `buf_size` bytes.
///
/// # Errors
/// [`KernelNvmeError::Alignment`] for an offset or a length that is not a multiple of
/// the logical block (device side) or of [`DMABUF_ALIGN`] (dma-buf side) or a zero
/// length; [`KernelNvmeError::OutOfRange`] past the end of either.
pub fn check(
    device: &str,
    limits: BlockLimits,
    buf_size: u64,
    device_offset: u64,
    buf_offset: u64,
    len: u64,
) -> Result<(), KernelNvmeError> {
    let lb = limits.logical_block.max(1);
    if len == 0
        || !device_offset.is_multiple_of(lb)
        || !len.is_multiple_of(lb)
        || !buf_offset.is_multiple_of(DMABUF_ALIGN)
    {
        return Err(KernelNvmeError::Alignment {
            device: device.to_owned(),
            device_offset,
            buf_offset,
            len,
            logical_block: lb,
        });
    }
    let past = |off: u64, size: u64| off.checked_add(len).is_none_or(|end| end > size);
    if past(device_offset, limits.capacity) {
        return Err(KernelNvmeError::OutOfRange {
            device: device.to_owned(),
            what: "namespace",
            offset: device_offset,
            len,
            size: limits.capacity,
        });
    }
    if past(buf_offset, buf_size) {
        return Err(KernelNvmeError::OutOfRange {
            device: device.to_owned(),
            what: "dma-buf",
            offset: buf_offset,
            len,
            size: buf_size,
        });
    }
    Ok(())
}

/// Cuts a checked request into I/Os of at most `max_io` bytes (rounded down to the
/// logical block), in order.
pub fn chunks(limits: BlockLimits, device_offset: u64, buf_offset: u64, len: u64) -> Vec<FixedIo> {
    let lb = limits.logical_block.max(1);
    // An I/O's length is a u32 in the SQE; keep it a whole number of blocks.
    let max = (limits.max_io.min(u64::from(u32::MAX)) / lb * lb).max(lb);
    let mut out = Vec::with_capacity(len.div_ceil(max) as usize);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(max);
        out.push(FixedIo {
            device_offset: device_offset + done,
            buf_offset: buf_offset + done,
            len: n as u32,
        });
        done += n;
    }
    out
}

/// The SQE of one I/O on `fd` through registered buffer `buf_index` (a dma-buf: its
/// `addr` is the byte offset into the dma-buf, as the series defines it).
pub fn sqe(dir: Direction, fd: RawFd, buf_index: u16, io: FixedIo, user_data: u64) -> io_uring_sqe {
    let mut sqe = io_uring_sqe {
        opcode: match dir {
            Direction::Read => IoringOp::ReadFixed,
            Direction::Write => IoringOp::WriteFixed,
        },
        flags: IoringSqeFlags::empty(),
        fd,
        user_data: io_uring_user_data::from_u64(user_data),
        ..Default::default()
    };
    sqe.off_or_addr2.off = io.device_offset;
    sqe.addr_or_splice_off_in.addr = io_uring_ptr::new(io.buf_offset as usize as *mut c_void);
    sqe.len.len = io.len;
    sqe.buf.buf_index = buf_index;
    sqe
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BlockLimits = BlockLimits {
        logical_block: 512,
        max_io: 512 * 1024,
        capacity: 64 << 20,
    };

    #[test]
    fn chunks_never_exceed_max_hw_sectors() {
        let c = chunks(LIMITS, 4096, 8, (2 << 20) + 512);
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(|io| u64::from(io.len) <= LIMITS.max_io));
        assert_eq!(
            c[0],
            FixedIo {
                device_offset: 4096,
                buf_offset: 8,
                len: 512 * 1024
            }
        );
        assert_eq!(
            c[4],
            FixedIo {
                device_offset: 4096 + (2 << 20),
                buf_offset: 8 + (2 << 20),
                len: 512
            }
        );
        let total: u64 = c.iter().map(|io| u64::from(io.len)).sum();
        assert_eq!(total, (2 << 20) + 512);
    }

    #[test]
    fn chunks_round_the_limit_down_to_whole_blocks() {
        let limits = BlockLimits {
            logical_block: 4096,
            max_io: 10_000,
            ..LIMITS
        };
        let c = chunks(limits, 0, 0, 5 * 4096);
        assert!(c.iter().all(|io| io.len == 8192 || io.len == 4096));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn check_refuses_misalignment_and_overruns() {
        let ok = check("nvme0n1", LIMITS, 4 << 20, 0, 0, 4096);
        assert!(ok.is_ok());
        for (dev, buf, len) in [(1, 0, 512), (0, 2, 512), (0, 0, 100), (0, 0, 0)] {
            let e = check("nvme0n1", LIMITS, 4 << 20, dev, buf, len).unwrap_err();
            assert!(matches!(e, KernelNvmeError::Alignment { .. }), "{e}");
            assert!(e.to_string().contains("nvme0n1"), "{e}");
        }
        let e = check("nvme0n1", LIMITS, 4 << 20, 0, 4 << 20, 512).unwrap_err();
        assert!(e.to_string().contains("dma-buf"), "{e}");
        let e = check("nvme0n1", LIMITS, 4 << 20, 64 << 20, 0, 512).unwrap_err();
        assert!(e.to_string().contains("namespace"), "{e}");
        let e = check("nvme0n1", LIMITS, 4 << 20, u64::MAX - 511, 0, 512).unwrap_err();
        assert!(matches!(e, KernelNvmeError::OutOfRange { .. }), "{e}");
    }

    #[test]
    fn sqe_carries_the_dma_buf_offset_in_addr() {
        let io = FixedIo {
            device_offset: 1 << 20,
            buf_offset: 0x1004,
            len: 8192,
        };
        let s = sqe(Direction::Write, 7, 0, io, 42);
        assert_eq!(s.opcode as u8, IoringOp::WriteFixed as u8);
        assert_eq!(s.fd, 7);
        assert_eq!(s.user_data.u64_(), 42);
        assert!(
            s.flags.is_empty(),
            "no IOSQE_ASYNC needed: chunks stay under the limit"
        );
        let r = sqe(Direction::Read, 7, 3, io, 1);
        assert_eq!(r.opcode as u8, IoringOp::ReadFixed as u8);
    }
}
