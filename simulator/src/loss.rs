//! Loss models for the simulator and the relay. Each destination keeps its own state and
//! draws from a caller's seeded generator, so a run replays from its seed.

use rand::Rng;

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
}
