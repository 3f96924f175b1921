//! Gemma 2 (`gemma2`) and Gemma 3 text (`gemma3`): Llama's layer with NEOX RoPE, embeddings
//! scaled by √n_embd (in f32), GeGLU (tanh GELU on the gate), RMSNorm of the attention and FFN
//! outputs before each residual add, and interleaved sliding-window layers. llama.cpp's
//! converter stores every Gemma norm weight as `1 + w`, so the norms here are plain RMSNorm.
//!
//! - Gemma 2: layers 0, 2, 4, … slide (window 4096 unless the file says), attention scores and
//!   final logits are soft-capped (50 and 30 unless the file says).
//! - Gemma 3: with a window in the file, five layers slide then one is global (`il % 6 < 5`),
//!   at RoPE base `rope.freq_base_swa` (10000) without the global layers' scaling; per-head Q/K
//!   norms; no attention soft-cap, a final one only if the file sets it.
//!
//! The attention scale is 1/√query_pre_attn_scalar, which GGUF does not store: llama.cpp takes
//! `n_embd / n_head` for the 27B models and the head size otherwise, and so do we.

use std::sync::Arc;

use super::llama::{FfnKind, Flavor, LlamaConfig};
use super::{Llama, Model, ModelError};
use crate::gguf::{keys, GgufFile};

/// llama.cpp's defaults where a file lacks the keys (the Hugging Face configs' values).
const GEMMA2_WINDOW: usize = 4096;
const GEMMA2_ATTN_SOFTCAP: f32 = 50.0;
const GEMMA2_FINAL_SOFTCAP: f32 = 30.0;
const GEMMA3_ROPE_BASE_SWA: f32 = 10000.0;
/// Sliding-window patterns: the last layer of every `n` is global.
const GEMMA2_PATTERN: usize = 2;
const GEMMA3_PATTERN: usize = 6;
/// Layer counts of the 27B models, whose query_pre_attn_scalar is n_embd / n_head.
const GEMMA2_27B_LAYERS: usize = 46;
const GEMMA3_27B_LAYERS: usize = 62;

pub fn load_gemma2(file: Arc<GgufFile>) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Llama::load_flavored(file, gemma2_flavor)?))
}

pub fn load_gemma3(file: Arc<GgufFile>) -> Result<Box<dyn Model>, ModelError> {
    Ok(Box::new(Llama::load_flavored(file, gemma3_flavor)?))
}

pub fn gemma2_flavor(file: &GgufFile, cfg: &LlamaConfig) -> Result<Flavor, ModelError> {
    let soft = |suffix, default| -> Result<Option<f32>, ModelError> {
        let v = f32_key(file, "gemma2", suffix)?.unwrap_or(default);
        Ok((v > 0.0).then_some(v))
    };
    Ok(Flavor {
        attn_softcap: soft(keys::ATTN_LOGIT_SOFTCAPPING, GEMMA2_ATTN_SOFTCAP)?,
        final_softcap: soft(keys::FINAL_LOGIT_SOFTCAPPING, GEMMA2_FINAL_SOFTCAP)?,
        sliding_window: Some(cfg.flavor.sliding_window.unwrap_or(GEMMA2_WINDOW)),
        swa_layers: swa_pattern(file, "gemma2", cfg.n_layer, GEMMA2_PATTERN)?,
        ..common(cfg, GEMMA2_27B_LAYERS)
    })
}

pub fn gemma3_flavor(file: &GgufFile, cfg: &LlamaConfig) -> Result<Flavor, ModelError> {
    let windowed = cfg.flavor.sliding_window.is_some();
    let final_softcap = f32_key(file, "gemma3", keys::FINAL_LOGIT_SOFTCAPPING)?;
    Ok(Flavor {
        final_softcap: final_softcap.filter(|&c| c > 0.0),
        swa_layers: if windowed {
            swa_pattern(file, "gemma3", cfg.n_layer, GEMMA3_PATTERN)?
        } else {
            vec![false; cfg.n_layer]
        },
        rope_base_swa: windowed.then_some(
            f32_key(file, "gemma3", keys::ROPE_FREQ_BASE_SWA)?.unwrap_or(GEMMA3_ROPE_BASE_SWA),
        ),
        ..common(cfg, GEMMA3_27B_LAYERS)
    })
}

/// What Gemma 2 and 3 share.
fn common(cfg: &LlamaConfig, layers_27b: usize) -> Flavor {
    let query_pre_attn_scalar = if cfg.n_layer == layers_27b {
        (cfg.n_embd / cfg.n_head) as f32
    } else {
        cfg.head_dim as f32
    };
    Flavor {
        rope_halves: true,
        attn_scale: 1.0 / query_pre_attn_scalar.sqrt(),
        embd_scale: Some((cfg.n_embd as f32).sqrt()),
        ffn: FfnKind::GeGluTanh,
        ..cfg.flavor.clone()
    }
}

fn f32_key(file: &GgufFile, arch: &str, suffix: &str) -> Result<Option<f32>, ModelError> {
    let key = keys::arch_key(arch, suffix);
    Ok(file.metadata().opt(&key, |m, k| m.get_f32(k))?)
}

/// Which layers slide: the file's `sliding_window_pattern` n, else `default`; the last layer
/// of every n is global (`il % n < n - 1` slides; n = 0 makes every layer slide).
fn swa_pattern(
    file: &GgufFile,
    arch: &str,
    n_layer: usize,
    default: usize,
) -> Result<Vec<bool>, ModelError> {
    let key = keys::arch_key(arch, keys::SLIDING_WINDOW_PATTERN);
    let n = file
        .metadata()
        .opt(&key, |m, k| m.get_usize_capped(k, 1 << 16))?
        .unwrap_or(default);
    Ok((0..n_layer).map(|il| n == 0 || il % n < n - 1).collect())
}
