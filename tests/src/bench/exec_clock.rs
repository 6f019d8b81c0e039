//! The start time `exec-timed` (`src/bin/exec-timed.rs`) reads just before it execs a function
//! and sends up a pipe, and the Runtime API compares with the function's first poll: one clock,
//! `CLOCK_MONOTONIC`, and one 12-byte encoding.

use std::time::Duration;

/// The encoded size: 8 bytes of seconds and 4 of nanoseconds, little-endian.
pub const ENCODED: usize = 12;

/// `CLOCK_MONOTONIC` now.
pub fn now() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

pub fn encode(at: Duration) -> [u8; ENCODED] {
    let mut bytes = [0u8; ENCODED];
    bytes[..8].copy_from_slice(&at.as_secs().to_le_bytes());
    bytes[8..].copy_from_slice(&at.subsec_nanos().to_le_bytes());
    bytes
}

pub fn decode(bytes: [u8; ENCODED]) -> Duration {
    let mut secs = [0u8; 8];
    secs.copy_from_slice(&bytes[..8]);
    let mut nanos = [0u8; 4];
    nanos.copy_from_slice(&bytes[8..]);
    Duration::new(u64::from_le_bytes(secs), u32::from_le_bytes(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_pipe() {
        let at = Duration::new(1_234_567, 890_123_456);
        assert_eq!(decode(encode(at)), at);
        assert!(now() > Duration::ZERO);
    }
}
