//! Decoder-only text models from GGUF: Llama (3.x, SmolLM2, TinyLlama, Mistral) and, through
//! a [`Flavor`], every family that runs the same layer skeleton (Qwen, Gemma, Phi-3; see their
//! files). The layer itself and the other shared pieces are in [`super::blocks`].
//!
//! Tensor names follow llama.cpp (`blk.N.attn_q.weight`…). Q/K rows in `llama` files are
//! permuted by the converters for ggml's adjacent-pair RoPE, so RoPE there rotates pairs
//! (2i, 2i+1); the other families keep Hugging Face's order and rotate halves.

use std::sync::Arc;

use super::blocks::{check_input, embed, output_head, Layer, Scratch};
use super::kv_cache::KvCache;
use super::weights::{matrix, repack_enabled, vector, Matrix, Weights};
use super::{Cache, Model, ModelError, ModelInfo};
use crate::gguf::{keys, names, GgufFile};
use crate::tensor::ops::{Rope, RopeAngles};
use lumen_kernels::attention::{self, AttentionShape};
use lumen_kernels::matmul::WeightView;
use lumen_kernels::{team, KernelSet};

/// Architectures this module runs (the `general.architecture` value).
pub const ARCHITECTURES: &[&str] = &["llama"];

/// Caps on hyper-parameters read from the file: far above any real Llama, low enough that a
/// hostile value cannot make us allocate absurd buffers before a shape check fails.
const MAX_DIM: usize = 1 << 17;
const MAX_LAYERS: usize = 1 << 10;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CONTEXT: usize = 1 << 24;
/// Forwards of at most this many tokens (decode, batched decode of the server's slots) run on a
/// hot team: their regions are microseconds long, so waking workers for each would cost a
/// fifth of the step (`team`); longer forwards keep plain rayon for their row-parallel ops.
const HOT_TEAM_TOKENS: usize = 8;

#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_linear_scale: f32,
    pub n_ctx_train: usize,
    /// How this architecture's layers depart from Llama's (set by its file under `model/`).
    pub flavor: Flavor,
}

/// What sets an architecture's decoder apart from Llama's: the one layer skeleton below runs
/// every family, and each architecture's file says which of these it uses.
#[derive(Clone, Debug)]
pub struct Flavor {
    /// RoPE on (i, i + n_rot/2) (ggml's NEOX mode: Qwen, Gemma, Phi-3) rather than adjacent
    /// pairs (`llama` files, whose Q/K rows the converter permuted).
    pub rope_halves: bool,
    /// Multiplies every q·k (1/√head_dim unless the architecture says otherwise).
    pub attn_scale: f32,
    /// Gemma 2: `cap · tanh(score / cap)` on attention scores, and on the final logits.
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Multiplies the token embeddings (Gemma: √n_embd).
    pub embd_scale: Option<f32>,
    pub ffn: FfnKind,
    /// Positions a sliding-window layer sees, and which layers slide (the rest see everything).
    pub sliding_window: Option<usize>,
    pub swa_layers: Vec<bool>,
    /// RoPE base of the sliding-window layers where it differs (Gemma 3's local layers; they
    /// also drop the linear RoPE scaling of the global ones).
    pub rope_base_swa: Option<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// `down(silu(gate(x)) · up(x))` (Llama, Qwen, Phi-3).
    SwiGlu,
    /// `down(gelu_tanh(gate(x)) · up(x))` (Gemma).
    GeGluTanh,
}

impl Flavor {
    /// Llama's layer with NEOX RoPE: every family but `llama` (whose Q/K rows the converter
    /// permutes) keeps Hugging Face's row order.
    pub fn neox(cfg: &LlamaConfig) -> Self {
        Self {
            rope_halves: true,
            ..cfg.flavor.clone()
        }
    }

    /// Llama's own layer: pairs RoPE, 1/√head_dim, SwiGLU, nothing else; a sliding window on
    /// every layer where the file has one (Mistral).
    pub fn llama(head_dim: usize, n_layer: usize, sliding_window: Option<usize>) -> Self {
        Self {
            rope_halves: false,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            embd_scale: None,
            ffn: FfnKind::SwiGlu,
            sliding_window,
            swa_layers: vec![sliding_window.is_some(); n_layer],
            rope_base_swa: None,
        }
    }
}

impl LlamaConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let md = file.metadata();
        let arch = file.architecture()?;
        let key = |suffix| keys::arch_key(arch, suffix);
        let n_embd = md.get_usize_capped(&key(keys::EMBEDDING_LENGTH), MAX_DIM)?;
        let n_layer = md.get_usize_capped(&key(keys::BLOCK_COUNT), MAX_LAYERS)?;
        let n_head = md.get_usize_capped(&key(keys::HEAD_COUNT), MAX_DIM)?;
        let n_head_kv = md
            .opt(&key(keys::HEAD_COUNT_KV), |m, k| {
                m.get_usize_capped(k, MAX_DIM)
            })?
            .unwrap_or(n_head);
        let head_dim = md
            .opt(&key(keys::KEY_LENGTH), |m, k| {
                m.get_usize_capped(k, MAX_DIM)
            })?
            .unwrap_or(n_embd / n_head);
        let n_rot = md
            .opt(&key(keys::ROPE_DIMENSION_COUNT), |m, k| {
                m.get_usize_capped(k, MAX_DIM)
            })?
            .unwrap_or(head_dim);
        let n_vocab = match md.opt(&key(keys::VOCAB_SIZE), |m, k| {
            m.get_usize_capped(k, MAX_VOCAB)
        })? {
            Some(v) => v,
            None => file
                .require(names::TOKEN_EMBD)?
                .shape
                .get(1)
                .copied()
                .unwrap_or(0),
        };
        let scaling = md.opt(&key(keys::ROPE_SCALING_TYPE), |m, k| {
            m.get_str(k).map(str::to_string)
        })?;
        let rope_linear_scale = match scaling.as_deref() {
            Some("linear") => md
                .opt(&key(keys::ROPE_SCALING_FACTOR), |m, k| m.get_f32(k))?
                .unwrap_or(1.0),
            _ => 1.0,
        };
        let window = md.opt(&key(keys::SLIDING_WINDOW), |m, k| {
            m.get_usize_capped(k, MAX_CONTEXT)
        })?;
        let cfg = Self {
            n_vocab,
            n_embd,
            n_layer,
            n_ff: md.get_usize_capped(&key(keys::FEED_FORWARD_LENGTH), MAX_DIM * 4)?,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rms_eps: md
                .opt(&key(keys::RMS_EPS), |m, k| m.get_f32(k))?
                .unwrap_or(1e-5),
            rope_base: md
                .opt(&key(keys::ROPE_FREQ_BASE), |m, k| m.get_f32(k))?
                .unwrap_or(10000.0),
            rope_linear_scale,
            n_ctx_train: md
                .opt(&key(keys::CONTEXT_LENGTH), |m, k| {
                    m.get_usize_capped(k, MAX_CONTEXT)
                })?
                .unwrap_or(4096),
            flavor: Flavor::llama(head_dim, n_layer, window.filter(|&w| w > 0)),
        };
        cfg.check(file)?;
        Ok(cfg)
    }

    /// How layer `il` forms its attention scores.
    pub(crate) fn score_options(&self, il: usize) -> attention::ScoreOptions {
        let f = &self.flavor;
        attention::ScoreOptions {
            scale: f.attn_scale,
            softcap: f.attn_softcap,
            window: f
                .sliding_window
                .filter(|_| f.swa_layers.get(il).copied().unwrap_or(false)),
        }
    }

    fn check(&self, file: &GgufFile) -> Result<(), ModelError> {
        let bad = |message: String| ModelError::BadConfig {
            path: file.path().to_path_buf(),
            message,
        };
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(bad(format!(
                "{} heads are not a multiple of {} KV heads",
                self.n_head, self.n_head_kv
            )));
        }
        if self.n_rot > self.head_dim || !self.n_rot.is_multiple_of(2) || self.n_rot > 512 {
            return Err(bad(format!(
                "rope dimension {} does not fit head size {}",
                self.n_rot, self.head_dim
            )));
        }
        if !(self.rms_eps.is_finite() && self.rope_base.is_finite() && self.rope_base > 0.0) {
            return Err(bad(
                "rms epsilon or rope base is not a finite positive number".into(),
            ));
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// Phi-3's LongRoPE: the RoPE of caches longer than the original training context (the
/// model's own `rope` then holds the short factors; llama.cpp picks once per context size).
struct LongRope {
    rope: Rope,
    n_ctx_orig: usize,
}

impl LongRope {
    /// The short-factor RoPE and the long one, where the file has both factor tensors (each
    /// divides the base frequencies; the attention factor multiplies cos and sin).
    fn from_file(f: &GgufFile, cfg: &LlamaConfig) -> Result<Option<(Rope, Self)>, ModelError> {
        if f.tensor_info(names::ROPE_FACTORS_SHORT).is_none()
            || f.tensor_info(names::ROPE_FACTORS_LONG).is_none()
        {
            return Ok(None);
        }
        let arch = f.architecture()?;
        let key = |suffix| keys::arch_key(arch, suffix);
        let md = f.metadata();
        let n_ctx_orig = md
            .opt(&key(keys::ROPE_SCALING_ORIG_CTX), |m, k| {
                m.get_usize_capped(k, MAX_CONTEXT)
            })?
            .unwrap_or(cfg.n_ctx_train);
        let attn_factor = md
            .opt(&key(keys::ROPE_SCALING_ATTN_FACTOR), |m, k| m.get_f32(k))?
            .unwrap_or(1.0);
        let rope = |name| -> Result<Rope, ModelError> {
            let factors = vector(f, name, cfg.n_rot / 2)?;
            Ok(Rope::new(cfg.n_rot, cfg.rope_base, Some(&factors), 1.0)
                .rotate_halves(cfg.flavor.rope_halves)
                .attn_factor(attn_factor))
        };
        let long = Self {
            rope: rope(names::ROPE_FACTORS_LONG)?,
            n_ctx_orig,
        };
        Ok(Some((rope(names::ROPE_FACTORS_SHORT)?, long)))
    }
}

/// One forward pass's RoPE angles: the global layers', and the sliding-window layers' where
/// their RoPE differs.
struct LayerAngles {
    global: RopeAngles,
    swa: Option<RopeAngles>,
}

impl LayerAngles {
    fn of_layer(&self, cfg: &LlamaConfig, il: usize) -> &RopeAngles {
        match &self.swa {
            Some(swa) if cfg.flavor.swa_layers[il] => swa,
            _ => &self.global,
        }
    }
}

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

pub struct Llama {
    file: Arc<GgufFile>,
    pub config: LlamaConfig,
    token_embd: Matrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// `output.weight`, or `token_embd.weight` when the embeddings are tied.
    output: Matrix,
    rope: Rope,
    /// The sliding-window layers' RoPE where it differs from the others' (Gemma 3).
    rope_swa: Option<Rope>,
    /// Phi-3 LongRoPE: `rope` holds the short factors; caches longer than the original
    /// training context use these long ones.
    long_rope: Option<LongRope>,
    /// Dequantized-f32 matmuls instead of Q8 activations (validation only).
    reference_matmul: bool,
    kernels: &'static KernelSet,
}

/// An architecture's departures from Llama, read from its file's metadata.
pub type FlavorOf = fn(&GgufFile, &LlamaConfig) -> Result<Flavor, ModelError>;

impl Llama {
    pub fn load(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let arch = file.architecture()?;
        if !ARCHITECTURES.contains(&arch) {
            return Err(super::unsupported(&file, arch));
        }
        Self::load_flavored(file, |_, cfg| Ok(cfg.flavor.clone()))
    }

    /// A model of any architecture that runs on the Llama layer skeleton, with `flavor_of`
    /// saying how its layers differ (the architecture's file under `model/`).
    pub fn load_flavored(file: Arc<GgufFile>, flavor_of: FlavorOf) -> Result<Self, ModelError> {
        let mut cfg = LlamaConfig::from_gguf(&file)?;
        cfg.flavor = flavor_of(&file, &cfg)?;
        if cfg.flavor.swa_layers.len() != cfg.n_layer {
            return Err(ModelError::BadConfig {
                path: file.path().to_path_buf(),
                message: format!(
                    "{} sliding-window flags for {} layers",
                    cfg.flavor.swa_layers.len(),
                    cfg.n_layer
                ),
            });
        }
        let f = &*file;
        let e = cfg.n_embd;
        let token_embd = matrix(f, names::TOKEN_EMBD, e, cfg.n_vocab)?;
        let layers = (0..cfg.n_layer)
            .map(|i| Layer::load(f, i, &cfg))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let output = match f.tensor_info(names::OUTPUT) {
            Some(_) => matrix(f, names::OUTPUT, e, cfg.n_vocab)?,
            None => token_embd.clone(),
        };
        let rope_freqs = match f.tensor_info(names::ROPE_FREQS) {
            Some(_) => Some(vector(f, names::ROPE_FREQS, cfg.n_rot / 2)?),
            None => None,
        };
        let rope = Rope::new(
            cfg.n_rot,
            cfg.rope_base,
            rope_freqs.as_deref(),
            cfg.rope_linear_scale,
        )
        .rotate_halves(cfg.flavor.rope_halves);
        let rope_swa = cfg.flavor.rope_base_swa.map(|base| {
            Rope::new(cfg.n_rot, base, None, 1.0).rotate_halves(cfg.flavor.rope_halves)
        });
        let (rope, long_rope) = match LongRope::from_file(f, &cfg)? {
            None => (rope, None),
            Some((short, long)) => (short, Some(long)),
        };
        let mut model = Self {
            output_norm: vector(f, names::OUTPUT_NORM, e)?,
            file: file.clone(),
            config: cfg,
            token_embd,
            layers,
            output,
            rope,
            rope_swa,
            long_rope,
            reference_matmul: false,
            kernels: lumen_kernels::kernels(),
        };
        if repack_enabled() {
            model.pack_weights()?;
        }
        Ok(model)
    }

    /// Copies every matmul weight that the kernel set has packed kernels for into the
    /// interleaved layout (`lumen_kernels::packed`): decode then reads one sequential stream
    /// per eight rows. Costs a second copy of those weights in memory (see
    /// [`Self::packed_bytes`]); the mapped originals stay for embedding lookups and fallbacks.
    fn pack_weights(&mut self) -> Result<(), ModelError> {
        let ks = self.kernels;
        // The scalar level's packed kernels are references for tests; on a scalar-only CPU
        // packing would only double the memory.
        if ks.isa == lumen_kernels::Isa::Scalar {
            return Ok(());
        }
        let file = self.file.clone();
        let pack = |m: &mut Matrix| m.pack(&file, ks);
        for l in &mut self.layers {
            for m in l.matrices_mut() {
                pack(m)?;
            }
        }
        pack(&mut self.output)
    }

    /// Heap bytes held by packed weight copies (0 when nothing was packed).
    pub fn packed_bytes(&self) -> usize {
        let per_layer = self.layers.iter().flat_map(|l| l.matrices());
        per_layer
            .chain([&self.output])
            .map(Matrix::packed_bytes)
            .sum()
    }

    /// Computes every matmul with dequantized f32 weights and unquantized activations, as a
    /// float framework would: for validating the forward pass against float references.
    pub fn set_reference_matmul(&mut self, on: bool) {
        self.reference_matmul = on;
    }

    /// Uses another kernel set (A/B tests, benchmarks); the default is `lumen_kernels::kernels()`.
    pub fn set_kernels(&mut self, kernels: &'static KernelSet) {
        self.kernels = kernels;
    }

    pub fn kernels(&self) -> &'static KernelSet {
        self.kernels
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        let shape = AttentionShape {
            n_head: self.config.n_head,
            n_head_kv: self.config.n_head_kv,
            head_dim: self.config.head_dim,
            n_ctx,
        };
        KvCache::new(self.config.n_layer, shape)
    }

    fn view<'a>(&'a self, m: &'a Matrix) -> WeightView<'a> {
        m.view(&self.file)
    }

    fn weights(&self) -> Weights<'_> {
        Weights {
            file: &self.file,
            kernels: self.kernels,
            reference_matmul: self.reference_matmul,
        }
    }

    /// The residual stream's first value: embedding rows, scaled where the architecture does.
    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut x = embed(&self.view(&self.token_embd), tokens, self.config.n_embd)?;
        if let Some(scale) = self.config.flavor.embd_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(x)
    }

    /// RoPE angles of the rows at `positions` of a cache holding `n_ctx`, for both kinds of
    /// layer.
    fn angles(&self, positions: &[usize], n_ctx: usize) -> LayerAngles {
        // llama.cpp picks Phi-3's long factors once per context, by its size.
        let global = match &self.long_rope {
            Some(long) if n_ctx > long.n_ctx_orig => &long.rope,
            _ => &self.rope,
        };
        LayerAngles {
            global: global.angles_at(positions),
            swa: self.rope_swa.as_ref().map(|r| r.angles_at(positions)),
        }
    }

    /// Runs `tokens` (appended after the cache's current length) through the model and returns
    /// logits for the last position or for all of them (`n_tokens × n_vocab`).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        self.forward_traced(tokens, cache, which, &mut |_, _| {})
    }

    /// [`Self::forward`], calling `trace(i, hidden)` with the residual stream entering layer `i`
    /// (`i = n_layer` after the final norm), as Hugging Face's `output_hidden_states` lists them.
    pub fn forward_traced(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        trace: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config;
        let n = tokens.len();
        let pos0 = cache.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        check_input(tokens, pos0 + n, cache.capacity(), cfg.n_vocab)?;

        // x: [n, n_embd] — the residual stream.
        let mut x = self.embed(tokens)?;
        let mut scratch = Scratch::new(cfg, n);
        let positions: Vec<usize> = (pos0..pos0 + n).collect();
        let angles = self.angles(&positions, cache.capacity());
        let w = self.weights();
        let run = move || {
            for (il, layer) in self.layers.iter().enumerate() {
                trace(il, &x);
                let a = angles.of_layer(cfg, il);
                layer.forward(&w, cfg, il, a, cache, pos0, &mut x, &mut scratch)?;
            }
            cache.advance(n);
            output_head(&w, cfg, &self.output_norm, &self.output, &x, which, trace)
        };
        hot_when_short(n, run)
    }

    /// Decodes one token for each of several sequences at once (`tokens[i]` appended to
    /// `caches[i]`): every weight matrix is read once for all of them, which is what makes N
    /// concurrent decodes cheaper than N single ones. Returns `[n][n_vocab]` logits.
    pub fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config;
        assert_eq!(tokens.len(), caches.len(), "one token per cache");
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        for (i, cache) in caches.iter().enumerate() {
            check_input(
                &tokens[i..=i],
                cache.len() + 1,
                cache.capacity(),
                cfg.n_vocab,
            )?;
        }
        let mut x = self.embed(tokens)?;
        let mut scratch = Scratch::new(cfg, n);
        let positions: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let angles = self.angles(&positions, caches[0].capacity());
        let w = self.weights();
        let run = move || {
            for (il, layer) in self.layers.iter().enumerate() {
                let a = angles.of_layer(cfg, il);
                layer.forward_rows(&w, cfg, il, a, caches, &mut x, &mut scratch)?;
            }
            for cache in caches.iter_mut() {
                cache.advance(1);
            }
            output_head(
                &w,
                cfg,
                &self.output_norm,
                &self.output,
                &x,
                Logits::All,
                &mut |_, _| {},
            )
        };
        hot_when_short(n, run)
    }
}

/// Runs a forward of `n` tokens on a hot team when it is short enough ([`HOT_TEAM_TOKENS`]).
fn hot_when_short<R>(n: usize, forward: impl FnOnce() -> R) -> R {
    if n <= HOT_TEAM_TOKENS {
        team::hot(forward)
    } else {
        forward()
    }
}

impl LlamaConfig {
    /// The start-up line's facts about a model of this shape.
    pub fn info(&self, arch: &str) -> ModelInfo {
        ModelInfo {
            arch: arch.to_string(),
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            n_vocab: self.n_vocab,
            n_ctx_train: self.n_ctx_train,
            // f32 keys and values for every layer (`KvCache::new`).
            kv_bytes_per_token: (2 * size_of::<f32>())
                .saturating_mul(self.n_layer)
                .saturating_mul(self.n_head_kv)
                .saturating_mul(self.head_dim),
            detail: None,
        }
    }
}

impl Model for Llama {
    fn info(&self) -> ModelInfo {
        self.config
            .info(self.file.architecture().unwrap_or("llama"))
    }
    fn kernels(&self) -> &'static KernelSet {
        self.kernels
    }
    fn packed_bytes(&self) -> usize {
        Llama::packed_bytes(self)
    }
    fn set_reference_matmul(&mut self, on: bool) {
        self.reference_matmul = on;
    }
    fn new_cache(&self, n_ctx: usize) -> Cache {
        Cache::Text(Llama::new_cache(self, n_ctx))
    }
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        let Cache::Text(kv) = cache else {
            return Err(ModelError::WrongCache("llama"));
        };
        Llama::forward(self, tokens, kv, which)
    }
    fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut Cache],
    ) -> Result<Vec<f32>, ModelError> {
        let mut kvs = caches
            .iter_mut()
            .map(|c| match &mut **c {
                Cache::Text(kv) => Ok(kv),
                Cache::Vision(_) => Err(ModelError::WrongCache("llama")),
            })
            .collect::<Result<Vec<&mut KvCache>, ModelError>>()?;
        Llama::forward_batch(self, tokens, &mut kvs)
    }
}
