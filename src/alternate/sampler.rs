//! What the host says about itself for reports: CPU, memory and load from sysinfo, the process's
//! CPU time, and the link speed of the interface clients reach.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sysinfo::System;

use crate::log;
use crate::report::monitor::SystemSample;

/// The speed of the network interface that `ip` is on, bytes/s, where the kernel knows it (not
/// for loopback, nor for most wireless links). Read from /proc and /sys rather than asked over
/// netlink, which the packaged units do not allow.
pub(super) fn link_speed(ip: IpAddr) -> Option<u64> {
    let name = match ip {
        IpAddr::V4(v4) => {
            let routes = std::fs::read_to_string("/proc/net/route").ok()?;
            interface_of_v4(&routes, v4)?
        }
        IpAddr::V6(v6) => {
            let addresses = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            addresses
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|f| f.first() == Some(&hex.as_str()))?
                .get(5)?
                .to_string()
        }
    };
    let mbit: u64 = std::fs::read_to_string(format!("/sys/class/net/{name}/speed"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (mbit > 0).then_some(mbit * 125_000)
}

/// The interface of the most specific route in `/proc/net/route` (addresses in hex, in the
/// kernel's byte order) whose network holds `ip`.
fn interface_of_v4(routes: &str, ip: Ipv4Addr) -> Option<String> {
    let ip = u32::from_le_bytes(ip.octets());
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize| u32::from_str_radix(f.get(i)?, 16).ok();
            let (destination, mask) = (field(1)?, field(7)?);
            (ip & mask == destination).then(|| (mask.count_ones(), f[0].to_string()))
        })
        .max_by_key(|(bits, _)| *bits)
        .map(|(_, name)| name)
}

/// CPU time the process has used.
pub(super) fn process_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU, memory and load average from sysinfo; zeros where the platform gives nothing (the
/// report then shows no pressure rather than failing).
pub(super) struct SystemSampler {
    system: Option<System>,
}

impl SystemSampler {
    pub(super) fn new() -> Self {
        let system = System::new()
            .map_err(|e| log::warning!("alternate: no CPU/memory figures: {e}"))
            .ok();
        SystemSampler { system }
    }

    pub(super) fn sample(&mut self) -> SystemSample {
        let load_avg_centi = System::load_average().map_or(0, |l| {
            (l.one * 100.0).clamp(0.0, f64::from(u32::MAX)) as u32
        });
        let Some(system) = &mut self.system else {
            return SystemSample {
                load_avg_centi,
                ..SystemSample::default()
            };
        };
        system.refresh_cpu_usage();
        system.refresh_memory();
        let total = system.total_memory().max(1);
        SystemSample {
            cpu_permille: (system.global_cpu_usage() * 10.0).clamp(0.0, 1000.0) as u16,
            mem_permille: (system.used_memory() * 1000 / total).min(1000) as u16,
            load_avg_centi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interface_of_an_address_is_its_most_specific_route() {
        let routes =
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let of = |ip: [u8; 4]| interface_of_v4(routes, Ipv4Addr::from(ip));
        assert_eq!(of([10, 0, 0, 11]).as_deref(), Some("eth0"));
        assert_eq!(of([192, 168, 0, 5]).as_deref(), Some("eth1"));
        assert_eq!(
            of([172, 16, 0, 1]).as_deref(),
            Some("eth0"),
            "the default route"
        );
    }
}
