//! Prompt prefill in one batch, then token-by-token decoding with streaming text.

use std::time::{Duration, Instant};

use crate::model::{Cache, Logits, Model, ModelError};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Tokens to generate; `None` = until an end-of-generation token or the context is full.
    pub n_predict: Option<usize>,
    pub sampling: SamplingParams,
}

#[derive(Clone, Debug, Default)]
pub struct GenerateStats {
    pub n_prompt: usize,
    pub prompt_time: Duration,
    pub n_generated: usize,
    pub generation_time: Duration,
    pub stop: StopReason,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    #[default]
    EndOfGeneration,
    MaxTokens,
    ContextFull,
    Cancelled,
}

impl GenerateStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        per_second(self.n_prompt, self.prompt_time)
    }

    pub fn generation_tokens_per_second(&self) -> f64 {
        // The first generated token comes from the prefill's logits; decode steps are the rest.
        per_second(self.n_generated.saturating_sub(1), self.generation_time)
    }
}

fn per_second(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt has {n_prompt} tokens and {n_predict} more were asked for, but the context holds {n_ctx} (raise -c or lower -n)")]
    ContextTooSmall {
        n_prompt: usize,
        n_predict: usize,
        n_ctx: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Whether the caller wants more text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Generates after `prompt` (token ids, BOS included if wanted) into an empty or continuing
/// `cache`, calling `on_text` with each complete piece of UTF-8 text as it is produced. A vision
/// model's images must be attached to the cache before the prompt that refers to them.
pub fn generate(
    model: &dyn Model,
    tokenizer: &Tokenizer,
    cache: &mut Cache,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> Flow,
) -> Result<GenerateStats, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let (filled, n_ctx) = (cache.len(), cache.capacity());
    let room = n_ctx.saturating_sub(filled);
    if let Some(n_predict) = params.n_predict {
        if prompt.len() + n_predict > room {
            return Err(GenerateError::ContextTooSmall {
                n_prompt: prompt.len(),
                n_predict,
                n_ctx,
            });
        }
    } else if prompt.len() >= room {
        return Err(GenerateError::ContextTooSmall {
            n_prompt: prompt.len(),
            n_predict: 1,
            n_ctx,
        });
    }

    let mut stats = GenerateStats {
        n_prompt: prompt.len(),
        ..Default::default()
    };
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut history: Vec<u32> = prompt.to_vec();
    let mut decoder = StreamDecoder::new();

    let start = Instant::now();
    let mut logits = model.forward(prompt, cache, Logits::Last)?;
    stats.prompt_time = start.elapsed();

    let start = Instant::now();
    let limit = params.n_predict.unwrap_or(usize::MAX);
    stats.stop = loop {
        if stats.n_generated >= limit {
            break StopReason::MaxTokens;
        }
        let token = sampler.sample(&logits, &history);
        if tokenizer.is_end_of_generation(token) {
            break StopReason::EndOfGeneration;
        }
        stats.n_generated += 1;
        history.push(token);
        let text = decoder.push(tokenizer, token);
        if !text.is_empty() && on_text(&text) == Flow::Stop {
            break StopReason::Cancelled;
        }
        if stats.n_generated >= limit {
            break StopReason::MaxTokens;
        }
        if cache.len() >= n_ctx {
            break StopReason::ContextFull;
        }
        logits = model.forward(&[token], cache, Logits::Last)?;
    };
    let rest = decoder.flush();
    if !rest.is_empty() {
        on_text(&rest);
    }
    stats.generation_time = start.elapsed();
    Ok(stats)
}
