//! The operating system's wall clock and randomness, in one place: the shells take them from
//! here and nowhere else (protocol cores get time and random numbers as arguments).
//!
//! Randomness comes from the kernel's generator through getrandom(2) and from nothing else: a
//! key, boot id or nonce made from the clock would look random and be guessable, so without
//! the kernel's randomness the caller fails with [`NoRandomness`] instead.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::io::Errno;
use rustix::rand::{getrandom, GetRandomFlags};

/// Time since the Unix epoch (zero if the clock says it is before 1970).
pub fn unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch (the replay windows of marks and status requests).
pub fn unix_ms() -> u64 {
    u64::try_from(unix_time().as_millis()).unwrap_or(u64::MAX)
}

/// The kernel gave no random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRandomness(Errno);

impl fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no randomness from the kernel (getrandom: {})", self.0)
    }
}

impl std::error::Error for NoRandomness {}

/// Fills `buf` from the kernel's random generator. At early boot getrandom(2) waits until the
/// generator is seeded, which is what a key or a boot id needs.
pub fn fill_random(buf: &mut [u8]) -> Result<(), NoRandomness> {
    let mut filled = 0;
    while filled < buf.len() {
        match getrandom(&mut buf[filled..], GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(NoRandomness(e)),
        }
    }
    Ok(())
}

/// 64 random bits (a boot id, a nonce).
pub fn random_u64() -> Result<u64, NoRandomness> {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_and_fill_the_buffer() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
        // 64 bytes of zeros from a working generator: a chance of 2^-512.
        assert!(a.iter().any(|&x| x != 0));
        assert_ne!(random_u64().unwrap(), random_u64().unwrap());
    }

    #[test]
    fn clock_is_after_2020() {
        assert!(unix_ms() > 1_577_836_800_000);
    }
}
