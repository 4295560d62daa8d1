//! The wall clock, for what is recorded or compared across restarts and machines
//! (manifest lifetimes, status files, the registry). Durations within one run use
//! `Instant`. A clock set before 1970 reads as 0, never as an error.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch at `at` (0 before it).
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch now.
pub fn wall_unix_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Seconds since the Unix epoch now.
pub fn wall_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_the_epoch_is_zero_and_after_it_counts() {
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1500)), 1500);
        assert!(wall_unix_secs() > 1_600_000_000, "the test machine's clock is before 2020");
    }
}
