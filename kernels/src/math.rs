//! Scalar math written so the compiler vectorises loops that call it.

/// e^x, branch-free so loops over it vectorise (libm's `expf` is a call per element).
///
/// x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two parts so n·ln2 is exact), e^r by its
/// degree-7 Taylor polynomial (relative error below 2e-8 on that range, under f32 rounding),
/// times 2^n built in the exponent bits. n is rounded by adding 1.5·2²³ (its low mantissa bits
/// then hold n), avoiding a float→int conversion the compiler would not vectorise. x is clamped
/// to [−87.3, 88]: below, e^x leaves f32's normal range (the result, 1.2e-38, is as good as 0
/// next to any softmax maximum or in `x/(1+e^-x)`); above, it would overflow. NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // t's bits are ROUND's plus n; move n + 127 into the exponent field.
    let two_n = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(two_n)
}

/// SiLU, `x·σ(x) = x / (1 + e^−x)`, with [`exp`].
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_f64_exp_over_its_range() {
        let mut worst = 0.0f64;
        for i in 0..=400_000 {
            let x = -87.0 + (i as f32) * 175.0 / 400_000.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) < 1.3e-38 && exp(f32::NEG_INFINITY) < 1.3e-38);
        assert!(exp(1e30).is_finite() && exp(f32::INFINITY).is_finite());
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn silu_matches_its_definition() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.05;
            let want = x as f64 / (1.0 + (-(x as f64)).exp());
            let got = silu(x) as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "silu({x}) = {got}, want {want}"
            );
        }
        assert!(silu(-200.0).abs() < 1e-30 && silu(200.0) == 200.0);
    }
}
