//! What bootherd's server and its network bootstrap program (NBP, a UEFI application) both
//! read or write, in `core` + `alloc` only: the crate is `no_std` in every build, so the
//! server's build checks what the NBP can use.
//!
//! - [`alt_list`]: the alternate list the central generates, best first.
//! - [`boot_config`]: the per-client config file an alternate serves.
//! - [`dhcp`]: a checked, zero-copy view of DHCP packets and their options.
//! - [`pxe`]: PXE 2.1 vendor options (DHCP option 43 sub-options).
//! - [`hex`]: lower-case hex, as digests, keys and hardware addresses are written.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
// Unit tests run on the host with the test harness, which needs std.
#[cfg(test)]
extern crate std;

pub mod alt_list;
pub mod boot_config;
pub mod dhcp;
pub mod hex;
pub mod pxe;
