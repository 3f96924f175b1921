//! Perplexity of a model on a text, computed the way llama.cpp's `llama-perplexity` does it, so
//! the two numbers can be compared directly:
//!
//! - the whole text is tokenized once, with BOS when the vocabulary adds one;
//! - the tokens are cut into chunks of `n_ctx` (`n_tokens / n_ctx` of them, the tail dropped),
//!   each evaluated from an empty KV cache, in batches of `n_batch`;
//! - the first token of every chunk is replaced by BOS (when the vocabulary adds one), so every
//!   chunk starts like a fresh prompt;
//! - only the second half of a chunk is scored: the logits at positions `n_ctx/2 ..= n_ctx-2`
//!   predict the tokens after them, so every scored token has at least `n_ctx/2` tokens of
//!   context;
//! - each token's negative log-likelihood is `max + ln Σ exp(logit − max) − logit[token]`;
//!   perplexity is `exp(mean nll)`, its uncertainty `ppl · sqrt((mean(nll²) − mean²)/(count−1))`.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::model::{Cache, Logits, Model, ModelError};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// llama-perplexity's default context.
pub const DEFAULT_N_CTX: usize = 512;

#[derive(Clone, Debug)]
pub struct PerplexityOptions {
    /// Tokens per chunk (llama.cpp's `-c`).
    pub n_ctx: usize,
    /// Tokens per forward pass inside a chunk (`-b`); larger than `n_ctx` means one pass.
    pub n_batch: usize,
    /// Stop after this many chunks (`--chunks`); `None` = every whole chunk in the text.
    pub max_chunks: Option<usize>,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        Self {
            n_ctx: DEFAULT_N_CTX,
            n_batch: DEFAULT_N_CTX,
            max_chunks: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error(
        "the text tokenizes to only {n_tokens} tokens; perplexity with a context of {n_ctx} \
         needs at least {needed} (2 × context)"
    )]
    TooShort {
        n_tokens: usize,
        n_ctx: usize,
        needed: usize,
    },
    /// Fewer than 4 tokens per chunk would score no token, or too few for an uncertainty.
    #[error("context size {0} is too small for perplexity (at least 4)")]
    ContextTooSmall(usize),
    #[error("batch size must be at least 1")]
    ZeroBatch,
    #[error("--chunks must be at least 1")]
    ZeroChunks,
    #[error("the vocabulary adds BOS but defines no BOS token")]
    MissingBos,
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Progress, reported through a callback (the library never prints).
#[derive(Clone, Debug)]
pub enum PerplexityEvent {
    /// Before the first chunk.
    Start {
        n_tokens: usize,
        n_chunks: usize,
        n_ctx: usize,
        n_batch: usize,
    },
    /// After chunk `index` (1-based): the perplexity over every token scored so far.
    Chunk {
        index: usize,
        n_chunks: usize,
        running_ppl: f64,
        elapsed: Duration,
    },
}

#[derive(Clone, Debug)]
pub struct PerplexityResult {
    /// `exp(mean nll)` over every scored token.
    pub ppl: f64,
    /// Its standard error; `None` when the nll variance is not positive (llama.cpp reports
    /// that case as an error line instead of a number).
    pub ppl_err: Option<f64>,
    pub n_tokens: usize,
    pub n_chunks: usize,
    /// Tokens scored: `n_chunks × (n_ctx − n_ctx/2 − 1)`.
    pub n_scored: usize,
    /// The running perplexity after each chunk, as llama-perplexity prints `[i]x,`.
    pub running_ppl: Vec<f64>,
}

/// The tokens llama-perplexity would evaluate for `text` and the BOS to put at the start of
/// each chunk (`None` when the vocabulary does not add BOS, e.g. SmolLM2's).
pub fn tokenize(
    tokenizer: &Tokenizer,
    text: &str,
) -> Result<(Vec<u32>, Option<u32>), PerplexityError> {
    let add_bos = tokenizer.add_bos_default();
    let tokens = tokenizer.encode(text, add_bos)?;
    let bos = if add_bos {
        Some(tokenizer.bos().ok_or(PerplexityError::MissingBos)?)
    } else {
        None
    };
    Ok((tokens, bos))
}

/// Sums of nll and nll² over the scored tokens, in f64 as llama.cpp keeps them.
#[derive(Default, Clone, Copy, Debug)]
struct NllStats {
    sum: f64,
    sum_sq: f64,
    count: usize,
}

impl NllStats {
    fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// Standard error of the mean nll, carried through `exp` (d exp(x) = exp(x) dx).
    fn ppl_err(&self) -> Option<f64> {
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        (var > 0.0 && self.count > 1).then(|| self.ppl() * (var / (n - 1.0)).sqrt())
    }
}

/// `−log softmax(logits)[token]` with llama.cpp's precision: exponentials in f32, their sum in
/// f64 (a 128k-entry sum of f32 would lose digits).
pub fn token_nll(logits: &[f32], token: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&x| (x - max).exp() as f64).sum();
    -((logits[token as usize] - max) as f64 - sum_exp.ln())
}

/// Runs llama-perplexity's method over `tokens` (from [`tokenize`]).
pub fn perplexity(
    model: &dyn Model,
    tokens: &[u32],
    bos: Option<u32>,
    opts: &PerplexityOptions,
    progress: &mut dyn FnMut(PerplexityEvent),
) -> Result<PerplexityResult, PerplexityError> {
    let n_ctx = opts.n_ctx;
    if n_ctx < 4 {
        return Err(PerplexityError::ContextTooSmall(n_ctx));
    }
    if opts.n_batch == 0 {
        return Err(PerplexityError::ZeroBatch);
    }
    if opts.max_chunks == Some(0) {
        return Err(PerplexityError::ZeroChunks);
    }
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooShort {
            n_tokens: tokens.len(),
            n_ctx,
            needed: 2 * n_ctx,
        });
    }
    let n_chunks = (tokens.len() / n_ctx).min(opts.max_chunks.unwrap_or(usize::MAX));
    let n_batch = opts.n_batch.min(n_ctx);
    progress(PerplexityEvent::Start {
        n_tokens: tokens.len(),
        n_chunks,
        n_ctx,
        n_batch,
    });

    let mut cache = model.new_cache(n_ctx);
    let mut stats = NllStats::default();
    let mut running_ppl = Vec::with_capacity(n_chunks);
    for (i, chunk) in tokens.chunks_exact(n_ctx).take(n_chunks).enumerate() {
        let start = Instant::now();
        cache.clear();
        score_chunk(model, &mut cache, chunk, bos, n_batch, &mut stats)?;
        running_ppl.push(stats.ppl());
        progress(PerplexityEvent::Chunk {
            index: i + 1,
            n_chunks,
            running_ppl: stats.ppl(),
            elapsed: start.elapsed(),
        });
    }
    Ok(PerplexityResult {
        ppl: stats.ppl(),
        ppl_err: stats.ppl_err(),
        n_tokens: tokens.len(),
        n_chunks,
        n_scored: stats.count,
        running_ppl,
    })
}

/// Evaluates one chunk from an empty cache and adds the nll of its second half to `stats`.
fn score_chunk(
    model: &dyn Model,
    cache: &mut Cache,
    chunk: &[u32],
    bos: Option<u32>,
    n_batch: usize,
    stats: &mut NllStats,
) -> Result<(), PerplexityError> {
    let n = chunk.len();
    let first = n / 2;
    let n_vocab = model.info().n_vocab;
    let mut fed = chunk.to_vec();
    if let Some(bos) = bos {
        fed[0] = bos;
    }
    for (b, batch) in fed.chunks(n_batch).enumerate() {
        let batch_start = b * n_batch;
        let batch_end = batch_start + batch.len();
        // Batches wholly before `first` are context only: skip the output head for them.
        if batch_end <= first {
            model.forward(batch, cache, Logits::Last)?;
            continue;
        }
        let logits = model.forward(batch, cache, Logits::All)?;
        // Position p's logits predict chunk[p + 1]; the last position has nothing to predict.
        let scored = batch_start.max(first)..batch_end.min(n - 1);
        let nlls: Vec<f64> = scored
            .into_par_iter()
            .map(|p| {
                let row = &logits[(p - batch_start) * n_vocab..][..n_vocab];
                token_nll(row, chunk[p + 1])
            })
            .collect();
        for nll in nlls {
            stats.add(nll);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_nll_is_minus_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..3 {
            let expected = -((logits[t] as f64).exp() / z).ln();
            assert!((token_nll(&logits, t as u32) - expected).abs() < 1e-6);
        }
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let mut stats = NllStats::default();
        for _ in 0..10 {
            stats.add(token_nll(&[0.5; 100], 7));
        }
        assert!((stats.ppl() - 100.0).abs() < 1e-3);
        // Every nll is equal: no spread, no uncertainty.
        assert!(stats.ppl_err().is_none_or(|e| e < 1e-6));
    }

    #[test]
    fn uncertainty_is_the_standard_error_through_exp() {
        let mut stats = NllStats::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            stats.add(v);
        }
        // mean 2.5, population variance 1.25, standard error sqrt(1.25 / 3).
        let expected = 2.5f64.exp() * (1.25f64 / 3.0).sqrt();
        assert!((stats.ppl_err().unwrap() - expected).abs() < 1e-9);
    }
}
