//! Kernel throughput: matvec GB/s of weights at real model shapes (per format × kernel set ×
//! threads), and GEMM GOP/s for 1…512 activation rows.
//!
//! `cargo bench --bench kernels` runs a representative subset (with Q5_0 at the small models'
//! shapes); `LUMEN_BENCH_FULL=1` runs every shape and format. Filter with criterion's usual
//! argument, e.g. `-- matvec/Q4_0`.
//!
//! `packed_gemv/…` and `packed_tile/…` compare the GGUF row layout with the packed layout per
//! level, one thread (kernel throughput, not the machine's): gemv in GB/s of weights, the
//! prefill tile in GMAC/s (criterion's "elem/s" = multiply-accumulates).
//!
//! `dense_gemm/…` times the vision encoder's f32 and 14-bit integer products at the 11B
//! tower's shapes and token count, per level and thread count, in GMAC/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lumen::kernels::matmul::{matmul, QuantizedRows, WeightView};
use lumen::kernels::{kernels_for, quantize_row, GgmlType, Isa, KernelSet, PackedMatrix};

/// SmolLM2-135M and Llama-3.2-1B matrix shapes (rows = outputs, cols = inputs).
const SHAPES_FULL: &[(usize, usize)] = &[
    (576, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
    (2048, 2048),
    (8192, 2048),
    (2048, 8192),
    (128256, 2048),
];
const SHAPES_QUICK: &[(usize, usize)] = &[(576, 576), (2048, 2048), (8192, 2048)];
/// Qwen2.5-0.5B and Gemma 3 270M ffn_gate/up: n_embd 896 and 640 are not multiples of 256, so
/// llama.cpp's Q4_K_M stores these (like most of those models' matrices) as Q5_0.
const SHAPES_SMALL_MODELS: &[(usize, usize)] = &[(4864, 896), (2048, 640)];
const TYPES_FULL: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F16,
];
const TYPES_QUICK: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
];

fn full() -> bool {
    std::env::var_os("LUMEN_BENCH_FULL").is_some()
}

/// Each of `types` at `shapes`, plus the small models' shapes for Q5_0 (for every type in the
/// full run).
fn cases(types: &[GgmlType], shapes: &[(usize, usize)]) -> Vec<(GgmlType, Vec<(usize, usize)>)> {
    let mut cases: Vec<_> = types.iter().map(|&ty| (ty, shapes.to_vec())).collect();
    let small_types = if full() {
        TYPES_FULL
    } else {
        &[GgmlType::Q5_0]
    };
    for &ty in small_types {
        match cases.iter_mut().find(|(t, _)| *t == ty) {
            Some((_, s)) => s.extend_from_slice(SHAPES_SMALL_MODELS),
            None => cases.push((ty, SHAPES_SMALL_MODELS.to_vec())),
        }
    }
    cases
}

/// Deterministic weight bytes with finite scales: every 2-byte field of a block set to a
/// small f16 (quants stay pseudo-random), which is a valid block for every format.
fn weight_bytes(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = ty.row_bytes(cols).expect("shape fits the block size") * rows;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut out: Vec<u8> = (0..n)
        .map(|_| {
            state ^= state << 7;
            state ^= state >> 9;
            state as u8
        })
        .collect();
    let small = half::f16::from_f32(0.002).to_le_bytes();
    if ty.block_elems() == 1 {
        for v in out.chunks_exact_mut(2) {
            v.copy_from_slice(&small);
        }
    } else {
        for block in out.chunks_exact_mut(ty.block_bytes()) {
            let len = block.len();
            for at in [0, 2, len - 4, len - 2] {
                block[at..at + 2].copy_from_slice(&small);
            }
        }
    }
    out
}

fn activations(ks: &KernelSet, ty: GgmlType, n_rows: usize, cols: usize) -> QuantizedRows {
    let x: Vec<f32> = (0..n_rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    QuantizedRows::quantize(ks, ty, &x, cols).expect("activation quantization")
}

/// Times `iters` calls of `f` from inside the pool, as the runtime calls kernels (a whole
/// generation runs inside one `install`); timing `install` per call would add a cross-thread
/// hand-off (~10 µs) to every iteration.
fn in_pool(
    pool: &rayon::ThreadPool,
    iters: u64,
    mut f: impl FnMut() + Send,
) -> std::time::Duration {
    pool.install(|| {
        let start = std::time::Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed()
    })
}

fn kernel_sets() -> Vec<&'static KernelSet> {
    Isa::ALL.into_iter().filter_map(kernels_for).collect()
}

/// Every kernel set with the GGUF row layout, plus (where the set has packed kernels for `ty`
/// and the matrix packs) with the packed layout.
fn layouts(
    packed: Option<&PackedMatrix>,
    ty: GgmlType,
) -> Vec<(&'static KernelSet, Option<&PackedMatrix>)> {
    let mut v = Vec::new();
    for ks in kernel_sets() {
        v.push((ks, None));
        if ks.packed_gemv(ty).is_some() && packed.is_some() {
            v.push((ks, packed));
        }
    }
    v
}

fn pools() -> Vec<rayon::ThreadPool> {
    [1, 2]
        .into_iter()
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect()
}

fn matvec(c: &mut Criterion) {
    let (shapes, types) = if full() {
        (SHAPES_FULL, TYPES_FULL)
    } else {
        (SHAPES_QUICK, TYPES_QUICK)
    };
    for (ty, shapes) in cases(types, shapes) {
        let mut group = c.benchmark_group(format!("matvec/{}", ty.name()));
        for (rows, cols) in shapes {
            if ty.row_bytes(cols).is_none() {
                continue; // e.g. K-quants need rows of 256·k elements; 576 is not
            }
            let bytes = weight_bytes(ty, rows, cols);
            let packed = PackedMatrix::pack(ty, rows, cols, &bytes).ok();
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            for (ks, layout) in layouts(packed.as_ref(), ty) {
                if ks.isa == Isa::Scalar && rows * cols > 4 << 20 {
                    continue; // the scalar reference is for correctness, not worth minutes here
                }
                let w = WeightView {
                    packed: layout,
                    ty,
                    rows,
                    cols,
                    bytes: &bytes,
                };
                let x = activations(ks, ty.vec_dot_type(), 1, cols);
                let mut out = vec![0.0f32; rows];
                for pool in pools() {
                    let id = BenchmarkId::new(
                        format!(
                            "{}{}/t{}",
                            ks.isa.name(),
                            if layout.is_some() { "-packed" } else { "" },
                            pool.current_num_threads()
                        ),
                        format!("{rows}x{cols}"),
                    );
                    group.bench_function(id, |b| {
                        b.iter(|| pool.install(|| matmul(ks, &w, &x, &mut out).unwrap()))
                    });
                }
            }
        }
        group.finish();
    }
}

fn gemm(c: &mut Criterion) {
    let types: &[GgmlType] = if full() {
        TYPES_FULL
    } else {
        &[GgmlType::Q4_0, GgmlType::Q8_0]
    };
    let token_counts: &[usize] = if full() {
        &[1, 2, 4, 8, 16, 64, 128, 512]
    } else {
        &[1, 4, 16, 128]
    };
    for (ty, shapes) in cases(types, &[(2048, 2048)]) {
        for (rows, cols) in shapes {
            if ty.row_bytes(cols).is_none() {
                continue;
            }
            let mut group = c.benchmark_group(format!("gemm/{}/{rows}x{cols}", ty.name()));
            group.sample_size(10);
            let bytes = weight_bytes(ty, rows, cols);
            let packed = PackedMatrix::pack(ty, rows, cols, &bytes).ok();
            for (ks, layout) in layouts(packed.as_ref(), ty) {
                if ks.isa == Isa::Scalar {
                    continue;
                }
                let w = WeightView {
                    packed: layout,
                    ty,
                    rows,
                    cols,
                    bytes: &bytes,
                };
                let name = format!(
                    "{}{}/t2",
                    ks.isa.name(),
                    if layout.is_some() { "-packed" } else { "" }
                );
                for &n in token_counts {
                    let x = activations(ks, ty.vec_dot_type(), n, cols);
                    let mut out = vec![0.0f32; rows * n];
                    group.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(2)
                        .build()
                        .unwrap();
                    group.bench_function(BenchmarkId::new(&name, n), |b| {
                        b.iter_custom(|iters| {
                            in_pool(&pool, iters, || matmul(ks, &w, &x, &mut out).unwrap())
                        })
                    });
                }
            }
            group.finish();
        }
    }
}

fn quantize(c: &mut Criterion) {
    let mut group = c.benchmark_group("quantize_row");
    let x: Vec<f32> = (0..2048).map(|i| (i as f32).sin()).collect();
    group.throughput(Throughput::Elements(2048));
    for ty in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let mut out = vec![0u8; ty.row_bytes(2048).unwrap()];
        for ks in kernel_sets() {
            let q = ks.quantize(ty).unwrap();
            group.bench_function(BenchmarkId::new(ty.name(), ks.isa.name()), |b| {
                b.iter(|| q(&x, &mut out))
            });
        }
        // The checked, type-dispatched entry point, for comparison.
        group.bench_function(BenchmarkId::new(ty.name(), "dispatch"), |b| {
            b.iter(|| quantize_row(ty, &x, &mut out).unwrap())
        });
    }
    group.finish();
}

/// Packed vs row layout per level, one thread: gemv (one token, GB/s of weights) and the
/// prefill tile ([`PACKED_TOKENS`] tokens, GMAC/s), at a Llama-3.2-1B down projection and a
/// SmolLM2-135M one.
fn packed_layouts(c: &mut Criterion) {
    const SHAPES: &[(usize, usize)] = &[(2048, 8192), (576, 1536)];
    const TYPES: &[GgmlType] = &[
        GgmlType::Q4_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for &ty in TYPES {
        for &(rows, cols) in SHAPES {
            let bytes = weight_bytes(ty, rows, cols);
            let packed = PackedMatrix::pack(ty, rows, cols, &bytes).ok();
            for (what, n) in [("gemv", 1), ("tile", PACKED_TOKENS)] {
                let mut group =
                    c.benchmark_group(format!("packed_{what}/{}/{rows}x{cols}", ty.name()));
                group.sample_size(10);
                group.warm_up_time(std::time::Duration::from_millis(500));
                group.measurement_time(std::time::Duration::from_secs(2));
                group.throughput(if n == 1 {
                    Throughput::Bytes(bytes.len() as u64)
                } else {
                    Throughput::Elements((rows * cols * n) as u64)
                });
                for (ks, layout) in layouts(packed.as_ref(), ty) {
                    if ks.isa == Isa::Scalar {
                        continue;
                    }
                    let w = WeightView {
                        packed: layout,
                        ty,
                        rows,
                        cols,
                        bytes: &bytes,
                    };
                    let x = activations(ks, ty.vec_dot_type(), n, cols);
                    let mut out = vec![0.0f32; rows * n];
                    let name = format!(
                        "{}{}",
                        ks.isa.name(),
                        if layout.is_some() { "-packed" } else { "" }
                    );
                    group.bench_function(name, |b| {
                        b.iter_custom(|iters| {
                            in_pool(&pool, iters, || matmul(ks, &w, &x, &mut out).unwrap())
                        })
                    });
                }
                group.finish();
            }
        }
    }
}

/// Tokens per prefill in the `packed_tile` benches (one full packed prefill pass).
const PACKED_TOKENS: usize = 64;

/// What one parallel region costs with nothing to do: a decode step of SmolLM2 runs ~6 regions
/// per layer (Q/K/V, attention, output, gate/up, down, ...), ~180 per token.
fn parallel_region(c: &mut Criterion) {
    use rayon::prelude::*;
    let mut group = c.benchmark_group("parallel_region");
    let mut out = vec![0.0f32; 1024];
    for pool in pools() {
        let threads = pool.current_num_threads();
        group.bench_function(format!("t{threads}"), |b| {
            b.iter_custom(|iters| {
                in_pool(&pool, iters, || {
                    out.par_chunks_mut(128)
                        .enumerate()
                        .for_each(|(i, c)| c[0] = i as f32)
                })
            })
        });
    }
    group.finish();
}

/// The vision encoder's dense products (`dense_gemm`): f32 panels and 14-bit integers at the
/// 11B tower's attention (1280×1280) and MLP (5120×1280, 1280×5120) shapes with its 6,432
/// tokens (four tiles), on 1 and 2 threads; GMAC/s (criterion's "elem/s").
fn dense_gemm(c: &mut Criterion) {
    use lumen::kernels::dense_gemm::{self, int16, PanelMatrix};
    let n = 6432;
    for (rows, cols) in [(1280, 1280), (5120, 1280), (1280, 5120)] {
        let fill = |r: usize, buf: &mut [f32]| {
            for (c, v) in buf.iter_mut().enumerate() {
                *v = ((r * 31 + c * 17) % 97) as f32 / 97.0 - 0.5;
            }
            Ok::<(), ()>(())
        };
        let f32_w = PanelMatrix::pack(rows, cols, fill).unwrap();
        let i16_w = int16::I16Matrix::pack(rows, cols, fill).unwrap();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| (i % 89) as f32 / 89.0 - 0.5)
            .collect();
        let mut out = vec![0.0f32; n * rows];
        let mut group = c.benchmark_group(format!("dense_gemm/{rows}x{cols}"));
        group.sample_size(10);
        group.warm_up_time(std::time::Duration::from_millis(500));
        group.measurement_time(std::time::Duration::from_secs(3));
        group.throughput(Throughput::Elements((rows * cols * n) as u64));
        for pool in pools() {
            let t = pool.current_num_threads();
            for isa in Isa::ALL
                .into_iter()
                .filter(|i| i.is_available() && *i != Isa::Scalar)
            {
                group.bench_function(format!("f32/{}/t{t}", isa.name()), |b| {
                    b.iter_custom(|iters| {
                        in_pool(&pool, iters, || dense_gemm::gemm(isa, &x, &f32_w, &mut out))
                    })
                });
                group.bench_function(format!("int16/{}/t{t}", isa.name()), |b| {
                    b.iter_custom(|iters| {
                        in_pool(&pool, iters, || {
                            let xq = int16::I16Tokens::quantize(&x, cols);
                            int16::gemm(isa, &xq, &i16_w, &mut out)
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(
    benches,
    dense_gemm,
    matvec,
    gemm,
    quantize,
    parallel_region,
    packed_layouts
);
criterion_main!(benches);
