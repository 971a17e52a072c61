//! The VFIO ioctls the exporter issues, as safe functions over typed arguments.
//!
//! This is the only module with `unsafe` ioctl calls. Each call goes through
//! `rustix::ioctl::ioctl` with [`Call`], whose output type says what the
//! kernel's return value means: nothing, a number, or a new file descriptor
//! (`VFIO_GROUP_GET_DEVICE_FD` and `VFIO_DEVICE_FEATURE_DMA_BUF` return the new
//! fd as the ioctl's value, so they yield an [`OwnedFd`] directly).
//!
//! Errors are plain [`Errno`]s; callers name the ioctl and the device.

use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use peerdma_uapi::flex::{Feature, FlexBuf};
use peerdma_uapi::vfio::{
    vfio_device_bind_iommufd, vfio_device_feature_dma_buf, vfio_device_info, vfio_group_status,
    vfio_region_info, VFIO_CHECK_EXTENSION, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_FEATURE,
    VFIO_DEVICE_FEATURE_GET, VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_GET_INFO,
    VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET, VFIO_GET_API_VERSION, VFIO_GROUP_GET_DEVICE_FD,
    VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU,
};
use rustix::io::{Errno, Result};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode};

/// What an ioctl's non-negative return value means.
trait Ret {
    /// The typed result.
    type Output;
    /// Converts the raw return value.
    ///
    /// # Safety
    ///
    /// `out` is the return value of a successful call of an ioctl whose
    /// return value has this meaning.
    unsafe fn from_raw(out: IoctlOutput) -> Result<Self::Output>;
}

/// The return value carries nothing (0 on success).
struct Unit;
/// The return value is a number.
struct Int;
/// The return value is a new file descriptor the caller owns.
struct Fd;

impl Ret for Unit {
    type Output = ();
    unsafe fn from_raw(_: IoctlOutput) -> Result<()> {
        Ok(())
    }
}

impl Ret for Int {
    type Output = i32;
    unsafe fn from_raw(out: IoctlOutput) -> Result<i32> {
        Ok(out)
    }
}

impl Ret for Fd {
    type Output = OwnedFd;
    unsafe fn from_raw(out: IoctlOutput) -> Result<OwnedFd> {
        if out < 0 {
            return Err(Errno::BADF);
        }
        // SAFETY: per this function's contract the ioctl succeeded and returns a
        // new descriptor that nothing else owns; we take ownership exactly once.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

/// One ioctl call: an opcode, a pointer (or integer) argument, and the meaning
/// of the return value.
struct Call<R> {
    opcode: Opcode,
    arg: *mut c_void,
    _ret: PhantomData<R>,
}

// SAFETY: `Call` is only built by `call`, whose callers guarantee that `arg` is
// the argument `opcode` expects and stays valid for the kernel's reads and
// writes during the call. IS_MUTATING is true because most VFIO ioctls write
// their argument back. `output_from_ptr` does not touch the argument; it only
// interprets the return value as `R` says.
unsafe impl<R: Ret> Ioctl for Call<R> {
    type Output = R::Output;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        self.opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _arg: *mut c_void) -> Result<R::Output> {
        // SAFETY: rustix calls this only after a successful ioctl; `R` was chosen
        // by `call`'s caller to match `opcode`.
        unsafe { R::from_raw(out) }
    }
}

/// Issues `opcode` on `fd` with `arg`.
///
/// # Safety
///
/// `arg` must be what the kernel expects for `opcode` on this kind of fd (a
/// pointer to a correctly laid out, writable argument that lives until the call
/// returns, or an integer value), and `R` must match the meaning of the return
/// value.
unsafe fn call<R: Ret>(fd: BorrowedFd<'_>, opcode: Opcode, arg: *mut c_void) -> Result<R::Output> {
    let call = Call::<R> {
        opcode,
        arg,
        _ret: PhantomData,
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { rustix::ioctl::ioctl(fd, call) }
}

/// An integer passed by value in the pointer argument.
fn int_arg(value: usize) -> *mut c_void {
    ptr::without_provenance_mut(value)
}

/// `VFIO_GET_API_VERSION` on a container.
pub(crate) fn get_api_version(container: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: takes no argument; returns a number.
    unsafe { call::<Int>(container, VFIO_GET_API_VERSION, ptr::null_mut()) }
}

/// `VFIO_CHECK_EXTENSION` on a container: > 0 when `extension` is supported.
pub(crate) fn check_extension(container: BorrowedFd<'_>, extension: u32) -> Result<i32> {
    // SAFETY: the extension number is passed by value; returns a number.
    unsafe { call::<Int>(container, VFIO_CHECK_EXTENSION, int_arg(extension as usize)) }
}

/// `VFIO_SET_IOMMU` on a container.
pub(crate) fn set_iommu(container: BorrowedFd<'_>, iommu_type: u32) -> Result<()> {
    // SAFETY: the IOMMU type is passed by value; returns 0.
    unsafe { call::<Unit>(container, VFIO_SET_IOMMU, int_arg(iommu_type as usize)) }
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags.
pub(crate) fn group_get_status(group: BorrowedFd<'_>) -> Result<u32> {
    let mut status = vfio_group_status {
        argsz: size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: points to a vfio_group_status with argsz set, alive for the call;
    // the kernel writes the flags back.
    unsafe {
        call::<Unit>(
            group,
            VFIO_GROUP_GET_STATUS,
            ptr::from_mut(&mut status).cast(),
        )?
    };
    Ok(status.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`: attaches the group to `container`.
pub(crate) fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> Result<()> {
    let mut fd: i32 = container.as_raw_fd();
    // SAFETY: points to an int holding the container fd, alive for the call; the
    // kernel only reads it.
    unsafe {
        call::<Unit>(
            group,
            VFIO_GROUP_SET_CONTAINER,
            ptr::from_mut(&mut fd).cast(),
        )
    }
}

/// `VFIO_GROUP_GET_DEVICE_FD`: opens the device named `name` (its BDF).
pub(crate) fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    // SAFETY: points to a NUL-terminated string alive for the call (the kernel
    // only reads it); on success the return value is a new device fd.
    unsafe {
        call::<Fd>(
            group,
            VFIO_GROUP_GET_DEVICE_FD,
            name.as_ptr().cast_mut().cast(),
        )
    }
}

/// `VFIO_DEVICE_BIND_IOMMUFD` on a cdev device fd: returns the device id.
pub(crate) fn device_bind_iommufd(device: BorrowedFd<'_>, iommufd: BorrowedFd<'_>) -> Result<u32> {
    let mut bind = vfio_device_bind_iommufd {
        argsz: size_of::<vfio_device_bind_iommufd>() as u32,
        flags: 0,
        iommufd: iommufd.as_raw_fd(),
        out_devid: 0,
        token_uuid_ptr: 0,
    };
    // SAFETY: points to a complete vfio_device_bind_iommufd with argsz set and no
    // token flag, alive for the call; the kernel writes out_devid back.
    unsafe {
        call::<Unit>(
            device,
            VFIO_DEVICE_BIND_IOMMUFD,
            ptr::from_mut(&mut bind).cast(),
        )?
    };
    Ok(bind.out_devid)
}

/// `VFIO_DEVICE_GET_INFO` into `info`, whose `argsz` covers the whole buffer.
pub(crate) fn device_get_info(
    device: BorrowedFd<'_>,
    info: &mut FlexBuf<vfio_device_info>,
) -> Result<()> {
    // SAFETY: as_mut_ptr() sets argsz to the buffer's byte length, and the
    // buffer (8-byte aligned, owned by `info`) stays alive and unaliased for the
    // call; the kernel writes at most argsz bytes.
    unsafe { call::<Unit>(device, VFIO_DEVICE_GET_INFO, info.as_mut_ptr().cast()) }
}

/// `VFIO_DEVICE_GET_REGION_INFO` into `info` (index set by the caller).
pub(crate) fn device_get_region_info(
    device: BorrowedFd<'_>,
    info: &mut FlexBuf<vfio_region_info>,
) -> Result<()> {
    // SAFETY: as in `device_get_info`.
    unsafe {
        call::<Unit>(
            device,
            VFIO_DEVICE_GET_REGION_INFO,
            info.as_mut_ptr().cast(),
        )
    }
}

/// `VFIO_DEVICE_RESET`.
pub(crate) fn device_reset(device: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: takes no argument; returns 0.
    unsafe { call::<Unit>(device, VFIO_DEVICE_RESET, ptr::null_mut()) }
}

/// `VFIO_DEVICE_FEATURE` with `PROBE | GET | feature`: Ok when GET is supported.
pub(crate) fn device_feature_probe_get(device: BorrowedFd<'_>, feature: u32) -> Result<()> {
    let mut arg = Feature::new(
        VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET | feature,
        (),
    );
    // SAFETY: points to an 8-byte vfio_device_feature with argsz 8, alive for the
    // call; a PROBE reads no payload.
    unsafe { call::<Unit>(device, VFIO_DEVICE_FEATURE, ptr::from_mut(&mut arg).cast()) }
}

/// `VFIO_DEVICE_FEATURE` with `GET | DMA_BUF`: the new dma-buf fd.
pub(crate) fn device_feature_dma_buf(
    device: BorrowedFd<'_>,
    arg: &mut FlexBuf<Feature<vfio_device_feature_dma_buf>>,
) -> Result<OwnedFd> {
    // SAFETY: as_mut_ptr() sets argsz and nr_ranges from the buffer, which holds
    // the header, the payload and nr_ranges ranges, 8-byte aligned and alive for
    // the call; on success the return value is a new dma-buf fd.
    unsafe { call::<Fd>(device, VFIO_DEVICE_FEATURE, arg.as_mut_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn errno_comes_back_unchanged() {
        // A VFIO ioctl on a regular file fails with ENOTTY, not a panic or a
        // bogus fd.
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        assert_eq!(device_reset(file.as_fd()), Err(Errno::NOTTY));
        let name = c"0000:00:00.0";
        assert_eq!(
            group_get_device_fd(file.as_fd(), name).unwrap_err(),
            Errno::NOTTY
        );
    }
}
