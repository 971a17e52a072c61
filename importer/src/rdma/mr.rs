//! Protection domains and memory regions: host memory (`ibv_reg_mr`) and any
//! dma-buf (`ibv_reg_dmabuf_mr`): a vfio-pci BAR export, a GPU driver's
//! export, a udmabuf.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::error::{last_errno, RdmaError, Result};
use super::sys;
use peerdma_host::importers::{BarImport, RdmaDriver};
use peerdma_host::kernel::HostPaths;

/// What the peer (and the local NIC) may do with an MR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The local NIC may write into it (an RDMA READ's destination, a receive buffer).
    pub local_write: bool,
    /// The peer may RDMA WRITE into it.
    pub remote_write: bool,
    /// The peer may RDMA READ from it.
    pub remote_read: bool,
}

impl Access {
    /// Everything: local write, remote write and remote read.
    pub const ALL: Access = Access {
        local_write: true,
        remote_write: true,
        remote_read: true,
    };
    /// A source the local NIC only reads (an RDMA WRITE's source).
    pub const LOCAL_READ: Access = Access {
        local_write: false,
        remote_write: false,
        remote_read: false,
    };

    fn flags(self) -> i32 {
        let mut f = 0;
        // REMOTE_WRITE requires LOCAL_WRITE (verbs spec).
        if self.local_write || self.remote_write {
            f |= sys::IBV_ACCESS_LOCAL_WRITE;
        }
        if self.remote_write {
            f |= sys::IBV_ACCESS_REMOTE_WRITE;
        }
        if self.remote_read {
            f |= sys::IBV_ACCESS_REMOTE_READ;
        }
        f
    }
}

/// A protection domain on one RDMA device; MRs and QPs that work together
/// share one.
pub struct ProtectionDomain {
    pd: NonNull<sys::ibv_pd>,
    context: NonNull<sys::ibv_context>,
    device: String,
    driver: RdmaDriver,
}

// SAFETY: libibverbs objects may be used from any thread; the PD is only
// freed in Drop.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above; registering MRs on one PD from several threads is allowed.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    /// Allocates a PD on the device context `context` (from an RDMA CM id).
    pub(crate) fn alloc(context: NonNull<sys::ibv_context>) -> Result<Arc<ProtectionDomain>> {
        // SAFETY: context is a live device context owned by librdmacm.
        let device = unsafe {
            let name = sys::ibv_get_device_name((*context.as_ptr()).device);
            if name.is_null() {
                "unknown RDMA device".to_string()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            }
        };
        // SAFETY: as above.
        let pd = unsafe { sys::ibv_alloc_pd(context.as_ptr()) };
        let pd = NonNull::new(pd).ok_or_else(|| RdmaError::Call {
            call: "ibv_alloc_pd",
            errno: last_errno(),
            fix: "check the RDMA device's limits (`rdma resource`)",
        })?;
        let driver = RdmaDriver::of_device(&HostPaths::system(), &device)
            .unwrap_or_else(|| RdmaDriver::Other(format!("{device} (no parent device in sysfs)")));
        Ok(Arc::new(ProtectionDomain {
            pd,
            context,
            device,
            driver,
        }))
    }

    /// The RDMA device's name (`mlx5_0`, `rxe0`, ...).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The device's kernel driver.
    pub fn driver(&self) -> &RdmaDriver {
        &self.driver
    }

    pub(crate) fn context(&self) -> NonNull<sys::ibv_context> {
        self.context
    }

    pub(crate) fn raw(&self) -> *mut sys::ibv_pd {
        self.pd.as_ptr()
    }

    /// Registers a new page-aligned host buffer of `len` bytes (zeroed).
    ///
    /// # Errors
    ///
    /// [`RdmaError::Call`] when the allocation or `ibv_reg_mr` fails.
    pub fn register_host(self: &Arc<Self>, len: usize, access: Access) -> Result<MemoryRegion> {
        let buf = HostBuffer::new(len)?;
        // SAFETY: buf is a live mapping of len bytes that the MR keeps alive.
        let mr =
            unsafe { sys::ibv_reg_mr(self.raw(), buf.ptr.as_ptr().cast(), len, access.flags()) };
        let mr = NonNull::new(mr).ok_or_else(|| RdmaError::Call {
            call: "ibv_reg_mr",
            errno: last_errno(),
            fix: "raise the locked-memory limit (`ulimit -l`) or register less",
        })?;
        Ok(MemoryRegion {
            mr,
            pd: Arc::clone(self),
            backing: Backing::Host(buf),
        })
    }

    /// Registers `length` bytes of the dma-buf `dmabuf` from `offset`, at
    /// `iova` in the MR's address space (work requests name `iova + off`).
    /// The MR keeps `dmabuf` open until it is deregistered.
    ///
    /// # Errors
    ///
    /// [`RdmaError::DmabufRefused`] when the kernel refuses, with the
    /// device's driver and what Linux 7.2 does with dma-buf MRs there.
    pub fn register_dmabuf<D>(
        self: &Arc<Self>,
        dmabuf: D,
        offset: u64,
        length: u64,
        iova: u64,
        access: Access,
    ) -> Result<MemoryRegion>
    where
        D: AsFd + Send + Sync + 'static,
    {
        let fd = dmabuf.as_fd().as_raw_fd();
        // SAFETY: fd is open for the call (dmabuf is borrowed); the kernel
        // takes its own reference to the dma-buf.
        let mr = unsafe {
            sys::ibv_reg_dmabuf_mr(
                self.raw(),
                offset,
                length as usize,
                iova,
                fd,
                access.flags(),
            )
        };
        let mr = match NonNull::new(mr) {
            Some(mr) => mr,
            None => return Err(self.dmabuf_refused(last_errno())),
        };
        Ok(MemoryRegion {
            mr,
            pd: Arc::clone(self),
            backing: Backing::Dmabuf {
                _owner: Box::new(dmabuf),
                iova,
            },
        })
    }

    fn dmabuf_refused(&self, errno: Errno) -> RdmaError {
        let (why, fix) = match self.driver.importer() {
            Some(row) => match row.bar {
                BarImport::NoDmabufImport => (
                    row.why.to_string(),
                    "use an RDMA NIC whose driver registers dma-buf MRs (mlx5, irdma), or stage \
                     through a host-memory MR (not peer-to-peer)",
                ),
                BarImport::Refused => (
                    row.why.to_string(),
                    "use mlx5 (default MRs) or irdma for a vfio-pci BAR; other exporters' \
                     dma-bufs (a GPU driver's) may still work here",
                ),
                BarImport::Accepted | BarImport::Conditional => (
                    format!(
                        "{}; so the refusal comes from elsewhere: the exporter (a revoked \
                         buffer gives ENODEV), the P2P distance between the NIC and the BAR \
                         (EINVAL), or the kernel configuration",
                        row.why
                    ),
                    "check dmesg, that memory decode is on, that CONFIG_INFINIBAND_ON_DEMAND_PAGING \
                     is set (mlx5), and that the NIC and the exporting device share a PCIe switch \
                     or an allow-listed host bridge",
                ),
            },
            None => (
                "this driver is not in the table".to_string(),
                "check whether the driver implements reg_user_mr_dmabuf with a revocable \
                 attachment",
            ),
        };
        RdmaError::DmabufRefused {
            device: self.device.clone(),
            driver: self.driver.clone(),
            errno,
            why,
            fix,
        }
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: every MR and QP holds an Arc of the PD, so none is left.
        unsafe { sys::ibv_dealloc_pd(self.pd.as_ptr()) };
    }
}

/// A page-aligned anonymous mapping.
struct HostBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl HostBuffer {
    fn new(len: usize) -> Result<HostBuffer> {
        // SAFETY: a fresh anonymous private mapping; nothing else aliases it.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len.max(1),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(|errno| RdmaError::Call {
            call: "mmap",
            errno,
            fix: "register a smaller buffer",
        })?;
        Ok(HostBuffer {
            ptr: NonNull::new(ptr.cast()).expect("mmap returns non-null"),
            len,
        })
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in new() with this length.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len.max(1)) };
    }
}

enum Backing {
    Host(HostBuffer),
    Dmabuf {
        _owner: Box<dyn AsFd + Send + Sync>,
        iova: u64,
    },
}

/// A registered memory region, deregistered on drop (before its host buffer
/// is unmapped or its dma-buf closed).
pub struct MemoryRegion {
    mr: NonNull<sys::ibv_mr>,
    pd: Arc<ProtectionDomain>,
    backing: Backing,
}

// SAFETY: the MR is immutable after registration; the host buffer is only
// reached through &self/&mut self.
unsafe impl Send for MemoryRegion {}
// SAFETY: as above.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// The local key.
    pub fn lkey(&self) -> u32 {
        // SAFETY: mr is live until drop.
        unsafe { (*self.mr.as_ptr()).lkey }
    }

    /// The remote key the peer names in its work requests.
    pub fn rkey(&self) -> u32 {
        // SAFETY: mr is live until drop.
        unsafe { (*self.mr.as_ptr()).rkey }
    }

    /// Bytes registered.
    pub fn len(&self) -> u64 {
        // SAFETY: mr is live until drop.
        unsafe { (*self.mr.as_ptr()).length as u64 }
    }

    /// Whether the MR is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address work requests use for byte 0: the buffer's virtual
    /// address for host memory, the IOVA given at registration for a dma-buf.
    pub fn addr(&self) -> u64 {
        match &self.backing {
            Backing::Host(b) => b.ptr.as_ptr() as u64,
            Backing::Dmabuf { iova, .. } => *iova,
        }
    }

    /// Whether the MR was made from a dma-buf.
    pub fn is_dmabuf(&self) -> bool {
        matches!(self.backing, Backing::Dmabuf { .. })
    }

    /// The PD it belongs to.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }

    /// What a peer needs to address this MR.
    pub fn remote(&self) -> RemoteMr {
        RemoteMr {
            addr: self.addr(),
            rkey: self.rkey(),
            len: self.len(),
        }
    }

    /// The host buffer's bytes (`None` for a dma-buf MR). Read it only when
    /// no RDMA operation into it is in flight.
    pub fn host_bytes(&self) -> Option<&[u8]> {
        match &self.backing {
            // SAFETY: the mapping is live and len bytes long; the NIC writes
            // into it only while the caller has operations in flight.
            Backing::Host(b) => Some(unsafe { std::slice::from_raw_parts(b.ptr.as_ptr(), b.len) }),
            Backing::Dmabuf { .. } => None,
        }
    }

    /// The host buffer's bytes, writable (`None` for a dma-buf MR).
    pub fn host_bytes_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.backing {
            // SAFETY: as host_bytes; &mut self excludes other Rust access.
            Backing::Host(b) => {
                Some(unsafe { std::slice::from_raw_parts_mut(b.ptr.as_ptr(), b.len) })
            }
            Backing::Dmabuf { .. } => None,
        }
    }

    pub(crate) fn check(&self, what: &'static str, offset: u64, len: u64) -> Result<()> {
        if offset.checked_add(len).is_some_and(|e| e <= self.len()) {
            Ok(())
        } else {
            Err(RdmaError::OutOfRange {
                what,
                offset,
                len,
                mr_len: self.len(),
                fix: "post ranges inside the registered MR",
            })
        }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered in ProtectionDomain::register_*; the backing
        // (buffer or dma-buf fd) is dropped after this, with the struct.
        unsafe { sys::ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// A peer's MR as it advertises it: address of byte 0, rkey, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteMr {
    /// The address of byte 0 in the peer's MR.
    pub addr: u64,
    /// The peer's rkey.
    pub rkey: u32,
    /// The MR's length.
    pub len: u64,
}

impl RemoteMr {
    /// Bytes in [`to_bytes`](Self::to_bytes)' encoding.
    pub const ENCODED_LEN: usize = 20;

    /// Little-endian addr, rkey, len.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.rkey.to_le_bytes());
        b[12..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// The inverse of [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(b: &[u8]) -> Option<RemoteMr> {
        let b: &[u8; Self::ENCODED_LEN] = b.get(..Self::ENCODED_LEN)?.try_into().ok()?;
        Some(RemoteMr {
            addr: u64::from_le_bytes(b[..8].try_into().ok()?),
            rkey: u32::from_le_bytes(b[8..12].try_into().ok()?),
            len: u64::from_le_bytes(b[12..].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mr_round_trips() {
        let r = RemoteMr {
            addr: 0x7f00_1234_5000,
            rkey: 0xdead_beef,
            len: 1 << 30,
        };
        assert_eq!(RemoteMr::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(RemoteMr::from_bytes(&[0; 3]), None);
    }

    #[test]
    fn remote_write_implies_local_write() {
        let a = Access {
            local_write: false,
            remote_write: true,
            remote_read: false,
        };
        assert_eq!(
            a.flags(),
            sys::IBV_ACCESS_LOCAL_WRITE | sys::IBV_ACCESS_REMOTE_WRITE
        );
        assert_eq!(Access::LOCAL_READ.flags(), 0);
    }
}
