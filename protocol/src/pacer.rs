//! A token-bucket pacer that holds a fixed link rate, counting IP and UDP header bytes,
//! in exact integer arithmetic so a simulated run is reproducible bit for bit.

use std::time::{Duration, Instant};

use crate::wire::IP_UDP_HEADER_BYTES;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Holds the configured link rate. Credit is kept in bit-nanoseconds: sending one byte costs
/// 8e9 units and every nanosecond earns `rate_bits_per_sec` units.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate_bits_per_sec: u64,
    burst_units: u128,
    credit_units: u128,
    last: Instant,
}

impl Pacer {
    /// A pacer that starts with a full burst allowance of `burst_bytes`.
    pub fn new(now: Instant, rate_bits_per_sec: u64, burst_bytes: u64) -> Self {
        let burst_units = u128::from(burst_bytes) * 8 * NANOS_PER_SEC;
        Pacer { rate_bits_per_sec: rate_bits_per_sec.max(1), burst_units, credit_units: burst_units, last: now }
    }

    /// The configured rate.
    pub fn rate_bits_per_sec(&self) -> u64 {
        self.rate_bits_per_sec
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        self.credit_units = (self.credit_units + elapsed * u128::from(self.rate_bits_per_sec)).min(self.burst_units);
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
            true
        } else {
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
}
