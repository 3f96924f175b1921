//! The legacy-format and float kernels as macros over a level's target features, so every
//! x86 level compiles the same code: each level defines `mul_sum_us8` (its u8 × i8 → i32
//! products) and invokes [`legacy_kernels`]. Bodies use only AVX2 intrinsics plus that one.

/// Generates all legacy/float kernels under `#[target_feature(enable = $feat)]`, plus the
/// `row_dot_legacy`, `row_dot4_legacy`, `quantize_legacy` lookup functions.
macro_rules! legacy_kernels {
    ($feat:tt) => {
        // ---------------------------------------------------------------- small helpers

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

        /// The f16 at `p` (unaligned) as f32 (F16C, exact).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16_at(p: *const u8) -> f32 {
            let h = (p as *const u16).read_unaligned();
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
        }

        /// The two consecutive f16 at `p` as f32 lanes 0 and 1 (lanes 2, 3 are 0).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f16x2_at(p: *const u8) -> __m128 {
            let h = (p as *const u32).read_unaligned();
            _mm_cvtph_ps(_mm_cvtsi32_si128(h as i32))
        }

        /// f32 → f16 bits, round to nearest even (F16C; same as `half::f16::from_f32`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn f32_to_f16_bits(v: f32) -> u16 {
            _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v))) as u16
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum8(x: __m256) -> f32 {
            let r = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
            let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
            let r = _mm_add_ss(r, _mm_movehdup_ps(r));
            _mm_cvtss_f32(r)
        }

        /// 16 packed bytes → 32 bytes in element order: low nibbles (elements 0..16) in the low
        /// 128 bits, high nibbles (16..32) in the high 128 bits.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles32(p: *const u8) -> __m256i {
            let lo = ld16(p);
            let hi = _mm_srli_epi16::<4>(lo);
            _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
        }

        /// Bit j of the little-endian u32 at `p` → byte j = 0xFF if set, else 0x00.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bits32(p: *const u8) -> __m256i {
            let h = (p as *const u32).read_unaligned();
            let v = _mm256_set1_epi32(h as i32);
            // Byte j takes source byte j/8 (indices are per 128-bit lane; every lane holds h).
            let shuf = _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            );
            let v = _mm256_shuffle_epi8(v, shuf);
            // Byte j: set every bit but bit j%8, so the byte is all ones iff bit j%8 was set.
            let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64));
            _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
        }

        /// d_w·d_a broadcast, for the f16 scales at `wb` and `ab` (one F16C conversion).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn d_prod(wb: *const u8, ab: *const u8) -> __m256 {
            let hw = (wb as *const u16).read_unaligned() as u32;
            let ha = (ab as *const u16).read_unaligned() as u32;
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128((hw | ha << 16) as i32));
            _mm256_broadcastss_ps(_mm_mul_ss(v, _mm_movehdup_ps(v)))
        }

        /// Signed i8 × i8 → i32 per 4 bytes (sign trick; `y` must not contain −128).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256i {
            mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
        }

        // ------------------------------------------------------------ weight unpackers
        // Signed family (activation Q8_0: d at 0, qs at 2): element values as i8.

        /// Q4_0 (d@0, qs@2): nibble − 8.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q4_0(wb: *const u8) -> __m256i {
            _mm256_sub_epi8(nibbles32(wb.add(2)), _mm256_set1_epi8(8))
        }

        /// Q5_0 (d@0, qh@2, qs@6): q5 − 16 = nibble | (high bit clear ? 0xF0 : 0) as i8.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_0(wb: *const u8) -> __m256i {
            let hi = _mm256_andnot_si256(bits32(wb.add(2)), _mm256_set1_epi8(0xF0u8 as i8));
            _mm256_or_si256(nibbles32(wb.add(6)), hi)
        }

        /// Q8_0 (d@0, qs@2).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q8_0(wb: *const u8) -> __m256i {
            ld32(wb.add(2))
        }

        // Unsigned family (activation Q8_1: d@0, s@2, qs@4; weight d@0, m@2): values as u8.

        /// Q4_1 (d@0, m@2, qs@4): nibble.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q4_1(wb: *const u8) -> __m256i {
            nibbles32(wb.add(4))
        }

        /// Q5_1 (d@0, m@2, qh@4, qs@8): nibble | high bit << 4.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_1(wb: *const u8) -> __m256i {
            let hi = _mm256_and_si256(bits32(wb.add(4)), _mm256_set1_epi8(0x10));
            _mm256_or_si256(nibbles32(wb.add(8)), hi)
        }

        $crate::simd::x86::legacy::signed_dot!(
            $feat,
            q4_0_dot,
            q4_0_dot4,
            q4_0_k,
            q4_0_k4,
            18,
            unpack_q4_0
        );
        $crate::simd::x86::legacy::signed_dot!(
            $feat,
            q5_0_dot,
            q5_0_dot4,
            q5_0_k,
            q5_0_k4,
            22,
            unpack_q5_0
        );
        $crate::simd::x86::legacy::signed_dot!(
            $feat,
            q8_0_dot,
            q8_0_dot4,
            q8_0_k,
            q8_0_k4,
            34,
            unpack_q8_0
        );
        $crate::simd::x86::legacy::unsigned_dot!(
            $feat,
            q4_1_dot,
            q4_1_dot4,
            q4_1_k,
            q4_1_k4,
            20,
            unpack_q4_1
        );
        $crate::simd::x86::legacy::unsigned_dot!(
            $feat,
            q5_1_dot,
            q5_1_dot4,
            q5_1_k,
            q5_1_k4,
            24,
            unpack_q5_1
        );

        // ------------------------------------------------------------ Q8_0 / Q8_1 quantizers

        /// 8 floats → i32 with the scalar `(x).round() as i8` result: rounded half away from
        /// zero (C `roundf`) as `trunc(x ± (0.5 − 2⁻²⁵))` (exact: the sum can reach the next
        /// integer only from a fraction ≥ 0.5), NaN → 0, +inf/huge → 127 (the packs saturate the
        /// rest, −inf → −128, as `as i8`; x·id is ±inf when d is subnormal).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn round_away_epi32(x: __m256) -> __m256i {
            let below_half = _mm256_set1_ps(f32::from_bits(0x3EFF_FFFF)); // 0.5 − 2⁻²⁵
            let h = _mm256_or_ps(below_half, _mm256_and_ps(x, _mm256_set1_ps(-0.0)));
            let r =
                _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(_mm256_add_ps(x, h));
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(x, x));
            _mm256_cvtps_epi32(_mm256_min_ps(r, _mm256_set1_ps(127.0)))
        }

        /// One 32-element block: (f32 d, quants in element order, Σq).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn quant_q8_block(x: *const f32) -> (f32, __m256i, i32) {
            let v = [
                _mm256_loadu_ps(x),
                _mm256_loadu_ps(x.add(8)),
                _mm256_loadu_ps(x.add(16)),
                _mm256_loadu_ps(x.add(24)),
            ];
            let sign = _mm256_set1_ps(-0.0);
            let m = _mm256_max_ps(
                _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
            );
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let amax = _mm_cvtss_f32(m);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let idv = _mm256_set1_ps(id);
            let i0 = round_away_epi32(_mm256_mul_ps(v[0], idv));
            let i1 = round_away_epi32(_mm256_mul_ps(v[1], idv));
            let i2 = round_away_epi32(_mm256_mul_ps(v[2], idv));
            let i3 = round_away_epi32(_mm256_mul_ps(v[3], idv));
            // Saturating packs (as the scalar `as i8`), then undo the per-lane interleave.
            let p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // Σq from the saturated bytes (equal to the i32 values unless a value saturated).
            let s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p);
            let s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(s32),
                _mm256_extracti128_si256::<1>(s32),
            );
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            (d, p, _mm_cvtsi128_si32(s))
        }

        #[target_feature(enable = $feat)]
        unsafe fn quant_q8_0_k(x: *const f32, out: *mut u8, nb: usize) {
            for i in 0..nb {
                let (d, q, _) = quant_q8_block(x.add(i * 32));
                let o = out.add(i * 34);
                (o as *mut u16).write_unaligned(f32_to_f16_bits(d));
                _mm256_storeu_si256(o.add(2) as *mut __m256i, q);
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn quant_q8_1_k(x: *const f32, out: *mut u8, nb: usize) {
            for i in 0..nb {
                let (d, q, s) = quant_q8_block(x.add(i * 32));
                let o = out.add(i * 36);
                (o as *mut u16).write_unaligned(f32_to_f16_bits(d));
                (o.add(2) as *mut u16).write_unaligned(f32_to_f16_bits(s as f32 * d));
                _mm256_storeu_si256(o.add(4) as *mut __m256i, q);
            }
        }

        fn quant_q8_0(x: &[f32], out: &mut [u8]) {
            let nb = x.len() / 32;
            assert!(
                x.len() % 32 == 0 && out.len() == nb * 34,
                "quantize Q8_0: lengths"
            );
            // SAFETY: lengths checked; the CPU runs `$feat` (simd/mod.rs).
            unsafe { quant_q8_0_k(x.as_ptr(), out.as_mut_ptr(), nb) }
        }

        fn quant_q8_1(x: &[f32], out: &mut [u8]) {
            let nb = x.len() / 32;
            assert!(
                x.len() % 32 == 0 && out.len() == nb * 36,
                "quantize Q8_1: lengths"
            );
            // SAFETY: lengths checked; the CPU runs `$feat` (simd/mod.rs).
            unsafe { quant_q8_1_k(x.as_ptr(), out.as_mut_ptr(), nb) }
        }

        // ------------------------------------------------------------ float types

        /// 16 f32 at `p`, in order.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load16_f32(p: *const u8) -> (__m256, __m256) {
            (
                _mm256_loadu_ps(p as *const f32),
                _mm256_loadu_ps(p.add(32) as *const f32),
            )
        }

        /// 16 f16 at `p` → f32, in order.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load16_f16(p: *const u8) -> (__m256, __m256) {
            (_mm256_cvtph_ps(ld16(p)), _mm256_cvtph_ps(ld16(p.add(16))))
        }

        /// 16 bf16 at `p` → f32 (exact: bf16 bits << 16): even elements, then odd elements.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load16_bf16(p: *const u8) -> (__m256, __m256) {
            let v = ld32(p);
            let even = _mm256_slli_epi32::<16>(v);
            let odd = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF_0000u32 as i32));
            (_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load1_f32(p: *const u8) -> f32 {
            (p as *const f32).read_unaligned()
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load1_bf16(p: *const u8) -> f32 {
            f32::from_bits(((p as *const u16).read_unaligned() as u32) << 16)
        }

        $crate::simd::x86::legacy::float_dot!(
            $feat, f32_dot, f32_dot4, f32_k, f32_k4, 4, load16_f32, load1_f32
        );
        $crate::simd::x86::legacy::float_dot!(
            $feat, f16_dot, f16_dot4, f16_k, f16_k4, 2, load16_f16, f16_at
        );
        $crate::simd::x86::legacy::float_dot!(
            $feat,
            bf16_dot,
            bf16_dot4,
            bf16_k,
            bf16_k4,
            2,
            load16_bf16,
            load1_bf16
        );

        #[target_feature(enable = $feat)]
        unsafe fn quant_f16_k(x: *const f32, out: *mut u8, n: usize) {
            let mut i = 0;
            while i + 8 <= n {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.add(i)));
                _mm_storeu_si128(out.add(2 * i) as *mut __m128i, h);
                i += 8;
            }
            while i < n {
                (out.add(2 * i) as *mut u16).write_unaligned(f32_to_f16_bits(*x.add(i)));
                i += 1;
            }
        }

        /// ggml's fp32→bf16: NaN → quiet NaN (bits >> 16 | 64), else round to nearest even.
        #[target_feature(enable = $feat)]
        unsafe fn quant_bf16_k(x: *const f32, out: *mut u8, n: usize) {
            let mut i = 0;
            while i + 8 <= n {
                let u = _mm256_castps_si256(_mm256_loadu_ps(x.add(i)));
                let hi = _mm256_srli_epi32::<16>(u);
                let abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fff_ffff));
                let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
                let bias = _mm256_add_epi32(
                    _mm256_set1_epi32(0x7fff),
                    _mm256_and_si256(hi, _mm256_set1_epi32(1)),
                );
                let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(u, bias));
                let quiet = _mm256_or_si256(hi, _mm256_set1_epi32(64));
                let r = _mm256_blendv_epi8(rounded, quiet, nan);
                let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(r, r));
                _mm_storeu_si128(out.add(2 * i) as *mut __m128i, _mm256_castsi256_si128(p));
                i += 8;
            }
            while i < n {
                let b = crate::formats::bf16::fp32_to_bf16(*x.add(i));
                (out.add(2 * i) as *mut u16).write_unaligned(b.to_bits());
                i += 1;
            }
        }

        fn quant_f16(x: &[f32], out: &mut [u8]) {
            assert!(out.len() == x.len() * 2, "quantize F16: lengths");
            // SAFETY: lengths checked; the CPU runs `$feat` (simd/mod.rs).
            unsafe { quant_f16_k(x.as_ptr(), out.as_mut_ptr(), x.len()) }
        }

        fn quant_bf16(x: &[f32], out: &mut [u8]) {
            assert!(out.len() == x.len() * 2, "quantize BF16: lengths");
            // SAFETY: lengths checked; the CPU runs `$feat` (simd/mod.rs).
            unsafe { quant_bf16_k(x.as_ptr(), out.as_mut_ptr(), x.len()) }
        }

        fn quant_f32(x: &[f32], out: &mut [u8]) {
            assert!(out.len() == x.len() * 4, "quantize F32: lengths");
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }

        // ------------------------------------------------------------ lookup

        fn row_dot_legacy(ty: GgmlType) -> Option<RowDotFn> {
            Some(match ty {
                GgmlType::Q4_0 => q4_0_dot,
                GgmlType::Q5_0 => q5_0_dot,
                GgmlType::Q8_0 => q8_0_dot,
                GgmlType::Q4_1 => q4_1_dot,
                GgmlType::Q5_1 => q5_1_dot,
                GgmlType::F32 => f32_dot,
                GgmlType::F16 => f16_dot,
                GgmlType::BF16 => bf16_dot,
                _ => return None,
            })
        }

        fn row_dot4_legacy(ty: GgmlType) -> Option<RowDot4Fn> {
            Some(match ty {
                GgmlType::Q4_0 => q4_0_dot4,
                GgmlType::Q5_0 => q5_0_dot4,
                GgmlType::Q8_0 => q8_0_dot4,
                GgmlType::Q4_1 => q4_1_dot4,
                GgmlType::Q5_1 => q5_1_dot4,
                GgmlType::F32 => f32_dot4,
                GgmlType::F16 => f16_dot4,
                GgmlType::BF16 => bf16_dot4,
                _ => return None,
            })
        }

        fn quantize_legacy(ty: GgmlType) -> Option<QuantizeRowFn> {
            Some(match ty {
                GgmlType::Q8_0 => quant_q8_0,
                GgmlType::Q8_1 => quant_q8_1,
                GgmlType::F16 => quant_f16,
                GgmlType::BF16 => quant_bf16,
                GgmlType::F32 => quant_f32,
                _ => return None,
            })
        }
    };
}
pub(crate) use legacy_kernels;

/// Weight types whose activation is Q8_0 (34-byte blocks: d@0, qs@2) and whose unpacker yields
/// signed i8 element values: Σ d_w·d_a·Σ q_w·q_a.
macro_rules! signed_dot {
    ($feat:tt, $dot:ident, $dot4:ident, $k:ident, $k4:ident, $wb:expr, $unpack:ident) => {
        #[target_feature(enable = $feat)]
        unsafe fn $k(w: *const u8, a: *const u8, nb: usize) -> f32 {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 2 <= nb {
                let (w0, a0) = (w.add(i * $wb), a.add(i * 34));
                let (w1, a1) = (w0.add($wb), a0.add(34));
                // The four f16 scales of the two block pairs in one conversion.
                let h16 = |p: *const u8| (p as *const u16).read_unaligned() as u64;
                let h = h16(w0) | h16(a0) << 16 | h16(w1) << 32 | h16(a1) << 48;
                let v = _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64)); // [dw0, da0, dw1, da1]
                let prod = _mm_mul_ps(v, _mm_movehdup_ps(v)); // [d0, _, d1, _]
                let p = mul_sum_i8($unpack(w0), ld32(a0.add(2)));
                let d = _mm256_broadcastss_ps(prod);
                acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc0);
                let p = mul_sum_i8($unpack(w1), ld32(a1.add(2)));
                let d = _mm256_broadcastss_ps(_mm_movehl_ps(prod, prod));
                acc1 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc1);
                i += 2;
            }
            if i < nb {
                let (wb, ab) = (w.add(i * $wb), a.add(i * 34));
                let p = mul_sum_i8($unpack(wb), ld32(ab.add(2)));
                let d = d_prod(wb, ab);
                acc0 = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc0);
            }
            hsum8(_mm256_add_ps(acc0, acc1))
        }

        /// One weight block unpacked once (and its sign taken once), applied to four rows.
        #[target_feature(enable = $feat)]
        unsafe fn $k4(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut ds = [0.0f32; 4];
            for i in 0..nb {
                let wb = w.add(i * $wb);
                let qx = $unpack(wb);
                let ax = _mm256_sign_epi8(qx, qx);
                // The four activation scales in one conversion, times d_w.
                let mut h = 0u64;
                for r in 0..4 {
                    h |= ((a[r].add(i * 34) as *const u16).read_unaligned() as u64) << (16 * r);
                }
                let da = _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64));
                _mm_storeu_ps(ds.as_mut_ptr(), _mm_mul_ps(_mm_set1_ps(f16_at(wb)), da));
                for r in 0..4 {
                    let ab = a[r].add(i * 34);
                    let p = mul_sum_us8(ax, _mm256_sign_epi8(ld32(ab.add(2)), qx));
                    let d = _mm256_broadcast_ss(&ds[r]);
                    acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
                }
            }
            [hsum8(acc[0]), hsum8(acc[1]), hsum8(acc[2]), hsum8(acc[3])]
        }

        fn $dot(w: &[u8], a: &[u8]) -> f32 {
            let nb = w.len() / $wb;
            assert!(
                w.len() % $wb == 0 && a.len() == nb * 34,
                "row dot: block counts differ"
            );
            // SAFETY: both rows hold `nb` whole blocks; the CPU runs `$feat` (simd/mod.rs).
            unsafe { $k(w.as_ptr(), a.as_ptr(), nb) }
        }

        fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            let nb = w.len() / $wb;
            assert!(
                w.len() % $wb == 0 && a.iter().all(|r| r.len() == nb * 34),
                "row dot4: block counts differ"
            );
            // SAFETY: all rows hold `nb` whole blocks; the CPU runs `$feat` (simd/mod.rs).
            unsafe { $k4(w.as_ptr(), a.map(|r| r.as_ptr()), nb) }
        }
    };
}
pub(crate) use signed_dot;

/// Weight types with d@0, m@2 and unsigned element values, activation Q8_1 (36-byte blocks:
/// d@0, s@2, qs@4): Σ (d_w·d_a)·Σ q_w·q_a + m_w·s_a.
macro_rules! unsigned_dot {
    ($feat:tt, $dot:ident, $dot4:ident, $k:ident, $k4:ident, $wb:expr, $unpack:ident) => {
        #[target_feature(enable = $feat)]
        unsafe fn $k(w: *const u8, a: *const u8, nb: usize) -> f32 {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            // Lane 1 accumulates m_w·s_a (lane 0 the unused d_w·d_a products).
            let mut accm = _mm_setzero_ps();
            let mut i = 0;
            while i + 2 <= nb {
                let (wb, ab) = (w.add(i * $wb), a.add(i * 36));
                let p = mul_sum_us8($unpack(wb), ld32(ab.add(4)));
                let dm = _mm_mul_ps(f16x2_at(wb), f16x2_at(ab));
                accm = _mm_add_ps(accm, dm);
                acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(p), acc0);
                let (wb, ab) = (wb.add($wb), ab.add(36));
                let p = mul_sum_us8($unpack(wb), ld32(ab.add(4)));
                let dm = _mm_mul_ps(f16x2_at(wb), f16x2_at(ab));
                accm = _mm_add_ps(accm, dm);
                acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(p), acc1);
                i += 2;
            }
            if i < nb {
                let (wb, ab) = (w.add(i * $wb), a.add(i * 36));
                let p = mul_sum_us8($unpack(wb), ld32(ab.add(4)));
                let dm = _mm_mul_ps(f16x2_at(wb), f16x2_at(ab));
                accm = _mm_add_ps(accm, dm);
                acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(dm), _mm256_cvtepi32_ps(p), acc0);
            }
            let ms = _mm_cvtss_f32(_mm_movehdup_ps(accm));
            hsum8(_mm256_add_ps(acc0, acc1)) + ms
        }

        #[target_feature(enable = $feat)]
        unsafe fn $k4(w: *const u8, a: [*const u8; 4], nb: usize) -> [f32; 4] {
            let mut acc = [_mm256_setzero_ps(); 4];
            // Lanes 2r + 1 accumulate row r's m_w·s_a.
            let mut accm = _mm256_setzero_ps();
            let mut dm = [0.0f32; 8];
            for i in 0..nb {
                let wb = w.add(i * $wb);
                let qx = $unpack(wb);
                // [d_w, m_w] × the four rows' [d_a, s_a]: one conversion, one multiply.
                let wdm = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(f16x2_at(wb))));
                let mut h = [0u64; 4];
                for r in 0..4 {
                    h[r] = (a[r].add(i * 36) as *const u32).read_unaligned() as u64;
                }
                let hs = _mm_set_epi64x((h[2] | h[3] << 32) as i64, (h[0] | h[1] << 32) as i64);
                let prod = _mm256_mul_ps(wdm, _mm256_cvtph_ps(hs));
                accm = _mm256_add_ps(accm, prod);
                _mm256_storeu_ps(dm.as_mut_ptr(), prod);
                for r in 0..4 {
                    let ab = a[r].add(i * 36);
                    let p = mul_sum_us8(qx, ld32(ab.add(4)));
                    let d = _mm256_broadcast_ss(&dm[2 * r]);
                    acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
                }
            }
            let mut ms = [0.0f32; 8];
            _mm256_storeu_ps(ms.as_mut_ptr(), accm);
            let mut out = [0.0f32; 4];
            for r in 0..4 {
                out[r] = hsum8(acc[r]) + ms[2 * r + 1];
            }
            out
        }

        fn $dot(w: &[u8], a: &[u8]) -> f32 {
            let nb = w.len() / $wb;
            assert!(
                w.len() % $wb == 0 && a.len() == nb * 36,
                "row dot: block counts differ"
            );
            // SAFETY: both rows hold `nb` whole blocks; the CPU runs `$feat` (simd/mod.rs).
            unsafe { $k(w.as_ptr(), a.as_ptr(), nb) }
        }

        fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            let nb = w.len() / $wb;
            assert!(
                w.len() % $wb == 0 && a.iter().all(|r| r.len() == nb * 36),
                "row dot4: block counts differ"
            );
            // SAFETY: all rows hold `nb` whole blocks; the CPU runs `$feat` (simd/mod.rs).
            unsafe { $k4(w.as_ptr(), a.map(|r| r.as_ptr()), nb) }
        }
    };
}
pub(crate) use unsigned_dot;

/// Float rows of `$es`-byte elements: f32 FMA into 4 (1×4: 2 per row) 8-lane accumulators
/// (products are exact inside the FMA), scalar tail. `$load16` loads 16 elements as two f32
/// vectors in some fixed lane order (the same for both operands, so products pair up); `$load1`
/// loads one element.
macro_rules! float_dot {
    ($feat:tt, $dot:ident, $dot4:ident, $k:ident, $k4:ident, $es:expr, $load16:ident, $load1:ident) => {
        #[target_feature(enable = $feat)]
        unsafe fn $k(w: *const u8, a: *const u8, n: usize) -> f32 {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for j in 0..2 {
                    let o = (i + 16 * j) * $es;
                    let (x0, x1) = $load16(w.add(o));
                    let (y0, y1) = $load16(a.add(o));
                    acc[2 * j] = _mm256_fmadd_ps(x0, y0, acc[2 * j]);
                    acc[2 * j + 1] = _mm256_fmadd_ps(x1, y1, acc[2 * j + 1]);
                }
                i += 32;
            }
            if i + 16 <= n {
                let o = i * $es;
                let (x0, x1) = $load16(w.add(o));
                let (y0, y1) = $load16(a.add(o));
                acc[0] = _mm256_fmadd_ps(x0, y0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x1, y1, acc[1]);
                i += 16;
            }
            let mut s = hsum8(_mm256_add_ps(
                _mm256_add_ps(acc[0], acc[1]),
                _mm256_add_ps(acc[2], acc[3]),
            ));
            while i < n {
                s += $load1(w.add(i * $es)) * $load1(a.add(i * $es));
                i += 1;
            }
            s
        }

        /// Each 16-element weight chunk is loaded (converted) once for the four rows.
        #[target_feature(enable = $feat)]
        unsafe fn $k4(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            let mut i = 0;
            while i + 16 <= n {
                let o = i * $es;
                let (x0, x1) = $load16(w.add(o));
                for r in 0..4 {
                    let (y0, y1) = $load16(a[r].add(o));
                    acc[r][0] = _mm256_fmadd_ps(x0, y0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(x1, y1, acc[r][1]);
                }
                i += 16;
            }
            let mut out = [0.0f32; 4];
            for r in 0..4 {
                let mut s = hsum8(_mm256_add_ps(acc[r][0], acc[r][1]));
                let mut t = i;
                while t < n {
                    s += $load1(w.add(t * $es)) * $load1(a[r].add(t * $es));
                    t += 1;
                }
                out[r] = s;
            }
            out
        }

        fn $dot(w: &[u8], a: &[u8]) -> f32 {
            assert!(
                w.len() % $es == 0 && a.len() == w.len(),
                "row dot: lengths differ"
            );
            // SAFETY: both rows hold `n` whole elements; the CPU runs `$feat` (simd/mod.rs).
            unsafe { $k(w.as_ptr(), a.as_ptr(), w.len() / $es) }
        }

        fn $dot4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
            assert!(
                w.len() % $es == 0 && a.iter().all(|r| r.len() == w.len()),
                "row dot4: lengths differ"
            );
            // SAFETY: all rows hold `n` whole elements; the CPU runs `$feat` (simd/mod.rs).
            unsafe { $k4(w.as_ptr(), a.map(|r| r.as_ptr()), w.len() / $es) }
        }
    };
}
pub(crate) use float_dot;
