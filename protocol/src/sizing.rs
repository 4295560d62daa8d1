//! How big a first pass is: each county's loss rate, learnt from its reports, and the
//! number of symbols per block that leaves few counties (or, for an emergency-sized object,
//! almost surely none) needing a repair round.
//!
//! The rule. A county losing a share p of the datagrams independently receives a binomial
//! number m of the n symbols aired for a block of K source symbols; RaptorQ then fails to
//! decode with probability 1 for m < K and 0.01^(m-K+1) for m >= K (RFC 6330 section 5.6).
//! So the county needs a repair round for the block with probability
//!
//! ```text
//! fail(n, K, p) = P(Bin(n, 1-p) < K) + sum over j >= 0 of P(Bin(n, 1-p) = K+j) * 0.01^(j+1)
//! ```
//!
//! and the expected number of targeted counties needing one is the sum of fail over them.
//! The first pass airs, per block, the fewest n for which that sum is at most the block's
//! share of a budget: [`STRAGGLERS_EXPECTED_MAX`] counties for an ordinary object, and
//! 1 - [`ALL_COMPLETE_PROBABILITY`] for one of at most
//! [`SizingConfig::all_complete_bytes_max`] (an emergency notice), which by the union
//! bound makes every county complete from the first pass with at least that probability.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Counties whose loss is remembered; beyond it the one heard from longest ago is forgotten
/// (it falls back to the prior, as it would after a long silence anyway).
pub const LOSS_BOOK_COUNTIES_MAX: usize = 100_000;
/// An observation's weight halves over this time: clear-sky loss changes slowly, a rain
/// fade passes within the hour.
pub const LOSS_HALF_LIFE: Duration = Duration::from_secs(3600);
/// The prior counts as this many aired symbols: one report of a few thousand symbols
/// outweighs it, a report of a dozen does not.
pub const LOSS_PRIOR_WEIGHT_SYMBOLS: f64 = 1000.0;
/// The highest loss a first pass is sized for: a county in a storm must not make every
/// county's pass ten times longer; its shortfall is repaired from its report instead.
pub const SIZING_LOSS_MAX: f64 = 0.25;
/// Loss rates are grouped to this resolution for sizing, so the work is bounded by the
/// number of groups (at most 251), not by the number of counties.
pub const LOSS_BUCKET: f64 = 0.001;
/// For an ordinary object: at most this many counties expected to need a repair round.
/// Buying it down costs little: at K = 11,655 and 2000 counties at 5% loss, the first pass
/// is 0.2% longer than the lower bound.
pub const STRAGGLERS_EXPECTED_MAX: f64 = 0.05;
/// For an emergency-sized object: the chance that every targeted county completes from
/// the first pass alone.
pub const ALL_COMPLETE_PROBABILITY: f64 = 0.999;

/// What the first pass is sized for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingConfig {
    /// Loss assumed for a county that has not reported yet.
    pub prior_loss: f64,
    /// Objects up to this size are sized so every county completes from the first pass
    /// with probability [`ALL_COMPLETE_PROBABILITY`].
    pub all_complete_bytes_max: u64,
}

impl Default for SizingConfig {
    fn default() -> Self {
        SizingConfig { prior_loss: 0.1, all_complete_bytes_max: 1_000_000 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    lost: f64,
    aired: f64,
    at: Instant,
}

/// Each county's loss rate, from the symbols it said it received against those aired,
/// decayed over time towards the prior.
#[derive(Debug, Clone)]
pub struct LossBook {
    prior: f64,
    counties: HashMap<String, Entry>,
}

impl LossBook {
    /// An empty book: every county has the prior.
    pub fn new(prior: f64) -> Self {
        LossBook { prior: clean_loss(prior), counties: HashMap::new() }
    }

    /// A county received `received` of `aired` symbols.
    pub fn observe(&mut self, now: Instant, county: &str, aired: u64, received: u64) {
        if aired == 0 {
            return;
        }
        let received = received.min(aired);
        if !self.counties.contains_key(county) && self.counties.len() >= LOSS_BOOK_COUNTIES_MAX {
            let oldest = self.counties.iter().min_by_key(|(_, e)| e.at).map(|(c, _)| c.clone());
            if let Some(oldest) = oldest {
                self.counties.remove(&oldest);
            }
        }
        let entry = self.counties.entry(county.to_owned()).or_insert(Entry { lost: 0.0, aired: 0.0, at: now });
        let decay = decay(now.saturating_duration_since(entry.at));
        entry.lost = entry.lost * decay + (aired - received) as f64;
        entry.aired = entry.aired * decay + aired as f64;
        entry.at = now;
    }

    /// The county's loss rate now: its decayed observations, with the prior weighed in.
    pub fn loss(&self, now: Instant, county: &str) -> f64 {
        let Some(entry) = self.counties.get(county) else { return self.prior };
        let decay = decay(now.saturating_duration_since(entry.at));
        let weight = LOSS_PRIOR_WEIGHT_SYMBOLS;
        clean_loss((entry.lost * decay + self.prior * weight) / (entry.aired * decay + weight))
    }

    /// Counties remembered.
    pub fn len(&self) -> usize {
        self.counties.len()
    }

    /// Whether no county is remembered.
    pub fn is_empty(&self) -> bool {
        self.counties.is_empty()
    }

    /// The targeted counties' loss rates, grouped by [`LOSS_BUCKET`] (capped at
    /// [`SIZING_LOSS_MAX`]): loss group to number of counties.
    pub fn histogram<'a>(&self, now: Instant, counties: impl Iterator<Item = &'a String>) -> LossHistogram {
        let mut groups = BTreeMap::new();
        for county in counties {
            let bucket = (self.loss(now, county).min(SIZING_LOSS_MAX) / LOSS_BUCKET).ceil() as u32;
            *groups.entry(bucket).or_insert(0u64) += 1;
        }
        LossHistogram { groups }
    }
}

/// Counties by loss group (see [`LossBook::histogram`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossHistogram {
    groups: BTreeMap<u32, u64>,
}

impl LossHistogram {
    /// `counties` counties losing `loss` each.
    pub fn uniform(loss: f64, counties: u64) -> Self {
        let bucket = (clean_loss(loss).min(SIZING_LOSS_MAX) / LOSS_BUCKET).ceil() as u32;
        LossHistogram { groups: BTreeMap::from([(bucket, counties)]) }
    }

    fn iter(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.groups.iter().map(|(bucket, count)| (f64::from(*bucket) * LOSS_BUCKET, *count as f64))
    }

    /// Counties in all.
    pub fn counties(&self) -> u64 {
        self.groups.values().sum()
    }
}

fn decay(age: Duration) -> f64 {
    0.5f64.powf(age.as_secs_f64() / LOSS_HALF_LIFE.as_secs_f64())
}

fn clean_loss(loss: f64) -> f64 {
    if loss.is_nan() { 0.0 } else { loss.clamp(0.0, 0.9) }
}

/// ln(x!) : exact below 16, Stirling's series above (relative error under 1e-12).
fn ln_factorial(x: u64) -> f64 {
    if x < 16 {
        return (2..=x).map(|i| (i as f64).ln()).sum();
    }
    let x = x as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x) - 1.0 / (360.0 * x.powi(3)) + 1.0 / (1260.0 * x.powi(5))
}

/// The chance that a county losing `loss` of `aired` symbols of a block of `k` cannot
/// decode it (see the module documentation).
pub fn decode_failure(aired: u32, k: u32, loss: f64) -> f64 {
    let loss = clean_loss(loss);
    let (n, k) = (u64::from(aired), u64::from(k));
    // RaptorQ's failure with m >= K symbols received.
    let short = |m: u64| if m < k { 1.0 } else { 0.01f64.powi((m - k + 1).min(64) as i32) };
    if loss == 0.0 {
        return short(n);
    }
    let (ln_p, ln_q) = (loss.ln(), (1.0 - loss).ln());
    let ln_n = ln_factorial(n);
    let pmf = |m: u64| (ln_n - ln_factorial(m) - ln_factorial(n - m) + m as f64 * ln_q + (n - m) as f64 * ln_p).exp();
    let mut total = 0.0;
    // Received counts at and above K: each weighed by RaptorQ's failure, which falls a
    // hundredfold per extra symbol, so a few terms suffice.
    for m in k..=n.min(k + 8) {
        total += pmf(m) * short(m);
    }
    // Below K: the binomial's lower tail, summed downwards until the terms vanish.
    let mut m = k.min(n + 1);
    while m > 0 {
        m -= 1;
        let term = pmf(m);
        total += term;
        if term < total * 1e-15 || term < 1e-300 {
            break;
        }
    }
    total.min(1.0)
}

/// Copies of a manifest to spread over a first pass so that the counties of `losses`
/// (independent loss) are expected to miss them all `budget` times at most: a county that
/// misses every copy waits for the carousel's next one, a second or more.
pub fn manifest_copies(losses: &LossHistogram, budget: f64, most: u32) -> u32 {
    let missed = |copies: u32| losses.iter().map(|(loss, count)| count * loss.powi(copies as i32)).sum::<f64>();
    (1..most).find(|copies| missed(*copies) <= budget).unwrap_or(most)
}

/// The fewest symbols to air for a block of `k` source symbols so that the counties of
/// `losses` are expected to need a repair round for it `budget` times at most.
pub fn pass_symbols(k: u32, losses: &LossHistogram, budget: f64) -> u32 {
    let expected = |n: u32| losses.iter().map(|(loss, count)| count * decode_failure(n, k, loss)).sum::<f64>();
    let budget = budget.max(1e-12);
    // The answer lies between K and what the worst loss needs at twelve standard
    // deviations; the failure only falls as n grows, so bisect.
    let worst = losses.iter().map(|(loss, _)| loss).fold(0.0, f64::max);
    let q = 1.0 - worst;
    let kf = f64::from(k);
    let mut high = (kf / q + 12.0 * (kf * worst).sqrt() / q + 16.0).ceil() as u32;
    let mut low = k;
    if expected(low) <= budget {
        return low;
    }
    while expected(high) > budget {
        // Unreachable for sane inputs; widen rather than under-size.
        high = high.saturating_mul(2);
        if high == u32::MAX {
            return high;
        }
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if expected(mid) <= budget {
            high = mid;
        } else {
            low = mid;
        }
    }
    high
}

/// Symbols per block for an object's first pass: each block gets its share of the budget
/// for the object's size (see the module documentation).
pub fn first_pass_counts(config: &SizingConfig, size_bytes: u64, source_symbols: &[u32], losses: &LossHistogram) -> Vec<u32> {
    let budget = if size_bytes <= config.all_complete_bytes_max { 1.0 - ALL_COMPLETE_PROBABILITY } else { STRAGGLERS_EXPECTED_MAX };
    let per_block = budget / source_symbols.len().max(1) as f64;
    let mut memo: HashMap<u32, u32> = HashMap::new();
    source_symbols.iter().map(|k| *memo.entry(*k).or_insert_with(|| pass_symbols(*k, losses, per_block))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binomial_tail_matches_a_direct_sum() {
        // n = 20, k = 18, p = 0.1: P(Bin(20, 0.9) < 18) = 1 - P(18) - P(19) - P(20).
        let q: f64 = 0.9;
        let c = |n: u64, m: u64| (ln_factorial(n) - ln_factorial(m) - ln_factorial(n - m)).exp();
        let p18 = c(20, 18) * q.powi(18) * 0.1f64.powi(2);
        let p19 = c(20, 19) * q.powi(19) * 0.1;
        let p20 = q.powi(20);
        let expected = (1.0 - p18 - p19 - p20) + p18 * 0.01 + p19 * 1e-4 + p20 * 1e-6;
        assert!((decode_failure(20, 18, 0.1) - expected).abs() < 1e-12, "{} vs {expected}", decode_failure(20, 18, 0.1));
        assert!((ln_factorial(20) - 42.335_616_460_753_485).abs() < 1e-9);
        assert_eq!(decode_failure(10, 10, 0.0), 0.01);
        assert_eq!(decode_failure(9, 10, 0.0), 1.0);
    }

    #[test]
    fn an_emergency_notice_completes_everywhere_from_one_pass_at_little_cost() {
        // 100 KB: K = 70. 2000 counties at 5%: every county completes with 99.9%.
        let losses = LossHistogram::uniform(0.05, 2000);
        let config = SizingConfig { prior_loss: 0.05, ..SizingConfig::default() };
        let counts = first_pass_counts(&config, 100_000, &[70], &losses);
        let n = counts[0];
        let all = (1.0 - decode_failure(n, 70, 0.05)).powi(2000);
        let fewer = (1.0 - decode_failure(n - 1, 70, 0.05)).powi(2000);
        assert!(all >= ALL_COMPLETE_PROBABILITY && fewer < ALL_COMPLETE_PROBABILITY, "n {n}: {all} / {fewer}");
        // Against the lower bound for 2000 counties (K/q + 3.44 sqrt(Kp)/q, about 80.5).
        assert!(f64::from(n) / 80.5 <= 1.2, "{n} symbols for K = 70");
        // The old rule (K plus 2%) left most notices needing a repair round.
        let old = 70 + (70.0f64 * 0.02).ceil() as u32;
        assert!((1.0 - decode_failure(old, 70, 0.05)).powi(2000) < 0.01);
    }

    #[test]
    fn a_large_object_leaves_few_counties_for_repair_just_above_the_bound() {
        let losses = LossHistogram::uniform(0.05, 2000);
        let config = SizingConfig::default();
        let counts = first_pass_counts(&config, 50_000_000, &[11_655, 11_655, 11_655], &losses);
        let expected: f64 = counts.iter().map(|n| 2000.0 * decode_failure(*n, 11_655, 0.05)).sum();
        assert!(expected <= STRAGGLERS_EXPECTED_MAX, "{expected} counties expected to need repair");
        let bound = 11_655.0 / 0.95 + 3.44 * (11_655.0f64 * 0.05).sqrt() / 0.95;
        let ratio = f64::from(counts[0]) / bound;
        assert!((1.0..=1.004).contains(&ratio), "{} symbols against a bound of {bound:.0}", counts[0]);
    }

    #[test]
    fn the_worse_counties_make_the_pass_longer_and_the_cap_bounds_it() {
        let clear = LossHistogram::uniform(0.01, 100);
        let mut mixed = LossBook::new(0.01);
        let start = Instant::now();
        let counties: Vec<String> = (0..100).map(|i| format!("{i:06}")).collect();
        mixed.observe(start, &counties[0], 100_000, 80_000);
        let histogram = mixed.histogram(start, counties.iter());
        assert_eq!(histogram.counties(), 100);
        let k = 1000;
        assert!(pass_symbols(k, &histogram, 0.05) > pass_symbols(k, &clear, 0.05));
        // A county losing 80% is sized as one losing SIZING_LOSS_MAX.
        assert!(pass_symbols(k, &histogram, 0.05) < 1500);
    }

    #[test]
    fn the_book_learns_decays_to_the_prior_and_stays_bounded() {
        let start = Instant::now();
        let mut book = LossBook::new(0.1);
        assert_eq!(book.loss(start, "410102"), 0.1);
        book.observe(start, "410102", 10_000, 9_800);
        let learnt = book.loss(start, "410102");
        assert!((learnt - 0.0273).abs() < 0.001, "{learnt}");
        let later = start + LOSS_HALF_LIFE * 10;
        assert!((book.loss(later, "410102") - 0.1).abs() < 0.005, "decays towards the prior");
        for i in 0..LOSS_BOOK_COUNTIES_MAX + 10 {
            book.observe(start + Duration::from_millis(i as u64 + 1), &format!("c{i}"), 10, 10);
        }
        assert_eq!(book.len(), LOSS_BOOK_COUNTIES_MAX);
        assert_eq!(book.loss(start, "410102"), 0.1, "the oldest was forgotten");
    }
}
