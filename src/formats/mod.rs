//! The small text formats the boot flow exchanges over TFTP. They use only `core` and `alloc`
//! so that the network bootstrap program (`no_std`) can share this code by path.
//!
//! - [`alt_list`]: the alternate list the central generates, best first.
//! - [`boot_config`]: the per-client config file an alternate serves.
//! - [`dhcp`]: reading options out of raw DHCP packets.
//! - [`uboot`]: the list and per-client configs as U-Boot scripts in legacy images.

pub mod alt_list;
pub mod boot_config;
pub mod dhcp;
pub mod uboot;
