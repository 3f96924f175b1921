//! Llama-architecture text models (Llama 3.x, SmolLM2, TinyLlama…) from GGUF.
//!
//! Tensor names follow llama.cpp (`blk.N.attn_q.weight`…). Q/K rows in GGUF are permuted by the
//! converters for ggml's adjacent-pair RoPE, so RoPE here rotates pairs (2i, 2i+1).

use std::sync::Arc;

use super::kv_cache::KvCache;
use super::weights::{matrix, repack_enabled, vector, Matrix, Weights};
use super::{Cache, Model, ModelError, ModelInfo};
use crate::gguf::{keys, names, GgufFile};
use crate::tensor::ops::{self, Rope, RopeAngles};
use lumen_kernels::attention::{self, AttentionShape};
use lumen_kernels::matmul::WeightView;
use lumen_kernels::KernelSet;

/// Architectures this module runs (the `general.architecture` value).
pub const ARCHITECTURES: &[&str] = &["llama"];

/// Caps on hyper-parameters read from the file: far above any real Llama, low enough that a
/// hostile value cannot make us allocate absurd buffers before a shape check fails.
const MAX_DIM: usize = 1 << 17;
const MAX_LAYERS: usize = 1 << 10;
const MAX_VOCAB: usize = 1 << 22;
const MAX_CONTEXT: usize = 1 << 24;

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
}

impl LlamaConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let md = file.metadata();
        let arch = file.architecture()?;
        let key = |suffix| keys::arch_key(arch, suffix);
        let n_embd = md.get_usize_capped(&key(keys::EMBEDDING_LENGTH), MAX_DIM)?;
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
        let cfg = Self {
            n_vocab,
            n_embd,
            n_layer: md.get_usize_capped(&key(keys::BLOCK_COUNT), MAX_LAYERS)?,
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
        };
        cfg.check(file)?;
        Ok(cfg)
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

/// One self-attention decoder layer (Llama 3.x; also the self layers of mllama).
pub(crate) struct Layer {
    attn_norm: Vec<f32>,
    attn_q: Matrix,
    attn_k: Matrix,
    attn_v: Matrix,
    attn_output: Matrix,
    ffn_norm: Vec<f32>,
    ffn_gate: Matrix,
    ffn_up: Matrix,
    ffn_down: Matrix,
}

impl Layer {
    /// Layer `i`'s tensors (`blk.{i}.*`), shapes checked against `cfg`.
    pub(crate) fn load(f: &GgufFile, i: usize, cfg: &LlamaConfig) -> Result<Self, ModelError> {
        let (e, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let m = |suffix, cols, rows| matrix(f, &names::blk(i, suffix), cols, rows);
        Ok(Layer {
            attn_norm: vector(f, &names::blk(i, names::ATTN_NORM), e)?,
            attn_q: m(names::ATTN_Q, e, q)?,
            attn_k: m(names::ATTN_K, e, kv)?,
            attn_v: m(names::ATTN_V, e, kv)?,
            attn_output: m(names::ATTN_OUTPUT, q, e)?,
            ffn_norm: vector(f, &names::blk(i, names::FFN_NORM), e)?,
            ffn_gate: m(names::FFN_GATE, e, ff)?,
            ffn_up: m(names::FFN_UP, e, ff)?,
            ffn_down: m(names::FFN_DOWN, ff, e)?,
        })
    }

    pub(crate) fn matrices(&self) -> [&Matrix; 7] {
        [
            &self.attn_q,
            &self.attn_k,
            &self.attn_v,
            &self.attn_output,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
        ]
    }

    /// The layer's seven weight matrices.
    pub(crate) fn matrices_mut(&mut self) -> [&mut Matrix; 7] {
        [
            &mut self.attn_q,
            &mut self.attn_k,
            &mut self.attn_v,
            &mut self.attn_output,
            &mut self.ffn_gate,
            &mut self.ffn_up,
            &mut self.ffn_down,
        ]
    }

    /// Runs the layer on the residual stream `x` (`[n][n_embd]`, positions `pos0..`), storing
    /// its K/V in `cache` slot `il`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        w: &Weights,
        cfg: &LlamaConfig,
        il: usize,
        angles: &RopeAngles,
        cache: &mut KvCache,
        pos0: usize,
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        self.forward_with(w, cfg, x, s, &mut |s| {
            angles.apply_qk(&mut s.q, &mut s.k, cfg.head_dim);
            cache.store(il, pos0, &s.k, &s.v);
            attention::attend(
                w.kernels.isa,
                cache.shape(),
                &cache.layer(il),
                &s.q,
                pos0,
                &mut s.attn,
            );
        })
    }

    /// One token of each of several sequences (row i of `x` belongs to `caches[i]`, at its
    /// current length): the matmuls run once over all rows, attention per sequence.
    pub(crate) fn forward_rows(
        &self,
        w: &Weights,
        cfg: &LlamaConfig,
        il: usize,
        angles: &RopeAngles,
        caches: &mut [&mut KvCache],
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        self.forward_with(w, cfg, x, s, &mut |s| {
            angles.apply_qk(&mut s.q, &mut s.k, cfg.head_dim);
            for (i, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len();
                let (q, kv) = (i * q_dim..(i + 1) * q_dim, i * kv_dim..(i + 1) * kv_dim);
                cache.store(il, pos, &s.k[kv.clone()], &s.v[kv]);
                attention::attend(
                    w.kernels.isa,
                    cache.shape(),
                    &cache.layer(il),
                    &s.q[q.clone()],
                    pos,
                    &mut s.attn[q],
                );
            }
        })
    }

    /// The layer around its attention: `attend` turns `s.q`/`s.k`/`s.v` into `s.attn` (RoPE,
    /// cache store and attention, which depend on how rows map to sequences).
    fn forward_with(
        &self,
        w: &Weights,
        cfg: &LlamaConfig,
        x: &mut [f32],
        s: &mut Scratch,
        attend: &mut dyn FnMut(&mut Scratch),
    ) -> Result<(), ModelError> {
        // Attention block.
        ops::rms_norm_rows(x, &self.attn_norm, cfg.rms_eps, &mut s.xn);
        w.matmuls(
            &s.xn,
            &mut [
                (&self.attn_q, &mut s.q),
                (&self.attn_k, &mut s.k),
                (&self.attn_v, &mut s.v),
            ],
        )?;
        attend(s);
        w.matmuls(&s.attn, &mut [(&self.attn_output, &mut s.proj)])?;
        ops::add_in_place(x, &s.proj);

        // Feed-forward block (SwiGLU).
        ops::rms_norm_rows(x, &self.ffn_norm, cfg.rms_eps, &mut s.xn);
        w.matmuls(
            &s.xn,
            &mut [(&self.ffn_gate, &mut s.gate), (&self.ffn_up, &mut s.up)],
        )?;
        ops::swiglu_in_place(&mut s.gate, &s.up);
        w.matmuls(&s.gate, &mut [(&self.ffn_down, &mut s.proj)])?;
        ops::add_in_place(x, &s.proj);
        Ok(())
    }
}

/// Activation buffers of one forward pass over `n` tokens, reused by every layer.
pub(crate) struct Scratch {
    pub(crate) xn: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) attn: Vec<f32>,
    pub(crate) proj: Vec<f32>,
    pub(crate) gate: Vec<f32>,
    pub(crate) up: Vec<f32>,
}

impl Scratch {
    pub(crate) fn new(cfg: &LlamaConfig, n: usize) -> Self {
        Self {
            xn: vec![0.0; n * cfg.n_embd],
            q: vec![0.0; n * cfg.q_dim()],
            k: vec![0.0; n * cfg.kv_dim()],
            v: vec![0.0; n * cfg.kv_dim()],
            attn: vec![0.0; n * cfg.q_dim()],
            proj: vec![0.0; n * cfg.n_embd],
            gate: vec![0.0; n * cfg.n_ff],
            up: vec![0.0; n * cfg.n_ff],
        }
    }
}

/// Final norm and output head over the rows `which` asks for of the residual stream `x`;
/// `trace(n_layer, normed)` when all rows are asked for (Hugging Face's last hidden state).
pub(crate) fn output_head(
    w: &Weights,
    cfg: &LlamaConfig,
    output_norm: &[f32],
    output: &Matrix,
    x: &[f32],
    which: Logits,
    trace: &mut dyn FnMut(usize, &[f32]),
) -> Result<Vec<f32>, ModelError> {
    let e = cfg.n_embd;
    let rows = match which {
        Logits::Last => &x[x.len() - e..],
        Logits::All => x,
    };
    let mut normed = vec![0.0f32; rows.len()];
    ops::rms_norm_rows(rows, output_norm, cfg.rms_eps, &mut normed);
    if which == Logits::All {
        trace(cfg.n_layer, &normed);
    }
    let mut logits = vec![0.0f32; rows.len() / e * cfg.n_vocab];
    w.matmuls(&normed, &mut [(output, &mut logits)])?;
    Ok(logits)
}

/// The embedding rows of `tokens` (`[n][n_embd]`), dequantized; ids must be checked by the caller.
pub(crate) fn embed(
    embd: &WeightView,
    tokens: &[u32],
    n_embd: usize,
) -> Result<Vec<f32>, ModelError> {
    let mut x = vec![0.0f32; tokens.len() * n_embd];
    for (row, &tok) in x.chunks_exact_mut(n_embd).zip(tokens) {
        let r = tok as usize * embd.row_bytes();
        lumen_kernels::dequantize_row(embd.ty, &embd.bytes[r..r + embd.row_bytes()], row)?;
    }
    Ok(x)
}

/// Refuses a forward pass that would fill the cache to `needed` positions of `capacity`, or
/// that names a token outside the `n_rows` embedding rows.
pub(crate) fn check_input(
    tokens: &[u32],
    needed: usize,
    capacity: usize,
    n_rows: usize,
) -> Result<(), ModelError> {
    if needed > capacity {
        return Err(ModelError::ContextFull {
            needed,
            n_ctx: capacity,
        });
    }
    match tokens.iter().find(|&&t| t as usize >= n_rows) {
        Some(&bad) => Err(ModelError::BadToken {
            id: bad,
            n_vocab: n_rows,
        }),
        None => Ok(()),
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
    /// Dequantized-f32 matmuls instead of Q8 activations (validation only).
    reference_matmul: bool,
    kernels: &'static KernelSet,
}

impl Llama {
    pub fn load(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let arch = file.architecture()?;
        if !ARCHITECTURES.contains(&arch) {
            return Err(super::unsupported(&file, arch));
        }
        let cfg = LlamaConfig::from_gguf(&file)?;
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
        );
        let mut model = Self {
            output_norm: vector(f, names::OUTPUT_NORM, e)?,
            file: file.clone(),
            config: cfg,
            token_embd,
            layers,
            output,
            rope,
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
        let e = cfg.n_embd;

        // x: [n, n_embd] — the residual stream.
        let mut x = embed(&self.view(&self.token_embd), tokens, e)?;
        let mut scratch = Scratch::new(cfg, n);
        let angles = self.rope.angles(pos0, n);
        let w = self.weights();
        for (il, layer) in self.layers.iter().enumerate() {
            trace(il, &x);
            layer.forward(&w, cfg, il, &angles, cache, pos0, &mut x, &mut scratch)?;
        }
        cache.advance(n);

        output_head(&w, cfg, &self.output_norm, &self.output, &x, which, trace)
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
        let e = cfg.n_embd;
        let mut x = embed(&self.view(&self.token_embd), tokens, e)?;
        let mut scratch = Scratch::new(cfg, n);
        let positions: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let angles = self.rope.angles_at(&positions);
        let w = self.weights();
        for (il, layer) in self.layers.iter().enumerate() {
            layer.forward_rows(&w, cfg, il, &angles, caches, &mut x, &mut scratch)?;
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
            detail: None,
        }
    }
}

impl Model for Llama {
    fn info(&self) -> ModelInfo {
        self.config.info(self.file.architecture().unwrap_or("llama"))
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
