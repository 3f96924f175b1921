//! The scale searches behind ggml's K-quant reference quantizers (`ggml-quants.c`:
//! `nearest_int`, `make_qx_quants` with `rmse_type = 1`, `make_q3_quants` with `do_rmse`,
//! `make_qkx2_quants`, also run on several sub-blocks in lock-step). These are what
//! `llama-quantize` runs without an importance matrix.
//!
//! Every float expression keeps C's evaluation order (left to right, no fused multiply-add)
//! so the results match llama.cpp's bit for bit.

/// ggml's `nearest_int`: round half to even through the 1.5·2²³ trick (valid for |x| < 2²²).
#[inline(always)]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml's `GROUP_MAX_EPS`: groups whose largest magnitude is below this count as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// The value of largest magnitude (the first one on ties) and that magnitude.
#[inline]
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Σw·x·l and Σw·l² with w = x² for quants `l = clamp(nearest(iscale·x))`, also returning
/// the quants (biased by `nmax`) through `out` when given.
#[cfg(test)]
fn weighted_sums(x: &[f32], nmax: i32, iscale: f32, mut out: Option<&mut [i8]>) -> (f32, f32) {
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &xi) in x.iter().enumerate() {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        if let Some(out) = out.as_deref_mut() {
            out[i] = (l + nmax) as i8;
        }
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    (sumlx, suml2)
}

/// `make_qx_quants(n, nmax, x, L, rmse_type = 1, NULL)`: symmetric quants in `0..2·nmax`
/// (stored biased by `nmax`) and their scale, chosen among 19 trial scales by the x²-weighted
/// least-squares error. The quantizers run [`make_qx_quants_lanes`]; this is its reference.
#[cfg(test)]
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (sumlx, suml2) = weighted_sums(x, nmax, iscale, Some(&mut *l));
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = weighted_sums(x, nmax, iscale, None);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            weighted_sums(x, nmax, iscale, Some(&mut *l));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_qx_quants` on `LANES` sub-blocks of `N` elements at once,
/// each lane doing the scalar operations in the scalar order (identical results), side by side
/// so the compiler can keep the lanes in SIMD registers. Returns each lane's scale.
pub(crate) fn make_qx_quants_lanes<const LANES: usize, const N: usize>(
    nmax: i32,
    x: &[f32],
    l: &mut [i8],
) -> [f32; LANES] {
    let mut xt = [[0.0f32; LANES]; N];
    for (k, xs) in x.chunks_exact(N).enumerate() {
        for i in 0..N {
            xt[i][k] = xs[i];
        }
    }
    let (mut max, mut amax) = ([0.0f32; LANES], [0.0f32; LANES]);
    for row in &xt {
        for k in 0..LANES {
            if row[k].abs() > amax[k] {
                amax[k] = row[k].abs();
                max[k] = row[k];
            }
        }
    }
    let zero: [bool; LANES] = std::array::from_fn(|k| amax[k] < GROUP_MAX_EPS);
    let iscale: [f32; LANES] = std::array::from_fn(|k| -(nmax as f32) / max[k]);
    let mut best_l = [[0i8; LANES]; N];
    let (sumlx, suml2) = qx_sums_lanes(nmax, &xt, &iscale, &mut best_l);
    let mut scale: [f32; LANES] = std::array::from_fn(|k| {
        if suml2[k] != 0.0 {
            sumlx[k] / suml2[k]
        } else {
            0.0
        }
    });
    let mut best: [f32; LANES] = std::array::from_fn(|k| scale[k] * sumlx[k]);
    let mut laux = [[0i8; LANES]; N];
    for is in (-9..=9).filter(|&is| is != 0) {
        let num = nmax as f32 + 0.1 * is as f32;
        let iscale: [f32; LANES] = std::array::from_fn(|k| -num / max[k]);
        let (sumlx, suml2) = qx_sums_lanes(nmax, &xt, &iscale, &mut laux);
        for k in 0..LANES {
            if suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best[k] * suml2[k] {
                for i in 0..N {
                    best_l[i][k] = laux[i][k];
                }
                scale[k] = sumlx[k] / suml2[k];
                best[k] = scale[k] * sumlx[k];
            }
        }
    }
    for (k, lk) in l.chunks_exact_mut(N).enumerate() {
        for (i, v) in lk.iter_mut().enumerate() {
            *v = if zero[k] { 0 } else { best_l[i][k] };
        }
    }
    std::array::from_fn(|k| if zero[k] { 0.0 } else { scale[k] })
}

/// Every lane's quants (biased by `nmax`) and x²-weighted Σw·x·l, Σw·l² for `iscale`.
#[inline(always)]
fn qx_sums_lanes<const LANES: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; LANES]; N],
    iscale: &[f32; LANES],
    out: &mut [[i8; LANES]; N],
) -> ([f32; LANES], [f32; LANES]) {
    let (mut sumlx, mut suml2) = ([0.0f32; LANES], [0.0f32; LANES]);
    for (o, x) in out.iter_mut().zip(xt) {
        for k in 0..LANES {
            let xi = x[k];
            let q = nearest_int(iscale[k] * xi).clamp(-nmax, nmax - 1);
            o[k] = (q + nmax) as i8;
            let w = xi * xi;
            sumlx[k] += w * xi * q as f32;
            suml2[k] += w * q as f32 * q as f32;
        }
    }
    (sumlx, suml2)
}

/// `make_q3_quants(n, nmax, x, L, do_rmse = true)`: symmetric quants in `0..2·nmax` (biased by
/// `nmax`), refined one element at a time for up to five passes while the x²-weighted error
/// drops; returns the least-squares scale.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (max, amax) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &xi) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *li = q as i8;
        let w = xi * xi;
        sumlx += w * xi * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &xi) in l.iter_mut().zip(x) {
            let w = xi * xi;
            let cur = *li as f32;
            let mut slx = sumlx - w * xi * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    slx += w * xi * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The trial grid of [`make_qkx2_quants`]: iscale = (rmin + rdelta·is + nmax)/(max − min) for
/// is in 0..=nstep, and whether errors are absolute (`use_mad`) or squared.
#[derive(Clone, Copy)]
pub(crate) struct Qkx2Search {
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    pub use_mad: bool,
}

/// Weighted error Σw·err(scale·l + min − x) of one candidate.
#[cfg(test)]
fn qkx2_error(x: &[f32], w: &[f32], l: &[u8], scale: f32, min: f32, use_mad: bool) -> f32 {
    let mut err = 0.0f32;
    for ((&xi, &wi), &li) in x.iter().zip(w).zip(l) {
        let diff = scale * li as f32 + min - xi;
        err += wi * if use_mad { diff.abs() } else { diff * diff };
    }
    err
}

/// `make_qkx2_quants`: asymmetric quants in `0..=nmax` with a scale and a (non-positive)
/// offset fitted by weighted least squares over a grid of trial scales. Returns
/// `(scale, the_min)` with `the_min = −offset ≥ 0`, as ggml's out-parameter.
///
/// The quantizers run [`make_qkx2_quants_lanes`]; this one-sub-block transcription is the
/// reference it is tested against.
#[cfg(test)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    s: Qkx2Search,
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &w) in x.iter().zip(weights).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += w;
        sum_x += w * xi;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    for (li, &xi) in l.iter_mut().zip(x) {
        *li = nearest_int(iscale * (xi - min)).clamp(0, nmax) as u8;
    }
    let mut best_error = qkx2_error(x, weights, l, scale, min, s.use_mad);
    if s.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=s.nstep {
        let iscale = (s.rmin + s.rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((la, &xi), &w) in laux.iter_mut().zip(x).zip(weights) {
            let q = nearest_int(iscale * (xi - min)).clamp(0, nmax);
            *la = q as u8;
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * xi;
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error = qkx2_error(x, weights, laux, this_scale, this_min, s.use_mad);
            if cur_error < best_error {
                l.copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qkx2_quants` on `LANES` sub-blocks of `N` elements at once (sub-block k =
/// `x[k·N..(k+1)·N]`). Every lane performs the scalar function's operations in the same order,
/// so the results are identical; laying the lanes side by side lets the compiler run them in
/// SIMD registers, which matters because each lane's sums are long dependency chains.
/// Returns each lane's `(scale, the_min)` and writes its quants to `l`.
pub(crate) fn make_qkx2_quants_lanes<const LANES: usize, const N: usize>(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    s: Qkx2Search,
) -> ([f32; LANES], [f32; LANES]) {
    let mut xt = [[0.0f32; LANES]; N];
    let mut wt = [[0.0f32; LANES]; N];
    for (k, (xs, ws)) in x.chunks_exact(N).zip(weights.chunks_exact(N)).enumerate() {
        for i in 0..N {
            xt[i][k] = xs[i];
            wt[i][k] = ws[i];
        }
    }
    let (mut min, mut max, mut sum_w) = (xt[0], xt[0], wt[0]);
    let mut sum_x: [f32; LANES] = std::array::from_fn(|k| sum_w[k] * xt[0][k]);
    for i in 1..N {
        for k in 0..LANES {
            let v = xt[i][k];
            if v < min[k] {
                min[k] = v;
            }
            if v > max[k] {
                max[k] = v;
            }
            sum_w[k] += wt[i][k];
            sum_x[k] += wt[i][k] * v;
        }
    }
    for m in min.iter_mut() {
        if *m > 0.0 {
            *m = 0.0;
        }
    }
    // Lanes the scalar function returns early for; their arithmetic below is discarded.
    let flat: [bool; LANES] = std::array::from_fn(|k| max[k] == min[k]);
    let min0 = min;
    let iscale: [f32; LANES] = std::array::from_fn(|k| nmax as f32 / (max[k] - min[k]));
    let mut scale: [f32; LANES] = std::array::from_fn(|k| 1.0 / iscale[k]);
    let mut best = [[0u8; LANES]; N];
    quantize_lanes(nmax, &xt, &iscale, &min, &mut best);
    let mut best_error = error_lanes(&xt, &wt, &best, &scale, &min, s.use_mad);
    let mut laux = [[0u8; LANES]; N];
    for is in 0..=s.nstep {
        let num = s.rmin + s.rdelta * is as f32 + nmax as f32;
        // `min` moves to the best fit so far, and the next trial scales from it (as in C).
        let iscale: [f32; LANES] = std::array::from_fn(|k| num / (max[k] - min[k]));
        quantize_lanes(nmax, &xt, &iscale, &min, &mut laux);
        let (mut sum_l, mut sum_l2, mut sum_xl) =
            ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for i in 0..N {
            for k in 0..LANES {
                let (w, q) = (wt[i][k], laux[i][k] as f32);
                sum_l[k] += w * q;
                sum_l2[k] += w * q * q;
                sum_xl[k] += w * q * xt[i][k];
            }
        }
        let mut this_scale = [0.0f32; LANES];
        let mut this_min = [0.0f32; LANES];
        let mut valid = [false; LANES];
        for k in 0..LANES {
            let d = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            valid[k] = d > 0.0;
            this_scale[k] = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / d;
            this_min[k] = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / d;
            if this_min[k] > 0.0 {
                this_min[k] = 0.0;
                this_scale[k] = sum_xl[k] / sum_l2[k];
            }
        }
        let cur = error_lanes(&xt, &wt, &laux, &this_scale, &this_min, s.use_mad);
        for k in 0..LANES {
            if valid[k] && cur[k] < best_error[k] {
                for i in 0..N {
                    best[i][k] = laux[i][k];
                }
                best_error[k] = cur[k];
                scale[k] = this_scale[k];
                min[k] = this_min[k];
            }
        }
    }
    for (k, lk) in l.chunks_exact_mut(N).enumerate() {
        for (i, v) in lk.iter_mut().enumerate() {
            *v = if flat[k] { 0 } else { best[i][k] };
        }
    }
    let scales = std::array::from_fn(|k| if flat[k] { 0.0 } else { scale[k] });
    let mins = std::array::from_fn(|k| if flat[k] { -min0[k] } else { -min[k] });
    (scales, mins)
}

/// `out[i][k] = clamp(nearest(iscale[k]·(x[i][k] − min[k])), 0, nmax)` for every lane.
#[inline(always)]
fn quantize_lanes<const LANES: usize, const N: usize>(
    nmax: i32,
    xt: &[[f32; LANES]; N],
    iscale: &[f32; LANES],
    min: &[f32; LANES],
    out: &mut [[u8; LANES]; N],
) {
    for (o, x) in out.iter_mut().zip(xt) {
        for k in 0..LANES {
            o[k] = nearest_int(iscale[k] * (x[k] - min[k])).clamp(0, nmax) as u8;
        }
    }
}

/// Every lane's weighted error Σw·err(scale·l + min − x).
#[inline(always)]
fn error_lanes<const LANES: usize, const N: usize>(
    xt: &[[f32; LANES]; N],
    wt: &[[f32; LANES]; N],
    l: &[[u8; LANES]; N],
    scale: &[f32; LANES],
    min: &[f32; LANES],
    use_mad: bool,
) -> [f32; LANES] {
    let mut err = [0.0f32; LANES];
    for i in 0..N {
        for k in 0..LANES {
            let diff = scale[k] * l[i][k] as f32 + min[k] - xt[i][k];
            err[k] += wt[i][k] * if use_mad { diff.abs() } else { diff * diff };
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4), -2);
        assert_eq!(nearest_int(31.6), 32);
    }

    /// The lock-step version gives the scalar function's results bit for bit, including for
    /// constant sub-blocks (the early return) and sub-blocks of one sign.
    #[test]
    fn lanes_equal_the_scalar_search() {
        let mut seed = 12345u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let search = Qkx2Search {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        for round in 0..50 {
            let mut x: Vec<f32> = (0..256).map(|_| next() * 0.1).collect();
            if round % 5 == 0 {
                x[32..64].fill(0.0); // all zero: the early return
                x[64..96].iter_mut().for_each(|v| *v = v.abs()); // positive only
                x[96..128].fill(-0.25); // constant negative: early return, min 0.25
            }
            let w: Vec<f32> = x.iter().map(|v| 0.05 + v.abs()).collect();
            let mut l_lanes = [0u8; 256];
            let (sc, mn) = make_qkx2_quants_lanes::<8, 32>(15, &x, &w, &mut l_lanes, search);
            for k in 0..8 {
                let r = 32 * k..32 * k + 32;
                let (mut l, mut laux) = ([0u8; 32], [0u8; 32]);
                let (s1, m1) =
                    make_qkx2_quants(15, &x[r.clone()], &w[r.clone()], &mut l, &mut laux, search);
                assert_eq!(
                    (s1.to_bits(), m1.to_bits()),
                    (sc[k].to_bits(), mn[k].to_bits()),
                    "round {round} lane {k}"
                );
                assert_eq!(&l[..], &l_lanes[r], "round {round} lane {k}");
            }
        }
    }

    #[test]
    fn qx_lanes_equal_the_scalar_search() {
        let mut seed = 777u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for round in 0..50 {
            let mut x: Vec<f32> = (0..256).map(|_| next() * 0.1).collect();
            if round % 5 == 0 {
                x[16..32].fill(0.0); // all zero
                x[48] = 3.0; // outlier
            }
            let mut l_lanes = [0i8; 256];
            let sc = make_qx_quants_lanes::<16, 16>(32, &x, &mut l_lanes);
            for (k, sk) in sc.iter().enumerate() {
                let r = 16 * k..16 * k + 16;
                let mut l = [0i8; 16];
                let s1 = make_qx_quants(32, &x[r.clone()], &mut l);
                assert_eq!(s1.to_bits(), sk.to_bits(), "round {round} lane {k}");
                assert_eq!(&l[..], &l_lanes[r], "round {round} lane {k}");
            }
        }
    }

    #[test]
    fn all_zero_groups_give_zero_scale_and_quants() {
        let x = [0.0f32; 16];
        let mut l = [7i8; 16];
        assert_eq!(make_qx_quants(32, &x, &mut l), 0.0);
        assert!(l.iter().all(|&v| v == 0));
        let mut l = [7i8; 16];
        assert_eq!(make_q3_quants(4, &x, &mut l), 0.0);
        assert!(l.iter().all(|&v| v == 0));
    }
}
