//! The lower bound that delivery efficiency is measured against (docs/simulator.md).
//!
//! With a fountain code a receiver that loses a share p of what is sent needs about K/q
//! symbols aired for a block of K source symbols (q = 1 - p), and the uplink must serve
//! the worst of N receivers. The number a receiver gets out of n sent is binomial, so the
//! worst of N needs about K/q + e_N * sqrt(K p) / q, where e_N is the expected maximum of N
//! standard normal variables (e_2000 = 3.44, as DESIGN.md quotes). Summed over blocks:
//!
//! lower_bound_symbols = sum over blocks b of ( K_b / q + e_N * sqrt(K_b * p) / q )

/// The expected maximum of `n` independent standard normal variables, by numerical
/// integration of E[max] = integral of x * n * phi(x) * Phi(x)^(n-1) dx.
pub fn expected_max_of_normals(n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    let (lo, hi, steps) = (-10.0f64, 10.0f64, 20_000);
    let dx = (hi - lo) / steps as f64;
    let mut sum = 0.0;
    for i in 0..steps {
        let x = lo + (i as f64 + 0.5) * dx;
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let cdf = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
        sum += x * n * pdf * cdf.powf(n - 1.0) * dx;
    }
    sum
}

/// The error function (Abramowitz and Stegun 7.1.26; absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

/// The lower bound on DATA symbols to deliver blocks of `source_symbols` to `receivers`
/// receivers that each lose `loss` of what is sent.
pub fn lower_bound_symbols(source_symbols: &[u32], loss: f64, receivers: usize) -> f64 {
    let p = loss.clamp(0.0, 0.99);
    let q = 1.0 - p;
    let e = expected_max_of_normals(receivers);
    source_symbols.iter().map(|&k| f64::from(k) / q + e * (f64::from(k) * p).sqrt() / q).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_design_constant() {
        let e = expected_max_of_normals(2000);
        assert!((e - 3.44).abs() < 0.02, "e_2000 = {e}");
        assert!((expected_max_of_normals(2) - 0.5642).abs() < 1e-3);
        let bound = lower_bound_symbols(&[1000], 0.0, 2000);
        assert!((bound - 1000.0).abs() < 1e-9);
    }
}
