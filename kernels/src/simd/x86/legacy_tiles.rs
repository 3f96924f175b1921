//! The legacy-format 4×4 GEMM tiles and four-row kernels as a macro over a level's target
//! features: each level defines `dpb`, `q5_high` and `fast_scales` and invokes
//! [`legacy_tiles`].

/// Generates `tile_impl`, its per-type wrappers and the `tile4x4_legacy` / `rows4_legacy`
/// lookup functions under `#[target_feature(enable = $feat)]`. `$plus128`: Q8_0 via the +128
/// activation trick (true, needs a non-saturating `dpb`) or the sign trick (false).
macro_rules! legacy_tiles {
    ($feat:tt, $plus128:expr, $tile_hadd:expr) => {
        const K_Q4_0: u8 = 0;
        const K_Q4_1: u8 = 1;
        const K_Q5_0: u8 = 2;
        const K_Q5_1: u8 = 3;
        const K_Q8_0: u8 = 4;

        /// Weight block bytes.
        const fn wbs(k: u8) -> usize {
            match k {
                K_Q4_0 => 18,
                K_Q4_1 => 20,
                K_Q5_0 => 22,
                K_Q5_1 => 24,
                _ => 34,
            }
        }

        /// Whether the format has a min `m` (and so Q8_1 activations with their `s`).
        const fn has_m(k: u8) -> bool {
            k == K_Q4_1 || k == K_Q5_1
        }

        /// Chunk of blocks whose scales are staged together.
        const CH: usize = 8;

        /// Tile variant: `tile4_impl` (hadd fold) or `tile_impl::<K, 4>` (16 accumulators).
        const TILE_HADD: bool = $tile_hadd;

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn ld16(p: *const u8) -> __m128i {
            _mm_loadu_si128(p as *const __m128i)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn ld32(p: *const u8) -> __m256i {
            _mm256_loadu_si256(p as *const __m256i)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn rd16(p: *const u8) -> u16 {
            (p as *const u16).read_unaligned()
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum8(x: __m256) -> f32 {
            let r = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            let r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }

        /// 16 packed bytes → 32 bytes in element order (low nibbles = elements 0..16 in the
        /// low 128 bits, high nibbles = 16..32 in the high 128 bits), values 0..15.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles32(p: *const u8) -> __m256i {
            let lo = ld16(p);
            let hi = _mm_srli_epi16::<4>(lo);
            _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
        }

        /// The quants of weight block `p` in element order: Q4/Q5 unsigned (0..15 / 0..31),
        /// Q8_0 signed.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack<const K: u8>(p: *const u8) -> __m256i {
            match K {
                K_Q4_0 => nibbles32(p.add(2)),
                K_Q4_1 => nibbles32(p.add(4)),
                K_Q5_0 => _mm256_or_si256(nibbles32(p.add(6)), q5_high(p.add(2))),
                K_Q5_1 => _mm256_or_si256(nibbles32(p.add(8)), q5_high(p.add(4))),
                _ => ld32(p.add(2)),
            }
        }

        /// The f16 scale pair at the start of blocks 0..n (stride `stride` bytes from `p`,
        /// n ≤ 8; lanes ≥ n are 0) as f32: (first = d, second = m or s when `PAIR`).
        /// `gather`: one `vpgatherdd` of the u32 (d, m) per 8 blocks, split with a pack; else
        /// scalar u16 loads assembled in registers (faster when only d is needed).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn chunk_scales(
            p: *const u8,
            stride: usize,
            n: usize,
            pair: bool,
            gather: bool,
        ) -> (__m256, __m256) {
            if let Some(v) = fast_scales(p, stride, n, pair) {
                v
            } else if gather {
                let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let idx = _mm256_mullo_epi32(iota, _mm256_set1_epi32(stride as i32));
                let v = if n == CH {
                    _mm256_i32gather_epi32::<1>(p as *const i32, idx)
                } else {
                    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), iota);
                    _mm256_mask_i32gather_epi32::<1>(
                        _mm256_setzero_si256(),
                        p as *const i32,
                        idx,
                        mask,
                    )
                };
                let lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
                let hi = _mm256_srli_epi32::<16>(v);
                let pk = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(lo, hi));
                (
                    _mm256_cvtph_ps(_mm256_castsi256_si128(pk)),
                    _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(pk)),
                )
            } else {
                let mut h = [0u16; CH];
                let mut h2 = [0u16; CH];
                for j in 0..n {
                    h[j] = rd16(p.add(j * stride));
                    if pair {
                        h2[j] = rd16(p.add(j * stride + 2));
                    }
                }
                let second = if pair {
                    _mm256_cvtph_ps(ld16(h2.as_ptr() as *const u8))
                } else {
                    _mm256_setzero_ps()
                };
                (_mm256_cvtph_ps(ld16(h.as_ptr() as *const u8)), second)
            }
        }

        /// Exact integer dots of one block: `d[r][t]` holds 8 i32 lanes summing to
        /// Σ q_w·q_a (offset-corrected) of weight block `wq[r]` and activation block `aq[t]`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn block_dots<const K: u8, const NT: usize>(
            wq: &[__m256i; 4],
            aq: &[__m256i; NT],
        ) -> [[__m256i; NT]; 4] {
            let zero = _mm256_setzero_si256();
            let mut d = [[zero; NT]; 4];
            if K == K_Q8_0 && $plus128 {
                let x80 = _mm256_set1_epi8(0x80u8 as i8);
                let mut au = [zero; NT];
                for t in 0..NT {
                    au[t] = _mm256_xor_si256(aq[t], x80);
                }
                for r in 0..4 {
                    // −128·Σw per lane group, so dot = Σ(a+128)·w − 128·Σw = Σa·w.
                    let bias = _mm256_sub_epi32(zero, dpb(zero, x80, wq[r]));
                    for t in 0..NT {
                        d[r][t] = dpb(bias, au[t], wq[r]);
                    }
                }
            } else if K == K_Q8_0 {
                for r in 0..4 {
                    let wa = _mm256_sign_epi8(wq[r], wq[r]);
                    for t in 0..NT {
                        d[r][t] = dpb(zero, wa, _mm256_sign_epi8(aq[t], wq[r]));
                    }
                }
            } else if K == K_Q4_0 || K == K_Q5_0 {
                let off = _mm256_set1_epi8(if K == K_Q4_0 { 8 } else { 16 });
                let mut bias = [zero; NT];
                for t in 0..NT {
                    bias[t] = _mm256_sub_epi32(zero, dpb(zero, off, aq[t]));
                }
                for r in 0..4 {
                    for t in 0..NT {
                        d[r][t] = dpb(bias[t], wq[r], aq[t]);
                    }
                }
            } else {
                for r in 0..4 {
                    for t in 0..NT {
                        d[r][t] = dpb(zero, wq[r], aq[t]);
                    }
                }
            }
            d
        }

        /// out[r][t] = dot(weight row r, activation row t) for format K.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn tile_impl<const K: u8, const NT: usize>(
            w: [&[u8]; 4],
            a: [&[u8]; NT],
        ) -> [[f32; NT]; 4] {
            let wb = wbs(K);
            let ab = if has_m(K) { 36 } else { 34 };
            let aq_off = if has_m(K) { 4 } else { 2 };
            let nb = w[0].len() / wb;
            // Kernel contract (whole blocks, equal lengths); checked since reads are unchecked.
            for r in 0..4 {
                assert_eq!(
                    w[r].len(),
                    nb * wb,
                    "weight rows: whole blocks of equal length"
                );
            }
            for t in 0..NT {
                assert_eq!(a[t].len(), nb * ab, "activation rows: nb whole blocks");
            }
            let mut wp = [std::ptr::null::<u8>(); 4];
            for r in 0..4 {
                wp[r] = w[r].as_ptr();
            }
            let mut ap = [std::ptr::null::<u8>(); NT];
            for t in 0..NT {
                ap[t] = a[t].as_ptr();
            }
            let zero = _mm256_setzero_si256();
            let mut acc = [[_mm256_setzero_ps(); NT]; 4];
            let mut b0 = 0;
            while b0 < nb {
                let n = (nb - b0).min(CH);
                // The chunk's f16 scales (zero past n), 8 blocks per conversion.
                let mut da = [_mm256_setzero_ps(); NT];
                let mut ds = [_mm256_setzero_ps(); NT];
                for t in 0..NT {
                    (da[t], ds[t]) =
                        chunk_scales(ap[t].add(b0 * ab), ab, n, has_m(K), has_m(K) && NT == 4);
                }
                let mut sc = [[[0f32; CH]; NT]; 4];
                for r in 0..4 {
                    let (dw, dm) =
                        chunk_scales(wp[r].add(b0 * wb), wb, n, has_m(K), has_m(K) && NT == 4);
                    for t in 0..NT {
                        _mm256_storeu_ps(sc[r][t].as_mut_ptr(), _mm256_mul_ps(dw, da[t]));
                        if has_m(K) {
                            acc[r][t] = _mm256_fmadd_ps(dm, ds[t], acc[r][t]);
                        }
                    }
                }
                for j in 0..n {
                    let b = b0 + j;
                    let mut wq = [zero; 4];
                    for r in 0..4 {
                        wq[r] = unpack::<K>(wp[r].add(b * wb));
                    }
                    let mut aq = [zero; NT];
                    for t in 0..NT {
                        aq[t] = ld32(ap[t].add(b * ab + aq_off));
                    }
                    let d = block_dots::<K, NT>(&wq, &aq);
                    for r in 0..4 {
                        for t in 0..NT {
                            let s = _mm256_set1_ps(sc[r][t][j]);
                            acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[r][t]), s, acc[r][t]);
                        }
                    }
                }
                b0 += n;
            }
            let mut out = [[0f32; NT]; 4];
            for r in 0..4 {
                for t in 0..NT {
                    out[r][t] = hsum8(acc[r][t]);
                }
            }
            out
        }

        /// 8 lanes (j = 0..8) of 4 vectors p[t] → q[k] = [p[0..4][k] | p[0..4][k + 4]]
        /// (k = 0..4): for each block j, the 4 values of t in one 128-bit half.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn transpose4x8(p: [__m256; 4]) -> [__m256; 4] {
            let lo01 = _mm256_unpacklo_ps(p[0], p[1]); // p0_0 p1_0 p0_1 p1_1 | 4,5
            let lo23 = _mm256_unpacklo_ps(p[2], p[3]);
            let hi01 = _mm256_unpackhi_ps(p[0], p[1]); // p0_2 p1_2 p0_3 p1_3 | 6,7
            let hi23 = _mm256_unpackhi_ps(p[2], p[3]);
            [
                _mm256_shuffle_ps::<0x44>(lo01, lo23),
                _mm256_shuffle_ps::<0xEE>(lo01, lo23),
                _mm256_shuffle_ps::<0x44>(hi01, hi23),
                _mm256_shuffle_ps::<0xEE>(hi01, hi23),
            ]
        }

        /// The 4×4 tile with one accumulator per weight row: per block the 4 token dots of a
        /// row are folded by 3 `vphaddd` into [t0 t1 t2 t3 | t0 t1 t2 t3] (lanes 0..4 and 4..8
        /// of each dot), converted and scaled by one FMA with [d_w·d_a(t)] (both halves).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn tile4_impl<const K: u8>(w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4] {
            let wb = wbs(K);
            let ab = if has_m(K) { 36 } else { 34 };
            let aq_off = if has_m(K) { 4 } else { 2 };
            let nb = w[0].len() / wb;
            for r in 0..4 {
                assert_eq!(
                    w[r].len(),
                    nb * wb,
                    "weight rows: whole blocks of equal length"
                );
                assert_eq!(a[r].len(), nb * ab, "activation rows: nb whole blocks");
            }
            let mut wp = [std::ptr::null::<u8>(); 4];
            let mut ap = [std::ptr::null::<u8>(); 4];
            for r in 0..4 {
                wp[r] = w[r].as_ptr();
                ap[r] = a[r].as_ptr();
            }
            let zero = _mm256_setzero_si256();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut b0 = 0;
            while b0 < nb {
                let n = (nb - b0).min(CH);
                let mut da = [_mm256_setzero_ps(); 4];
                let mut ds = [_mm256_setzero_ps(); 4];
                for t in 0..4 {
                    (da[t], ds[t]) = chunk_scales(ap[t].add(b0 * ab), ab, n, has_m(K), has_m(K));
                }
                // scq[j][r] = [d_w(r, j)·d_a(t, j)] for t = 0..4.
                let mut scq = [[[0f32; 4]; 4]; CH];
                for r in 0..4 {
                    let (dw, dm) = chunk_scales(wp[r].add(b0 * wb), wb, n, has_m(K), has_m(K));
                    let q = transpose4x8([
                        _mm256_mul_ps(dw, da[0]),
                        _mm256_mul_ps(dw, da[1]),
                        _mm256_mul_ps(dw, da[2]),
                        _mm256_mul_ps(dw, da[3]),
                    ]);
                    for k in 0..4 {
                        _mm_storeu_ps(scq[k][r].as_mut_ptr(), _mm256_castps256_ps128(q[k]));
                        _mm_storeu_ps(scq[k + 4][r].as_mut_ptr(), _mm256_extractf128_ps::<1>(q[k]));
                    }
                    if has_m(K) {
                        let q = transpose4x8([
                            _mm256_mul_ps(dm, ds[0]),
                            _mm256_mul_ps(dm, ds[1]),
                            _mm256_mul_ps(dm, ds[2]),
                            _mm256_mul_ps(dm, ds[3]),
                        ]);
                        let m = _mm256_add_ps(_mm256_add_ps(q[0], q[1]), _mm256_add_ps(q[2], q[3]));
                        acc[r] = _mm256_add_ps(acc[r], m);
                    }
                }
                for j in 0..n {
                    let b = b0 + j;
                    let mut wq = [zero; 4];
                    let mut aq = [zero; 4];
                    for r in 0..4 {
                        wq[r] = unpack::<K>(wp[r].add(b * wb));
                        aq[r] = ld32(ap[r].add(b * ab + aq_off));
                    }
                    let d = block_dots::<K, 4>(&wq, &aq);
                    for r in 0..4 {
                        let h = _mm256_hadd_epi32(
                            _mm256_hadd_epi32(d[r][0], d[r][1]),
                            _mm256_hadd_epi32(d[r][2], d[r][3]),
                        );
                        let s = _mm256_broadcast_ps(&*(scq[j][r].as_ptr() as *const __m128));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), s, acc[r]);
                    }
                }
                b0 += n;
            }
            let mut out = [[0f32; 4]; 4];
            for r in 0..4 {
                let v = _mm_add_ps(
                    _mm256_castps256_ps128(acc[r]),
                    _mm256_extractf128_ps::<1>(acc[r]),
                );
                _mm_storeu_ps(out[r].as_mut_ptr(), v);
            }
            out
        }

        fn tile_k<const K: u8>(w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4] {
            // SAFETY: reachable only through a kernel set whose level the CPU runs (simd/mod.rs);
            // slice lengths are asserted inside.
            if TILE_HADD {
                unsafe { tile4_impl::<K>(w, a) }
            } else {
                unsafe { tile_impl::<K, 4>(w, a) }
            }
        }

        fn rows4_k<const K: u8>(w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
            // SAFETY: as in `tile_k`.
            let o = unsafe { tile_impl::<K, 1>(w, [a]) };
            [o[0][0], o[1][0], o[2][0], o[3][0]]
        }

        fn tile4x4_legacy(ty: $crate::table::GgmlType) -> Option<$crate::kernel_set::Tile4x4Fn> {
            use $crate::table::GgmlType as T;
            match ty {
                T::Q4_0 => Some(tile_k::<K_Q4_0>),
                T::Q4_1 => Some(tile_k::<K_Q4_1>),
                T::Q5_0 => Some(tile_k::<K_Q5_0>),
                T::Q5_1 => Some(tile_k::<K_Q5_1>),
                T::Q8_0 => Some(tile_k::<K_Q8_0>),
                _ => None,
            }
        }

        fn rows4_legacy(ty: $crate::table::GgmlType) -> Option<$crate::kernel_set::Rows4DotFn> {
            use $crate::table::GgmlType as T;
            match ty {
                T::Q4_0 => Some(rows4_k::<K_Q4_0>),
                T::Q4_1 => Some(rows4_k::<K_Q4_1>),
                T::Q5_0 => Some(rows4_k::<K_Q5_0>),
                T::Q5_1 => Some(rows4_k::<K_Q5_1>),
                T::Q8_0 => Some(rows4_k::<K_Q8_0>),
                _ => None,
            }
        }
    };
}
pub(crate) use legacy_tiles;
