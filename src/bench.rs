//! llama-bench's method: `pp` tests run one batch of N random tokens through an empty context,
//! `tg` tests generate N tokens one at a time from an empty context; each test runs once to
//! warm up, then `repetitions` times; speed is tokens / seconds per repetition, reported as
//! mean ± standard deviation.

use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::model::{Logits, Model, ModelError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKind {
    /// Prompt processing: one batch of `n` tokens.
    Prompt(usize),
    /// Token generation: `n` single-token steps.
    Generate(usize),
}

impl TestKind {
    /// llama-bench's label: `pp512`, `tg128`.
    pub fn label(self) -> String {
        match self {
            TestKind::Prompt(n) => format!("pp{n}"),
            TestKind::Generate(n) => format!("tg{n}"),
        }
    }

    pub fn n_tokens(self) -> usize {
        match self {
            TestKind::Prompt(n) | TestKind::Generate(n) => n,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchResult {
    pub test: TestKind,
    pub n_threads: usize,
    pub samples: Vec<Duration>,
}

impl BenchResult {
    pub fn samples_ts(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|d| self.test.n_tokens() as f64 / d.as_secs_f64())
            .collect()
    }

    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }

    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }

    pub fn avg_ns(&self) -> f64 {
        mean(
            &self
                .samples
                .iter()
                .map(|d| d.as_nanos() as f64)
                .collect::<Vec<_>>(),
        )
    }

    pub fn stddev_ns(&self) -> f64 {
        stddev(
            &self
                .samples
                .iter()
                .map(|d| d.as_nanos() as f64)
                .collect::<Vec<_>>(),
        )
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Sample standard deviation (n − 1), as llama-bench reports it.
fn stddev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Runs one test `repetitions` times (after one warm-up run) on the current rayon pool.
pub fn run_test(
    model: &dyn Model,
    test: TestKind,
    repetitions: usize,
    seed: u64,
) -> Result<Vec<Duration>, ModelError> {
    let n_vocab = model.info().n_vocab as u32;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tokens = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(0..n_vocab))
            .collect::<Vec<u32>>()
    };
    let once = |tokens: &[u32]| -> Result<Duration, ModelError> {
        let mut cache = model.new_cache(tokens.len().max(1));
        let start = Instant::now();
        match test {
            TestKind::Prompt(_) => {
                model.forward(tokens, &mut cache, Logits::Last)?;
            }
            TestKind::Generate(_) => {
                for &t in tokens {
                    model.forward(&[t], &mut cache, Logits::Last)?;
                }
            }
        }
        Ok(start.elapsed())
    };
    let warmup = tokens(test.n_tokens());
    once(&warmup)?;
    (0..repetitions)
        .map(|_| once(&tokens(test.n_tokens())))
        .collect()
}
