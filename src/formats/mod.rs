//! The small text formats the boot flow exchanges over TFTP.
//!
//! - [`alt_list`]: the alternate list the central generates, best first.
//! - [`boot_config`]: the per-client config file an alternate serves.
//! - [`uboot`]: the list and per-client configs as U-Boot scripts in legacy images.
//!
//! The first two are the NBP's too, so they live in the `no_std` protocol crate
//! (`bootherd-proto`, `crates/proto/`) and are re-exported here.

pub use bootherd_proto::{alt_list, boot_config};
pub mod uboot;
