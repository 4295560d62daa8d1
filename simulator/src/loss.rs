//! Loss models for the simulator and the relay. Each destination keeps its own state and
//! draws from a caller's seeded generator, so a run replays from its seed.
//!
//! Per-path models ([`LossModel`]: independent or Gilbert-Elliott bursts) are drawn once per
//! datagram and receiver. A regional rain fade ([`FadeModel`]) is one state per province,
//! shared by all of its counties and driven by time rather than datagrams, so a fade
//! silences a whole province at once. [`SimRng`] is the small generator the simulator
//! draws loss from: tens of millions of draws per run, so it must be cheap even in a
//! debug test build (its code is compiled with the simulator, not with a dependency).

use std::time::Duration;

use rand::{Rng, RngCore};

/// How a path loses datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossModel {
    /// Every datagram arrives.
    None,
    /// Each datagram is lost independently with this probability.
    Bernoulli(f64),
    /// Two-state Gilbert-Elliott bursts: in the bad state everything is lost, in the good
    /// state nothing. `mean_loss` is the long-run loss rate, `mean_burst` the mean number of
    /// datagrams in a bad spell.
    GilbertElliott {
        /// Long-run fraction of datagrams lost.
        mean_loss: f64,
        /// Mean length of a loss burst, in datagrams.
        mean_burst: f64,
    },
}

impl LossModel {
    /// The long-run loss rate.
    pub fn mean_loss(&self) -> f64 {
        match *self {
            LossModel::None => 0.0,
            LossModel::Bernoulli(p) => p,
            LossModel::GilbertElliott { mean_loss, .. } => mean_loss,
        }
    }
}

/// One path's loss state.
#[derive(Debug, Clone)]
pub struct LossState {
    model: LossModel,
    in_burst: bool,
}

impl LossState {
    /// A path that starts in the good state.
    pub fn new(model: LossModel) -> Self {
        LossState { model, in_burst: false }
    }

    /// The model.
    pub fn model(&self) -> LossModel {
        self.model
    }

    /// Draws whether the next datagram is lost.
    pub fn lose(&mut self, rng: &mut impl Rng) -> bool {
        match self.model {
            LossModel::None => false,
            LossModel::Bernoulli(p) => rng.random_bool(p.clamp(0.0, 1.0)),
            LossModel::GilbertElliott { mean_loss, mean_burst } => {
                let leave_burst = (1.0 / mean_burst.max(1.0)).clamp(0.0, 1.0);
                let loss = mean_loss.clamp(0.0, 0.99);
                // Stationary share of the bad state = enter / (enter + leave) = mean_loss.
                let enter_burst = (loss * leave_burst / (1.0 - loss)).clamp(0.0, 1.0);
                self.in_burst = if self.in_burst { !rng.random_bool(leave_burst) } else { rng.random_bool(enter_burst) };
                self.in_burst
            }
        }
    }
}

/// The most fade/clear transitions one [`FadeState::faded_at`] call walks through; beyond
/// that the state jumps to the asked time (only after a long quiet gap with tiny fades).
pub const FADE_TRANSITIONS_MAX: u32 = 100_000;
/// The shortest fade or clear spell drawn, so a degenerate model cannot spin.
pub const FADE_SPELL_MIN: Duration = Duration::from_millis(1);

/// A rain fade over a region: the region alternates between clear and faded spells with
/// exponentially distributed lengths; while faded, nothing gets through to any county in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FadeModel {
    /// Long-run share of time the region is faded (its counties' mean loss from the fade).
    pub share: f64,
    /// Mean length of one fade.
    pub mean_fade: Duration,
}

impl FadeModel {
    /// Mean length of a clear spell, so the faded share of time is `share`.
    pub fn mean_clear(&self) -> Duration {
        let share = self.share.clamp(1e-9, 0.99);
        self.mean_fade.mul_f64((1.0 - share) / share)
    }
}

/// One region's fade state, advanced in time (not per datagram) so that all of its counties
/// see the same fade.
#[derive(Debug, Clone)]
pub struct FadeState {
    model: FadeModel,
    faded: bool,
    /// When the current spell ends (time since the start of the run).
    until: Duration,
}

impl FadeState {
    /// A region in its long-run state: faded with probability `share`, for a memoryless
    /// remaining spell.
    pub fn new(model: FadeModel, rng: &mut impl Rng) -> Self {
        let faded = model.share > 0.0 && rng.random_bool(model.share.clamp(0.0, 1.0));
        let mut state = FadeState { model, faded, until: Duration::ZERO };
        state.until = state.spell(rng);
        state
    }

    /// The model.
    pub fn model(&self) -> FadeModel {
        self.model
    }

    fn spell(&self, rng: &mut impl Rng) -> Duration {
        if self.model.share <= 0.0 {
            return Duration::MAX;
        }
        let mean = if self.faded { self.model.mean_fade } else { self.model.mean_clear() };
        // Exponential: -mean * ln(1 - u), u in [0, 1).
        let u: f64 = rng.random();
        mean.mul_f64(-(1.0 - u).ln()).max(FADE_SPELL_MIN)
    }

    /// Whether the region is faded at `at` (time since the start; calls must not go back
    /// in time).
    pub fn faded_at(&mut self, at: Duration, rng: &mut impl Rng) -> bool {
        for _ in 0..FADE_TRANSITIONS_MAX {
            if at < self.until {
                return self.faded;
            }
            let start = self.until;
            self.faded = !self.faded;
            self.until = start.saturating_add(self.spell(rng));
        }
        // Bound reached: resynchronise on the asked time rather than walk on.
        self.until = at.saturating_add(self.spell(rng));
        self.faded
    }
}

/// xoshiro256++ (Blackman and Vigna): a small, fast, seedable generator for the simulator's
/// per-datagram draws. Not for keys: those come from ChaCha.
#[derive(Debug, Clone)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// A generator whose state is expanded from `seed` by SplitMix64 (as the xoshiro
    /// authors recommend), so nearby seeds give unrelated streams.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        SimRng { s: [next(), next(), next(), next()] }
    }
}

impl RngCore for SimRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn gilbert_elliott_has_the_asked_mean_loss_and_bursts() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut state = LossState::new(LossModel::GilbertElliott { mean_loss: 0.05, mean_burst: 20.0 });
        let draws: Vec<bool> = (0..400_000).map(|_| state.lose(&mut rng)).collect();
        let lost = draws.iter().filter(|l| **l).count() as f64 / draws.len() as f64;
        let bursts = draws.windows(2).filter(|w| !w[0] && w[1]).count() as f64;
        let mean_burst = draws.iter().filter(|l| **l).count() as f64 / bursts;
        assert!((lost - 0.05).abs() < 0.005, "mean loss {lost}");
        assert!((mean_burst - 20.0).abs() < 2.0, "mean burst {mean_burst}");
    }

    #[test]
    fn a_regional_fade_has_the_asked_share_and_spell_length() {
        let mut rng = SimRng::seed_from_u64(7);
        let model = FadeModel { share: 0.05, mean_fade: Duration::from_secs(2) };
        let mut state = FadeState::new(model, &mut rng);
        let step = Duration::from_millis(10);
        let samples = 2_000_000u32;
        let mut faded = 0u32;
        let mut fades = 0u32;
        let mut last = false;
        for i in 0..samples {
            let now = state.faded_at(step * i, &mut rng);
            faded += u32::from(now);
            fades += u32::from(now && !last);
            last = now;
        }
        let share = f64::from(faded) / f64::from(samples);
        let mean_fade_secs = f64::from(faded) * 0.01 / f64::from(fades.max(1));
        assert!((share - 0.05).abs() < 0.01, "faded share {share}");
        assert!((mean_fade_secs - 2.0).abs() < 0.3, "mean fade {mean_fade_secs} s");
    }

    #[test]
    fn sim_rng_draws_are_uniform_enough_for_bernoulli() {
        let mut rng = SimRng::seed_from_u64(3);
        let mut state = LossState::new(LossModel::Bernoulli(0.05));
        let lost = (0..1_000_000).filter(|_| state.lose(&mut rng)).count() as f64 / 1e6;
        assert!((lost - 0.05).abs() < 0.002, "loss {lost}");
    }
}
