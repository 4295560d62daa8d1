//! A token-bucket pacer that holds a fixed link rate, counting IP and UDP header bytes,
//! in exact integer arithmetic so a simulated run is reproducible bit for bit.

use std::time::{Duration, Instant};

use crate::wire::IP_UDP_HEADER_BYTES;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Link time a late caller may make up at once: the pacing thread of a loaded uplink waits
/// tens of milliseconds for a CPU now and then (measured under an acknowledgement storm,
/// docs/performance.md), and without this every such wait beyond the burst allowance
/// is carrier time lost for good.
pub const CATCH_UP_MAX: Duration = Duration::from_millis(20);

/// Holds the configured link rate. Credit is kept in bit-nanoseconds: sending one byte costs
/// 8e9 units and every nanosecond earns `rate_bits_per_sec` units.
///
/// Credit beyond the burst allowance (up to [`CATCH_UP_MAX`] of link time) is earned only
/// while a datagram waits, refused, for the pacer: that is time the caller lost by coming
/// late. Time with nothing to send earns at most the burst allowance, so a pass that starts
/// after an idle spell does not go out in one burst.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bits_per_sec: u64,
    burst_units: u128,
    catch_up_units: u128,
    credit_units: u128,
    last: Instant,
    /// A datagram was refused and has not gone yet.
    waiting: bool,
}

impl Pacer {
    /// A pacer that starts with a full burst allowance of `burst_bytes`.
    pub fn new(now: Instant, rate_bits_per_sec: u64, burst_bytes: u64) -> Self {
        let rate_bits_per_sec = rate_bits_per_sec.max(1);
        let burst_units = u128::from(burst_bytes) * 8 * NANOS_PER_SEC;
        let catch_up_units = CATCH_UP_MAX.as_nanos() * u128::from(rate_bits_per_sec);
        Pacer { rate_bits_per_sec, burst_units, catch_up_units, credit_units: burst_units, last: now, waiting: false }
    }

    /// The configured rate.
    pub fn rate_bits_per_sec(&self) -> u64 {
        self.rate_bits_per_sec
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let cap = if self.waiting {
            self.burst_units + self.catch_up_units
        } else {
            // Idle time earns up to the burst allowance and never takes away catch-up
            // credit already earned.
            self.burst_units.max(self.credit_units)
        };
        self.credit_units = (self.credit_units + elapsed * u128::from(self.rate_bits_per_sec)).min(cap);
    }

    /// The caller has nothing to send: credit earned to make up for lateness is given up,
    /// since there is nothing late to make up for.
    pub fn idle(&mut self, now: Instant) {
        self.refill(now);
        self.waiting = false;
        self.credit_units = self.credit_units.min(self.burst_units);
    }

    fn cost_units(udp_payload_bytes: usize) -> u128 {
        (udp_payload_bytes + IP_UDP_HEADER_BYTES) as u128 * 8 * NANOS_PER_SEC
    }

    /// True if a datagram with this UDP payload may go now; if so its cost is taken.
    pub fn try_send(&mut self, now: Instant, udp_payload_bytes: usize) -> bool {
        self.refill(now);
        // A datagram larger than the burst allowance goes once the bucket is full, so it
        // cannot stall the carrier forever.
        let cost = Self::cost_units(udp_payload_bytes).min(self.burst_units);
        if self.credit_units >= cost {
            self.credit_units -= cost;
            self.waiting = false;
            true
        } else {
            self.waiting = true;
            false
        }
    }

    /// When a datagram of this size could go, if it cannot go now.
    pub fn ready_at(&self, udp_payload_bytes: usize) -> Instant {
        let cost = Self::cost_units(udp_payload_bytes).min(self.burst_units);
        let missing = cost.saturating_sub(self.credit_units);
        let nanos = missing.div_ceil(u128::from(self.rate_bits_per_sec));
        self.last + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_within_one_percent_over_ten_seconds() {
        let start = Instant::now();
        let rate = 2_000_000;
        let mut pacer = Pacer::new(start, rate, 3000);
        let mut now = start;
        let mut bytes_on_air = 0u64;
        let end = start + Duration::from_secs(10);
        while now < end {
            if pacer.try_send(now, 1472) {
                bytes_on_air += 1500;
            } else {
                now = pacer.ready_at(1472);
            }
        }
        let measured = bytes_on_air as f64 * 8.0 / 10.0;
        assert!((measured / rate as f64 - 1.0).abs() < 0.01, "measured {measured} bit/s against {rate}");
    }

    /// Sends 1472-byte payloads from `start` for ten seconds with a caller that, every
    /// `late_every`-th time it is refused, comes back `lateness` after the pacer's
    /// `ready_at`; returns the measured rate over the ten seconds.
    fn rate_with_a_late_caller(rate: u64, late_every: u32, lateness: Duration) -> f64 {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, rate, 4 * 1500);
        let mut now = start;
        let mut bytes_on_air = 0u64;
        let mut refusals = 0u32;
        let end = start + Duration::from_secs(10);
        while now < end {
            if pacer.try_send(now, 1472) {
                bytes_on_air += 1500;
            } else {
                refusals += 1;
                now = pacer.ready_at(1472);
                if refusals.is_multiple_of(late_every) {
                    now += lateness;
                }
            }
        }
        bytes_on_air as f64 * 8.0 / 10.0
    }

    #[test]
    fn a_caller_late_by_less_than_the_catch_up_loses_no_link_time() {
        let rate = 8_000_000;
        // 15 ms late every 50th datagram: with only the 6 ms burst allowance this lost
        // about 9 ms in 75 ms, 12% of the carrier.
        let measured = rate_with_a_late_caller(rate, 50, Duration::from_millis(15));
        assert!((measured / rate as f64 - 1.0).abs() < 0.01, "measured {measured} bit/s against {rate}");
    }

    #[test]
    fn lateness_beyond_the_catch_up_is_lost_not_made_up_later() {
        let rate = 8_000_000;
        let measured = rate_with_a_late_caller(rate, 50, CATCH_UP_MAX * 3);
        assert!(measured < rate as f64 * 0.9, "measured {measured} bit/s: a late caller may not exceed the catch-up");
        assert!(measured <= rate as f64 * 1.001, "measured {measured} bit/s above the rate and the first burst");
    }

    #[test]
    fn after_an_idle_spell_only_the_burst_allowance_goes_at_once() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 8_000_000, 4 * 1500);
        // Late while waiting, then idle for a second: neither may add to the next burst.
        assert!((0..4).all(|_| pacer.try_send(start, 1472)));
        assert!(!pacer.try_send(start, 1472));
        let late = pacer.ready_at(1472) + Duration::from_millis(10);
        assert!(pacer.try_send(late, 1472));
        pacer.idle(late);
        let later = late + Duration::from_secs(1);
        let burst = (0..100).take_while(|_| pacer.try_send(later, 1472)).count();
        assert_eq!(burst, 4, "after an idle second the pacer let {burst} datagrams go at once");
    }
}
