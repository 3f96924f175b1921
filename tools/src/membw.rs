//! Read bandwidth of main memory, the bound on decode speed: a memory-bound matvec cannot read
//! its weights faster than this. Each thread sums its share of a buffer far larger than the
//! last-level cache; the best of several passes is reported (as STREAM does).

use std::time::Instant;

use rayon::prelude::*;

/// Bytes per second read with `threads` threads over a `bytes`-sized buffer.
pub fn read_bandwidth(threads: usize, bytes: usize, passes: usize) -> anyhow::Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let words = bytes / 8;
    let buffer: Vec<u64> = pool.install(|| (0..words).into_par_iter().map(|i| i as u64).collect());
    let chunk = words.div_ceil(threads);
    let mut best = 0.0f64;
    for _ in 0..passes {
        let start = Instant::now();
        let sum: u64 = pool.install(|| buffer.par_chunks(chunk).map(sum_words).sum());
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / secs);
    }
    Ok(best)
}

/// Eight independent lanes so the compiler vectorises and the loads stay in flight.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut blocks = words.chunks_exact(8);
    for block in &mut blocks {
        for (a, &w) in acc.iter_mut().zip(block) {
            *a = a.wrapping_add(w);
        }
    }
    let tail: u64 = blocks.remainder().iter().fold(0, |a, &w| a.wrapping_add(w));
    acc.iter().fold(tail, |a, &w| a.wrapping_add(w))
}
