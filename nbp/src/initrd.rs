//! Hands the initrd to the Linux EFI stub the way Linux 5.8+ asks for it: a handle with the
//! LINUX_EFI_INITRD_MEDIA_GUID vendor device path and a LoadFile2 protocol that copies the
//! bytes out. (The stub's `initrd=` option only reads from the kernel's own file system, which a
//! kernel loaded from memory does not have.)

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::c_void;

use uefi::proto::device_path::build::{self, DevicePathBuilder};
use uefi::proto::device_path::DevicePath;
use uefi::{boot, guid, Guid, Handle, Identify, Status};
use uefi_raw::protocol::device_path::DevicePathProtocol;
use uefi_raw::protocol::media::LoadFile2Protocol;
use uefi_raw::Boolean;

const LINUX_EFI_INITRD_MEDIA_GUID: Guid = guid!("5568e427-68fc-4f3d-ac74-ca555231cc68");

/// The protocol struct first, so that the `this` pointer the stub passes back is ours.
#[repr(C)]
struct InitrdLoader {
    protocol: LoadFile2Protocol,
    data: &'static [u8],
}

unsafe extern "efiapi" fn load_file(
    this: *mut LoadFile2Protocol,
    _file_path: *const DevicePathProtocol,
    _boot_policy: Boolean,
    buffer_size: *mut usize,
    buffer: *mut c_void,
) -> Status {
    if this.is_null() || buffer_size.is_null() {
        return Status::INVALID_PARAMETER;
    }
    // SAFETY: `this` is the `protocol` field at the start of a leaked `InitrdLoader`, installed
    // below; `buffer_size` is non-null and points to the caller's size.
    unsafe {
        let data = (*this.cast::<InitrdLoader>()).data;
        if buffer.is_null() || *buffer_size < data.len() {
            *buffer_size = data.len();
            return Status::BUFFER_TOO_SMALL;
        }
        // SAFETY: the caller's buffer holds at least `data.len()` bytes (checked above).
        core::ptr::copy_nonoverlapping(data.as_ptr(), buffer.cast::<u8>(), data.len());
        *buffer_size = data.len();
    }
    Status::SUCCESS
}

/// Publishes `data` as the initrd for the kernel started next. Everything is leaked on
/// purpose: the firmware and the kernel's stub use it after this program hands over control.
pub fn install(data: Vec<u8>) -> uefi::Result<Handle> {
    let loader: &'static InitrdLoader = Box::leak(Box::new(InitrdLoader {
        protocol: LoadFile2Protocol { load_file },
        data: Vec::leak(data),
    }));
    let storage: &'static mut Vec<u8> = Box::leak(Box::new(Vec::new()));
    let path: &'static DevicePath = DevicePathBuilder::with_vec(storage)
        .push(&build::media::Vendor {
            vendor_guid: LINUX_EFI_INITRD_MEDIA_GUID,
            vendor_defined_data: &[],
        })
        .and_then(|b| b.finalize())
        .map_err(|_| uefi::Error::from(Status::OUT_OF_RESOURCES))?;
    // SAFETY: both interfaces are leaked, so they outlive the handle; the device path is a
    // valid, terminated path and the loader starts with a LoadFile2 protocol struct.
    unsafe {
        let handle = boot::install_protocol_interface(
            None,
            &DevicePath::GUID,
            path.as_ffi_ptr().cast::<c_void>(),
        )?;
        boot::install_protocol_interface(
            Some(handle),
            &LoadFile2Protocol::GUID,
            (loader as *const InitrdLoader).cast::<c_void>(),
        )
    }
}
