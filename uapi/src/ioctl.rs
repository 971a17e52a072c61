//! Typed ioctl patterns: each one ties an opcode to the argument the kernel expects
//! and to what the ioctl's return value means, the way rustix's
//! [`rustix::ioctl::Updater`] does.
//!
//! rustix covers arguments the kernel reads ([`Setter`], [`IntegerSetter`]), writes
//! ([`Getter`]) or both ([`Updater`]), and ioctls without one ([`NoArg`]); all of them
//! return nothing. The kernel ABIs peerdma uses need three more:
//!
//! - [`FdOut`]: the return value is a new file descriptor the caller owns
//!   (`UDMABUF_CREATE`, `VFIO_GROUP_GET_DEVICE_FD`, `VFIO_DEVICE_FEATURE` with
//!   `VFIO_DEVICE_FEATURE_DMA_BUF`).
//! - [`FlexUpdater`]: the argument is a variable-length [`FlexBuf`] whose `argsz` the
//!   kernel honours (`VFIO_DEVICE_GET_INFO`, `VFIO_DEVICE_GET_REGION_INFO`).
//! - [`IntOut`]: the return value is a number (`VFIO_GET_API_VERSION`,
//!   `VFIO_CHECK_EXTENSION`).
//!
//! The module next to each opcode binds it to its pattern and argument with a type
//! alias (`vfio::VfioGroupGetStatus<'a> = Updater<'a, VFIO_GROUP_GET_STATUS,
//! vfio_group_status>`); [`IoctlType`] exposes the binding so that the layout test in
//! `peerdma-testbed` checks it against the C headers. Issuing a call stays `unsafe`
//! (the kernel side is not visible to the compiler): callers write one
//! `unsafe { ioctl(fd, Alias::new(&mut arg)) }` with a `SAFETY` line.
//!
//! With [`flex`](crate::flex), this is the only module of the crate with `unsafe`.

#![allow(unsafe_code)]

use core::ffi::{c_void, CStr};
use core::marker::PhantomData;
use std::os::fd::{FromRawFd, OwnedFd};

use rustix::io::{Errno, Result};
/// Issues an ioctl (rustix's), re-exported so that callers of the patterns here need
/// nothing else.
pub use rustix::ioctl::ioctl;
use rustix::ioctl::{Getter, IntegerSetter, Ioctl, IoctlOutput, NoArg, Opcode, Setter, Updater};

use crate::flex::{FlexBuf, FlexHeader};

/// The opcode and argument type an ioctl pattern is bound to. Implemented for rustix's
/// patterns and for the ones here, so that an alias can be checked without a call.
pub trait IoctlType {
    /// The opcode.
    const OPCODE: Opcode;
    /// The argument the kernel reads or writes (`()` for none, `usize` for an integer
    /// passed by value, the header type for a [`FlexBuf`]).
    type Arg: ?Sized;
    /// Bytes of fixed-size argument the kernel reads or writes at the pointer (0 for
    /// none, an integer passed by value, or a string).
    const ARG_SIZE: usize;
}

impl<const OPCODE: Opcode> IoctlType for NoArg<OPCODE> {
    const OPCODE: Opcode = OPCODE;
    type Arg = ();
    const ARG_SIZE: usize = 0;
}

impl<const OPCODE: Opcode> IoctlType for IntegerSetter<OPCODE> {
    const OPCODE: Opcode = OPCODE;
    type Arg = usize;
    const ARG_SIZE: usize = 0;
}

impl<const OPCODE: Opcode, T> IoctlType for Setter<OPCODE, T> {
    const OPCODE: Opcode = OPCODE;
    type Arg = T;
    const ARG_SIZE: usize = size_of::<T>();
}

impl<const OPCODE: Opcode, T> IoctlType for Getter<OPCODE, T> {
    const OPCODE: Opcode = OPCODE;
    type Arg = T;
    const ARG_SIZE: usize = size_of::<T>();
}

impl<const OPCODE: Opcode, T> IoctlType for Updater<'_, OPCODE, T> {
    const OPCODE: Opcode = OPCODE;
    type Arg = T;
    const ARG_SIZE: usize = size_of::<T>();
}

/// An ioctl whose argument (a `T` the kernel reads, and for some opcodes writes back)
/// yields a new file descriptor as the return value.
///
/// `T` may be a sized argument struct ([`FdOut::new`]), a [`FlexBuf`]
/// ([`FdOut::new_flex`]) or a NUL-terminated string ([`FdOut::new_c_str`]).
pub struct FdOut<'a, const OPCODE: Opcode, T: ?Sized> {
    arg: *mut c_void,
    _borrow: PhantomData<&'a mut T>,
}

impl<'a, const OPCODE: Opcode, T> FdOut<'a, OPCODE, T> {
    /// An ioctl over `arg`.
    ///
    /// # Safety
    ///
    /// - `OPCODE` is a valid opcode whose argument is a pointer to a `T`, which the
    ///   kernel reads and writes within `size_of::<T>()` bytes.
    /// - On success the ioctl returns a new file descriptor that nothing else owns.
    pub unsafe fn new(arg: &'a mut T) -> Self {
        Self {
            arg: core::ptr::from_mut(arg).cast(),
            _borrow: PhantomData,
        }
    }
}

impl<'a, const OPCODE: Opcode, H: FlexHeader> FdOut<'a, OPCODE, FlexBuf<H>> {
    /// An ioctl over the variable-length `arg`; its size and count fields are brought
    /// up to date first ([`FlexBuf::as_mut_ptr`]). No allocation.
    ///
    /// # Safety
    ///
    /// - `OPCODE` is a valid opcode whose argument is an `H` followed by its array, of
    ///   which the kernel reads and writes at most the `argsz` bytes `arg` describes.
    /// - On success the ioctl returns a new file descriptor that nothing else owns.
    pub unsafe fn new_flex(arg: &'a mut FlexBuf<H>) -> Self {
        Self {
            arg: arg.as_mut_ptr().cast(),
            _borrow: PhantomData,
        }
    }
}

impl<'a, const OPCODE: Opcode> FdOut<'a, OPCODE, CStr> {
    /// An ioctl over the NUL-terminated string `arg`, which the kernel only reads.
    ///
    /// # Safety
    ///
    /// - `OPCODE` is a valid opcode whose argument is a pointer to a NUL-terminated
    ///   string that the kernel does not write.
    /// - On success the ioctl returns a new file descriptor that nothing else owns.
    pub unsafe fn new_c_str(arg: &'a CStr) -> Self {
        Self {
            arg: arg.as_ptr().cast_mut().cast(),
            _borrow: PhantomData,
        }
    }
}

impl<const OPCODE: Opcode, T: ?Sized> core::fmt::Debug for FdOut<'_, OPCODE, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("FdOut").field(&OPCODE).finish()
    }
}

// SAFETY: the constructors' contracts make `arg` the argument OPCODE expects, valid and
// exclusively borrowed for 'a, and the return value of a successful call a new fd.
// IS_MUTATING is true because some of these opcodes write their argument back
// (VFIO_DEVICE_FEATURE may update argsz); a read-only string is never written by its
// opcode (new_c_str's contract).
unsafe impl<const OPCODE: Opcode, T: ?Sized> Ioctl for FdOut<'_, OPCODE, T> {
    type Output = OwnedFd;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _arg: *mut c_void) -> Result<OwnedFd> {
        if out < 0 {
            return Err(Errno::BADF);
        }
        // SAFETY: rustix calls this only after a successful call; by the constructor's
        // contract its return value is a new descriptor nothing else owns, and it is
        // taken over exactly once, here.
        Ok(unsafe { OwnedFd::from_raw_fd(out) })
    }
}

impl<const OPCODE: Opcode, T: crate::flex::Pod> IoctlType for FdOut<'_, OPCODE, T> {
    const OPCODE: Opcode = OPCODE;
    type Arg = T;
    const ARG_SIZE: usize = size_of::<T>();
}

impl<const OPCODE: Opcode, H: FlexHeader> IoctlType for FdOut<'_, OPCODE, FlexBuf<H>> {
    const OPCODE: Opcode = OPCODE;
    type Arg = H;
    const ARG_SIZE: usize = size_of::<H>();
}

impl<const OPCODE: Opcode> IoctlType for FdOut<'_, OPCODE, CStr> {
    const OPCODE: Opcode = OPCODE;
    type Arg = CStr;
    const ARG_SIZE: usize = 0;
}

/// An ioctl that reads and writes a variable-length [`FlexBuf`] in place, within the
/// `argsz` the buffer sets, and returns 0: rustix's [`Updater`] for arguments that end
/// in an array or a capability chain.
pub struct FlexUpdater<'a, const OPCODE: Opcode, H: FlexHeader> {
    buf: &'a mut FlexBuf<H>,
}

impl<'a, const OPCODE: Opcode, H: FlexHeader> FlexUpdater<'a, OPCODE, H> {
    /// An ioctl over `buf`; its size and count fields are brought up to date when the
    /// call is made.
    ///
    /// # Safety
    ///
    /// `OPCODE` is a valid opcode whose argument is an `H` followed by its array, of
    /// which the kernel reads and writes at most the `argsz` bytes the buffer sets.
    pub unsafe fn new(buf: &'a mut FlexBuf<H>) -> Self {
        Self { buf }
    }
}

impl<const OPCODE: Opcode, H: FlexHeader> core::fmt::Debug for FlexUpdater<'_, OPCODE, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("FlexUpdater").field(&OPCODE).finish()
    }
}

// SAFETY: by `new`'s contract the kernel stays within the `argsz` bytes that
// `as_mut_ptr` writes into the header, which is the buffer's own length; the buffer is
// 8-byte aligned, initialized and exclusively borrowed for the call.
unsafe impl<const OPCODE: Opcode, H: FlexHeader> Ioctl for FlexUpdater<'_, OPCODE, H> {
    type Output = ();
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().cast()
    }

    unsafe fn output_from_ptr(_out: IoctlOutput, _arg: *mut c_void) -> Result<()> {
        Ok(())
    }
}

impl<const OPCODE: Opcode, H: FlexHeader> IoctlType for FlexUpdater<'_, OPCODE, H> {
    const OPCODE: Opcode = OPCODE;
    type Arg = H;
    const ARG_SIZE: usize = size_of::<H>();
}

/// An ioctl whose return value is a number, with no argument or an integer passed by
/// value.
pub struct IntOut<const OPCODE: Opcode> {
    value: *mut c_void,
}

impl<const OPCODE: Opcode> IntOut<OPCODE> {
    /// An ioctl without an argument.
    ///
    /// # Safety
    ///
    /// `OPCODE` is a valid opcode that takes no argument.
    pub unsafe fn new() -> Self {
        Self {
            value: core::ptr::null_mut(),
        }
    }

    /// An ioctl with the integer `value` as its argument.
    ///
    /// # Safety
    ///
    /// `OPCODE` is a valid opcode whose argument is an integer passed by value, and
    /// `value` is in its range.
    pub unsafe fn new_usize(value: usize) -> Self {
        Self {
            value: core::ptr::without_provenance_mut(value),
        }
    }
}

impl<const OPCODE: Opcode> core::fmt::Debug for IntOut<OPCODE> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("IntOut").field(&OPCODE).finish()
    }
}

// SAFETY: the argument is a value, not a pointer the kernel follows (constructors'
// contracts); the return value is only read as a number.
unsafe impl<const OPCODE: Opcode> Ioctl for IntOut<OPCODE> {
    type Output = i32;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        self.value
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _arg: *mut c_void) -> Result<i32> {
        Ok(out)
    }
}

impl<const OPCODE: Opcode> IoctlType for IntOut<OPCODE> {
    const OPCODE: Opcode = OPCODE;
    type Arg = usize;
    const ARG_SIZE: usize = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::{VfioDeviceGetRegionInfo, VfioGroupGetDeviceFd, VFIO_DEVICE_GET_REGION_INFO};
    use std::os::fd::AsFd;

    #[test]
    fn errno_comes_back_unchanged() {
        // A VFIO ioctl on a regular file fails with ENOTTY, not a panic or a bogus fd.
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        // SAFETY: the opcode takes a NUL-terminated name and returns a new fd.
        let got = unsafe {
            ioctl(
                file.as_fd(),
                VfioGroupGetDeviceFd::new_c_str(c"0000:00:00.0"),
            )
        };
        assert_eq!(got.unwrap_err(), Errno::NOTTY);
        let mut info = FlexBuf::new(crate::vfio::vfio_region_info::default(), 0);
        // SAFETY: the opcode takes a vfio_region_info within argsz.
        let got = unsafe { ioctl(file.as_fd(), VfioDeviceGetRegionInfo::new(&mut info)) };
        assert_eq!(got, Err(Errno::NOTTY));
    }

    #[test]
    fn aliases_expose_their_binding() {
        assert_eq!(
            <VfioDeviceGetRegionInfo<'static> as IoctlType>::OPCODE,
            VFIO_DEVICE_GET_REGION_INFO
        );
        assert_eq!(
            <VfioDeviceGetRegionInfo<'static> as IoctlType>::ARG_SIZE,
            32
        );
        assert_eq!(<VfioGroupGetDeviceFd<'static> as IoctlType>::ARG_SIZE, 0);
    }
}
