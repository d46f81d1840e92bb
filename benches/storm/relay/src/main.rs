//! `bh-storm-relay`: a link with delay, loss, duplication and reordering, in user space, for
//! kernels without netem.
//!
//! It creates two tap devices, each in a network namespace of its own choosing (`NS:IFNAME`;
//! `-` for the namespace it runs in), and forwards every Ethernet frame from one to the other
//! through an [`impair::Direction`] per direction. Being a layer-2 link, it carries whatever
//! the namespaces send (ARP, TFTP on ephemeral ports). The taps live as long as the relay: when
//! it exits, they are gone. The taps keep checksum offload (a virtio-net header on each frame,
//! passed through untouched), so a sender's UDP segmentation offload works as on a veth link;
//! the kernel cuts segmented batches into frames before they reach the relay.
//!
//! It prints `ready` once both taps exist (the caller then configures them), and its counters
//! and CPU time on SIGINT or SIGTERM.

mod impair;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use impair::{Direction, Impairment};

const USAGE: &str = "\
Usage: bh-storm-relay --a NS:IFNAME --b NS:IFNAME [options]

Creates tap IFNAME in each namespace NS (- for the current one) and relays frames between them.

Options:
  --delay-ms X       one-way delay, each direction (fractions allowed) [0]
  --loss P           loss probability per frame, each direction, percent [0]
  --duplicate P      duplication probability, percent [0]
  --reorder P        probability that a frame is held back and overtaken, percent [0]
  --reorder-ms X     how long a reordered frame is held back [1]
  --limit N          most frames held per direction; more are dropped and counted [100000]
  --seed N           seed of the loss, duplication and reordering draws [1]
";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Room for a virtio-net header and the largest frame a tap hands out.
const FRAME_BUF: usize = 65_536 + 64;
/// Frames read from one tap before the other gets its turn.
const READ_BATCH: usize = 256;

struct Options {
    a: (String, String),
    b: (String, String),
    impairment: Impairment,
    seed: u64,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut a, mut b) = (None, None);
    let mut imp = Impairment::default();
    let mut seed = 1;
    let percent = |v: &str, name: &str| -> Result<f64, String> {
        let p: f64 = v.parse().map_err(|e| format!("{name} {v:?}: {e}"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("{name} {v:?}: want 0..100 (percent)"));
        }
        Ok(p / 100.0)
    };
    let ms = |v: &str, name: &str| -> Result<u64, String> {
        let x: f64 = v.parse().map_err(|e| format!("{name} {v:?}: {e}"))?;
        if !(0.0..=60_000.0).contains(&x) {
            return Err(format!("{name} {v:?}: want 0..60000 ms"));
        }
        Ok((x * 1e6) as u64)
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let side = |v: &str| -> Result<(String, String), String> {
            v.split_once(':')
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && name.len() < 16)
                .map(|(ns, name)| (ns.to_string(), name.to_string()))
                .ok_or_else(|| format!("{flag} {v:?}: want NS:IFNAME (IFNAME under 16 bytes)"))
        };
        match flag.as_str() {
            "--a" => a = Some(side(&value)?),
            "--b" => b = Some(side(&value)?),
            "--delay-ms" => imp.delay_ns = ms(&value, &flag)?,
            "--loss" => imp.loss = percent(&value, &flag)?,
            "--duplicate" => imp.duplicate = percent(&value, &flag)?,
            "--reorder" => imp.reorder = percent(&value, &flag)?,
            "--reorder-ms" => imp.reorder_ns = ms(&value, &flag)?,
            "--limit" => {
                imp.limit = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{flag} {value:?}: want a positive number"))?
            }
            "--seed" => {
                seed = value
                    .parse()
                    .map_err(|e| format!("{flag} {value:?}: {e}"))?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Options {
        a: a.ok_or("--a is required")?,
        b: b.ok_or("--b is required")?,
        impairment: imp,
        seed,
    })
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(ret)
}

fn open(path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::other("path with a NUL byte"))?;
    // SAFETY: a valid C string; the returned descriptor is owned from here on.
    let fd = check(
        unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) },
        path,
    )?;
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn enter_namespace(ns: &OwnedFd, name: &str) -> io::Result<()> {
    // SAFETY: setns on a namespace file descriptor we own; single-threaded process.
    check(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
        &format!("entering network namespace {name}"),
    )
    .map(|_| ())
}

/// Creates tap `name` in namespace `ns` (`-`: the one the relay started in, `home`).
fn create_tap(ns: &str, name: &str, home: &OwnedFd) -> io::Result<OwnedFd> {
    if ns != "-" {
        let target = open(&format!("/run/netns/{ns}"), libc::O_RDONLY)?;
        enter_namespace(&target, ns)?;
    }
    let tap = create_tap_here(name);
    enter_namespace(home, "of the relay")?;
    tap.map_err(|e| io::Error::new(e.kind(), format!("tap {ns}:{name}: {e}")))
}

fn create_tap_here(name: &str) -> io::Result<OwnedFd> {
    let fd = open("/dev/net/tun", libc::O_RDWR | libc::O_NONBLOCK)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is.
    check(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) },
        "TUNSETIFF",
    )?;
    // Checksum offload only: the stack still cuts segmented batches into frames for us.
    // SAFETY: TUNSETOFFLOAD takes its flags by value.
    check(
        unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::TUN_F_CSUM as libc::c_ulong,
            )
        },
        "TUNSETOFFLOAD",
    )?;
    Ok(fd)
}

fn now_ns() -> u64 {
    // SAFETY: clock_gettime fills the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads what `from` has (up to a batch) into `dir`. Errors other than "nothing more" end
/// the relay.
fn read_frames(from: &OwnedFd, dir: &mut Direction, buf: &mut [u8]) -> io::Result<()> {
    for _ in 0..READ_BATCH {
        // SAFETY: reading into a buffer we own, within its length.
        let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        dir.push(now_ns(), &buf[..n as usize]);
    }
    Ok(())
}

/// Writes the frames of `dir` that are due to `to`; a frame the tap refuses is counted.
fn write_due(to: &OwnedFd, dir: &mut Direction, refused: &mut u64) {
    let now = now_ns();
    while let Some(frame) = dir.pop_due(now) {
        // SAFETY: writing a buffer we own, within its length.
        let n = unsafe { libc::write(to.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            *refused += 1;
        }
    }
}

fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

fn run(o: &Options) -> io::Result<()> {
    let home = open("/proc/self/ns/net", libc::O_RDONLY)?;
    let a = create_tap(&o.a.0, &o.a.1, &home)?;
    let b = create_tap(&o.b.0, &o.b.1, &home)?;
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    println!("ready");
    let mut ab = Direction::new(o.impairment, o.seed);
    let mut ba = Direction::new(o.impairment, o.seed.wrapping_add(0x5bd1_e995));
    let (mut refused_ab, mut refused_ba) = (0, 0);
    let mut buf = vec![0u8; FRAME_BUF];
    let started = std::time::Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        let due = [ab.next_due(), ba.next_due()].into_iter().flatten().min();
        let wait = due.map(|d| Duration::from_nanos(d.saturating_sub(now_ns())));
        let ts = wait.map(|w| libc::timespec {
            tv_sec: w.as_secs() as libc::time_t,
            tv_nsec: w.subsec_nanos() as libc::c_long,
        });
        let mut fds = [
            libc::pollfd {
                fd: a.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds, an optional timespec, no signal mask change.
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                2,
                ts.as_ref().map_or(std::ptr::null(), |t| t as *const _),
                std::ptr::null(),
            )
        };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            read_frames(&a, &mut ab, &mut buf)?;
        }
        if fds[1].revents != 0 {
            read_frames(&b, &mut ba, &mut buf)?;
        }
        write_due(&b, &mut ab, &mut refused_ab);
        write_due(&a, &mut ba, &mut refused_ba);
    }
    let (user, sys) = cpu_seconds();
    for (name, dir, refused) in [
        (format!("{}->{}", o.a.1, o.b.1), &ab, refused_ab),
        (format!("{}->{}", o.b.1, o.a.1), &ba, refused_ba),
    ] {
        let c = dir.counters();
        println!(
            "{name}: received {} lost {} duplicated {} reordered {} overflow {} delivered {} refused {refused}",
            c.received, c.lost, c.duplicated, c.reordered, c.overflow, c.delivered
        );
    }
    println!(
        "cpu: user {user:.2} s, system {sys:.2} s in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bh-storm-relay: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&options) {
        eprintln!("bh-storm-relay: {e}");
        std::process::exit(1);
    }
}
