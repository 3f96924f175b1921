//! The mllama text decoder: Llama 3.1 self-attention layers with gated cross-attention layers
//! (at `mllama.attention.cross_attention_layers`) that read the projected vision states.
//!
//! Cross-attention K/V depend only on the image, so [`MllamaText::attach_image`] computes them
//! once per image and the cache keeps them for the whole sequence. Which image keys a text row
//! sees follows the reference processor (`get_cross_attention_token_mask`): a row sees the
//! images of the latest run of adjacent `<|image|>` tokens at or before it (real tiles only), a
//! row before any image sees nothing. Meta's reference (the default) zeroes both the attention
//! and the MLP output of rows that see nothing; Hugging Face zeroes only the MLP output and lets
//! those rows attend to every key ([`CrossAttentionSemantics`]).

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use crate::gguf::{keys, names, GgufFile};
use crate::model::blocks::{check_input, embed, output_head, Layer, Scratch};
use crate::model::kv_cache::KvCache;
use crate::model::llama::{LlamaConfig, Logits};
use crate::model::weights::{matrix, repack_enabled, vector, Matrix, Weights};
use crate::model::ModelError;
use crate::tensor::ops::{self, Rope};
use lumen_kernels::attention::AttentionShape;
use lumen_kernels::KernelSet;

/// The `general.architecture` this module runs.
pub const ARCHITECTURE: &str = "mllama";

/// Learnable embedding rows after the vocabulary (Meta's `learnable_embedding`); the first one
/// is `<|image|>`. A cap, not a requirement: files with fewer extra rows load too.
const MAX_EXTRA_EMBD_ROWS: usize = 8;

/// How rows that see no image are treated in the cross-attention layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrossAttentionSemantics {
    /// Meta's reference (and vLLM, sglang): attention and MLP output both zeroed.
    #[default]
    Meta,
    /// Hugging Face transformers ≤ 5.x: attention over every key (padding tiles included), only
    /// the MLP output zeroed.
    HuggingFace,
}

#[derive(Clone, Debug)]
pub struct MllamaTextConfig {
    /// The decoder's hyper-parameters; `n_layer` counts self and cross layers, `n_vocab` is the
    /// output head's size.
    pub llama: LlamaConfig,
    /// Indices (in the merged layer list) of the cross-attention layers, ascending.
    pub cross_layers: Vec<usize>,
    /// Rows of `token_embd`: the vocabulary plus the learnable image rows.
    pub n_embd_rows: usize,
}

impl MllamaTextConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::BadConfig {
            path: file.path().to_path_buf(),
            message,
        };
        let mut llama = LlamaConfig::from_gguf(file)?;
        // The output head defines the vocabulary: `token_embd` has extra image rows, so the
        // llama fallback (embedding rows) would be wrong here.
        let out = file.require(names::OUTPUT)?;
        let head_rows = out.shape.get(1).copied().unwrap_or(0);
        let key = keys::arch_key(ARCHITECTURE, keys::VOCAB_SIZE);
        if file.metadata().contains(&key) && llama.n_vocab != head_rows {
            return Err(bad(format!(
                "{key} = {} but {} has {head_rows} rows",
                llama.n_vocab,
                names::OUTPUT
            )));
        }
        llama.n_vocab = head_rows;
        let n_embd_rows = file
            .require(names::TOKEN_EMBD)?
            .shape
            .get(1)
            .copied()
            .unwrap_or(0);
        if n_embd_rows < llama.n_vocab || n_embd_rows > llama.n_vocab + MAX_EXTRA_EMBD_ROWS {
            return Err(bad(format!(
                "{} has {n_embd_rows} rows; expected the vocabulary ({}) plus at most {MAX_EXTRA_EMBD_ROWS} image rows",
                names::TOKEN_EMBD,
                llama.n_vocab
            )));
        }
        let key = keys::arch_key(ARCHITECTURE, keys::CROSS_ATTENTION_LAYERS);
        let raw = file.metadata().get_i32_array(&key)?;
        let mut cross_layers = Vec::with_capacity(raw.len());
        for &i in &raw {
            match usize::try_from(i) {
                Ok(i) if i < llama.n_layer && cross_layers.last().is_none_or(|&p| p < i) => {
                    cross_layers.push(i)
                }
                _ => {
                    return Err(bad(format!(
                        "{key} = {raw:?}: indices must be ascending and below the {} layers",
                        llama.n_layer
                    )))
                }
            }
        }
        if !llama.head_dim.is_multiple_of(2) {
            return Err(bad(format!("head size {} is odd", llama.head_dim)));
        }
        Ok(Self {
            llama,
            cross_layers,
            n_embd_rows,
        })
    }

    /// `<|image|>`: the first learnable row after the vocabulary (128256 in Llama 3.2 Vision).
    pub fn image_token(&self) -> u32 {
        self.llama.n_vocab as u32
    }
}

/// A cross-attention decoder layer (`blk.N.cross_attn_*`).
struct CrossLayer {
    attn_norm: Vec<f32>,
    q_proj: Matrix,
    k_proj: Matrix,
    v_proj: Matrix,
    o_proj: Matrix,
    /// RMSNorm weights over the head dimension, permuted like the file's Q/K rows (see
    /// [`permute_within_head`]).
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    /// tanh of the stored raw gates.
    attn_gate: f32,
    mlp_gate: f32,
    ffn_norm: Vec<f32>,
    ffn_gate: Matrix,
    ffn_up: Matrix,
    ffn_down: Matrix,
}

impl CrossLayer {
    fn load(f: &GgufFile, i: usize, cfg: &LlamaConfig) -> Result<Self, ModelError> {
        let (e, q, kv, ff, hd) = (
            cfg.n_embd,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.n_ff,
            cfg.head_dim,
        );
        let m = |suffix, cols, rows| matrix(f, &names::blk(i, suffix), cols, rows);
        let v = |suffix, len| vector(f, &names::blk(i, suffix), len);
        Ok(Self {
            attn_norm: v(names::ATTN_NORM, e)?,
            q_proj: m(names::CROSS_ATTN_Q, e, q)?,
            k_proj: m(names::CROSS_ATTN_K, e, kv)?,
            v_proj: m(names::CROSS_ATTN_V, e, kv)?,
            o_proj: m(names::CROSS_ATTN_O, q, e)?,
            q_norm: permute_within_head(&v(names::CROSS_ATTN_Q_NORM, hd)?),
            k_norm: permute_within_head(&v(names::CROSS_ATTN_K_NORM, hd)?),
            attn_gate: v(names::CROSS_ATTN_ATTN_GATE, 1)?[0].tanh(),
            mlp_gate: v(names::CROSS_ATTN_MLP_GATE, 1)?[0].tanh(),
            ffn_norm: v(names::FFN_NORM, e)?,
            ffn_gate: m(names::FFN_GATE, e, ff)?,
            ffn_up: m(names::FFN_UP, e, ff)?,
            ffn_down: m(names::FFN_DOWN, ff, e)?,
        })
    }

    fn matrices_mut(&mut self) -> [&mut Matrix; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.ffn_gate,
            &mut self.ffn_up,
            &mut self.ffn_down,
        ]
    }

    fn matrices(&self) -> [&Matrix; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.ffn_gate,
            &self.ffn_up,
            &self.ffn_down,
        ]
    }
}

/// The llama converter's within-head row permutation (`[2][hd/2]` → `[hd/2][2]`: permuted index
/// `i·2 + p` holds original `p·hd/2 + i`), applied to a per-head-dimension norm weight so that it
/// lines up with the permuted cross-attention Q/K rows of the file.
fn permute_within_head(w: &[f32]) -> Vec<f32> {
    let half = w.len() / 2;
    (0..w.len()).map(|j| w[(j % 2) * half + j / 2]).collect()
}

enum DecoderLayer {
    SelfAttention(Layer),
    CrossAttention(CrossLayer),
}

/// Cross-attention keys (after `k_norm`) and values of one cross layer, `[key][kv_dim]`.
#[derive(Default)]
struct CrossKv {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl CrossKv {
    fn append(&mut self, mut other: CrossKv) {
        self.keys.append(&mut other.keys);
        self.values.append(&mut other.values);
    }
}

/// Which images the next text row sees: the reference processor's rule, evaluated causally.
#[derive(Clone, Debug, Default)]
struct Visibility {
    /// `<|image|>` tokens seen so far (each bound to the attached image of the same index).
    n_bound: usize,
    /// Images of the latest run of adjacent `<|image|>` tokens.
    run: Option<Range<usize>>,
    /// Position of the latest `<|image|>` token.
    last_image_pos: Option<usize>,
}

impl Visibility {
    /// Advances over the token at `pos` and returns the images that row sees.
    fn step(
        &mut self,
        token: u32,
        pos: usize,
        image_token: u32,
        n_attached: usize,
    ) -> Result<Option<Range<usize>>, ModelError> {
        if token == image_token {
            let j = self.n_bound;
            if j >= n_attached {
                return Err(ModelError::UnboundImageToken {
                    position: pos,
                    attached: n_attached,
                });
            }
            self.n_bound += 1;
            self.run = match (self.run.take(), self.last_image_pos) {
                // Adjacent to the previous image token: the run grows (the reference extends
                // every image of a run to the end of the run's last range).
                (Some(run), Some(p)) if p + 1 == pos => Some(run.start..j + 1),
                _ => Some(j..j + 1),
            };
            self.last_image_pos = Some(pos);
        }
        Ok(self.run.clone())
    }
}

/// Keys a text row attends to in a cross-attention layer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RowKeys {
    /// Sees no image: the layer leaves the row unchanged (Meta semantics).
    Nothing,
    /// A range of real-tile keys (the images of one run are stored next to each other).
    Keys(Range<usize>),
    /// Sees no image, Hugging Face semantics: every key, real and padding.
    Everything,
}

/// Self-attention K/V for every position, and the cross-attention K/V and token-to-image
/// bindings of the attached images.
pub struct MllamaCache {
    kv: KvCache,
    /// Per cross layer: keys of the real tiles of every attached image, image after image.
    cross: Vec<CrossKv>,
    /// Per cross layer: keys of padding tiles (kept only for Hugging Face semantics).
    cross_padding: Vec<CrossKv>,
    /// Key range of each attached image in `cross`.
    image_keys: Vec<Range<usize>>,
    visibility: Visibility,
}

impl MllamaCache {
    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.kv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.kv.capacity()
    }

    /// Images attached so far.
    pub fn n_images(&self) -> usize {
        self.image_keys.len()
    }

    /// Forgets every position and image.
    pub fn clear(&mut self) {
        self.kv.clear();
        for kv in self.cross.iter_mut().chain(&mut self.cross_padding) {
            *kv = CrossKv::default();
        }
        self.image_keys.clear();
        self.visibility = Visibility::default();
    }
}

pub struct MllamaText {
    file: Arc<GgufFile>,
    pub config: MllamaTextConfig,
    token_embd: Matrix,
    layers: Vec<DecoderLayer>,
    output_norm: Vec<f32>,
    output: Matrix,
    rope: Rope,
    semantics: CrossAttentionSemantics,
    /// Dequantized-f32 matmuls instead of Q8 activations (validation only).
    reference_matmul: bool,
    kernels: &'static KernelSet,
}

impl MllamaText {
    pub fn load(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let arch = file.architecture()?;
        if arch != ARCHITECTURE {
            return Err(crate::model::unsupported(&file, arch));
        }
        let config = MllamaTextConfig::from_gguf(&file)?;
        let cfg = &config.llama;
        let f = &*file;
        let layers = (0..cfg.n_layer)
            .map(|i| {
                Ok(if config.cross_layers.contains(&i) {
                    DecoderLayer::CrossAttention(CrossLayer::load(f, i, cfg)?)
                } else {
                    DecoderLayer::SelfAttention(Layer::load(f, i, cfg)?)
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let rope_freqs = match f.tensor_info(names::ROPE_FREQS) {
            Some(_) => Some(vector(f, names::ROPE_FREQS, cfg.n_rot / 2)?),
            None => None,
        };
        let mut model = Self {
            token_embd: matrix(f, names::TOKEN_EMBD, cfg.n_embd, config.n_embd_rows)?,
            output: matrix(f, names::OUTPUT, cfg.n_embd, cfg.n_vocab)?,
            output_norm: vector(f, names::OUTPUT_NORM, cfg.n_embd)?,
            rope: Rope::new(
                cfg.n_rot,
                cfg.rope_base,
                rope_freqs.as_deref(),
                cfg.rope_linear_scale,
            ),
            layers,
            file: file.clone(),
            config,
            semantics: CrossAttentionSemantics::default(),
            reference_matmul: false,
            kernels: lumen_kernels::kernels(),
        };
        if repack_enabled() {
            model.pack_weights()?;
        }
        Ok(model)
    }

    /// Interleaved copies of the matmul weights for the packed kernels, as [`crate::model::Llama`].
    fn pack_weights(&mut self) -> Result<(), ModelError> {
        let ks = self.kernels;
        if ks.isa == lumen_kernels::Isa::Scalar {
            return Ok(());
        }
        let file = self.file.clone();
        for layer in &mut self.layers {
            let matrices = match layer {
                DecoderLayer::SelfAttention(l) => l.matrices_mut(),
                DecoderLayer::CrossAttention(c) => c.matrices_mut(),
            };
            for m in matrices {
                m.pack(&file, ks)?;
            }
        }
        self.output.pack(&file, ks)
    }

    /// Heap bytes held by packed weight copies (0 when nothing was packed).
    pub fn packed_bytes(&self) -> usize {
        let per_layer = self.layers.iter().flat_map(|l| match l {
            DecoderLayer::SelfAttention(l) => l.matrices(),
            DecoderLayer::CrossAttention(c) => c.matrices(),
        });
        per_layer
            .chain([&self.output])
            .map(Matrix::packed_bytes)
            .sum()
    }

    /// Computes every matmul with dequantized f32 weights and unquantized activations
    /// (validation against float references).
    pub fn set_reference_matmul(&mut self, on: bool) {
        self.reference_matmul = on;
    }

    /// Chooses how rows that see no image are treated; set it before attaching images.
    pub fn set_semantics(&mut self, semantics: CrossAttentionSemantics) {
        self.semantics = semantics;
    }

    pub fn set_kernels(&mut self, kernels: &'static KernelSet) {
        self.kernels = kernels;
    }

    pub fn kernels(&self) -> &'static KernelSet {
        self.kernels
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn new_cache(&self, n_ctx: usize) -> MllamaCache {
        let cfg = &self.config.llama;
        let shape = AttentionShape {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
            n_ctx,
        };
        let n_cross = self.config.cross_layers.len();
        MllamaCache {
            // Slots of cross layers are never written, so their zeroed pages cost nothing.
            kv: KvCache::new(cfg.n_layer, shape),
            cross: (0..n_cross).map(|_| CrossKv::default()).collect(),
            cross_padding: (0..n_cross).map(|_| CrossKv::default()).collect(),
            image_keys: Vec::new(),
            visibility: Visibility::default(),
        }
    }

    fn weights(&self) -> Weights<'_> {
        Weights {
            file: &self.file,
            kernels: self.kernels,
            reference_matmul: self.reference_matmul,
        }
    }

    fn cross_layers(&self) -> impl Iterator<Item = &CrossLayer> {
        self.layers.iter().filter_map(|l| match l {
            DecoderLayer::CrossAttention(c) => Some(c),
            DecoderLayer::SelfAttention(_) => None,
        })
    }

    /// Computes and caches every cross layer's K/V for one image, to be bound to the next
    /// unbound `<|image|>` token. `states` are the projected vision states
    /// `[max_tiles][tokens_per_tile][n_embd]`; only the first `n_tiles` tiles are real.
    pub fn attach_image(
        &self,
        cache: &mut MllamaCache,
        states: &[f32],
        max_tiles: usize,
        n_tiles: usize,
    ) -> Result<(), ModelError> {
        let e = self.config.llama.n_embd;
        let per_image = max_tiles * e;
        if max_tiles == 0
            || n_tiles == 0
            || n_tiles > max_tiles
            || states.is_empty()
            || !states.len().is_multiple_of(per_image)
        {
            return Err(ModelError::BadVisionStates(format!(
                "{} values are not [{max_tiles} tiles][tokens][{e}] with {n_tiles} real tiles",
                states.len()
            )));
        }
        let real = states.len() / max_tiles * n_tiles;
        let (real_states, padding_states) = states.split_at(real);
        let keep_padding = self.semantics == CrossAttentionSemantics::HuggingFace;
        let first_key = cache.cross.first().map_or(0, |kv| self.n_keys(kv));
        // Every layer's K/V first, so that an error leaves the cache as it was.
        let mut new_kv = Vec::new();
        for layer in self.cross_layers() {
            let padding = if keep_padding && !padding_states.is_empty() {
                Some(self.cross_kv(layer, padding_states)?)
            } else {
                None
            };
            new_kv.push((self.cross_kv(layer, real_states)?, padding));
        }
        for (ci, (real_kv, padding_kv)) in new_kv.into_iter().enumerate() {
            cache.cross[ci].append(real_kv);
            if let Some(p) = padding_kv {
                cache.cross_padding[ci].append(p);
            }
        }
        cache
            .image_keys
            .push(first_key..first_key + real_states.len() / e);
        Ok(())
    }

    fn n_keys(&self, kv: &CrossKv) -> usize {
        kv.keys.len() / self.config.llama.kv_dim()
    }

    /// k_proj (+ per-head k_norm) and v_proj of `states`.
    fn cross_kv(&self, layer: &CrossLayer, states: &[f32]) -> Result<CrossKv, ModelError> {
        let cfg = &self.config.llama;
        let n = states.len() / cfg.n_embd;
        let mut keys = vec![0.0f32; n * cfg.kv_dim()];
        let mut values = vec![0.0f32; n * cfg.kv_dim()];
        self.weights().matmuls(
            states,
            &mut [(&layer.k_proj, &mut keys), (&layer.v_proj, &mut values)],
        )?;
        norm_heads(&mut keys, &layer.k_norm, cfg.rms_eps);
        Ok(CrossKv { keys, values })
    }

    /// Runs `tokens` (appended after the cache's current length) and returns logits for the
    /// last position or for all of them (`n_tokens × n_vocab`). Each `<|image|>` token binds
    /// the next attached image.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut MllamaCache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        self.forward_traced(tokens, cache, which, &mut |_, _| {})
    }

    /// [`Self::forward`], calling `trace(i, hidden)` with the residual stream entering layer `i`
    /// (`i = n_layer` after the final norm), as Hugging Face's `output_hidden_states` lists them.
    pub fn forward_traced(
        &self,
        tokens: &[u32],
        cache: &mut MllamaCache,
        which: Logits,
        trace: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config.llama;
        let n = tokens.len();
        let pos0 = cache.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        check_input(tokens, pos0 + n, cache.capacity(), self.config.n_embd_rows)?;
        // Bindings are committed only when the whole pass succeeds.
        let mut visibility = cache.visibility.clone();
        let row_keys = self.row_keys(tokens, pos0, cache, &mut visibility)?;
        let any_image_seen = row_keys.iter().any(|r| *r != RowKeys::Nothing);

        // x: [n, n_embd] — the residual stream.
        let mut x = embed(&self.token_embd.view(&self.file), tokens, cfg.n_embd)?;
        let mut scratch = Scratch::new(cfg, n);
        let angles = self.rope.angles(pos0, n);
        let w = self.weights();
        let mut ci = 0;
        for (il, layer) in self.layers.iter().enumerate() {
            trace(il, &x);
            match layer {
                DecoderLayer::SelfAttention(l) => l.forward(
                    &w,
                    cfg,
                    il,
                    &angles,
                    &mut cache.kv,
                    pos0,
                    &mut x,
                    &mut scratch,
                )?,
                DecoderLayer::CrossAttention(c) => {
                    // No image anywhere (text-only prompt): the layer is the identity.
                    if any_image_seen {
                        let kv = (&cache.cross[ci], &cache.cross_padding[ci]);
                        self.cross_layer(&w, c, kv, &row_keys, &mut x, &mut scratch)?;
                    }
                    ci += 1;
                }
            }
        }
        cache.kv.advance(n);
        cache.visibility = visibility;
        output_head(&w, cfg, &self.output_norm, &self.output, &x, which, trace)
    }

    /// The cross-attention keys of each row of `tokens`.
    fn row_keys(
        &self,
        tokens: &[u32],
        pos0: usize,
        cache: &MllamaCache,
        visibility: &mut Visibility,
    ) -> Result<Vec<RowKeys>, ModelError> {
        let image_token = self.config.image_token();
        let attached = cache.image_keys.len();
        tokens
            .iter()
            .enumerate()
            .map(|(t, &tok)| {
                let seen = visibility.step(tok, pos0 + t, image_token, attached)?;
                Ok(match seen {
                    Some(images) => Keys(
                        cache.image_keys[images.start].start..cache.image_keys[images.end - 1].end,
                    ),
                    None if attached > 0
                        && self.semantics == CrossAttentionSemantics::HuggingFace =>
                    {
                        Everything
                    }
                    None => Nothing,
                })
            })
            .collect()
    }

    /// One cross-attention decoder layer on the residual stream `x` (`[n][n_embd]`).
    fn cross_layer(
        &self,
        w: &Weights,
        layer: &CrossLayer,
        (kv, padding): (&CrossKv, &CrossKv),
        rows: &[RowKeys],
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        let cfg = &self.config.llama;
        let e = cfg.n_embd;
        // Attention block: q = q_norm(q_proj(rms(x))) per head, against the image's K/V.
        ops::rms_norm_rows(x, &layer.attn_norm, cfg.rms_eps, &mut s.xn);
        w.matmuls(&s.xn, &mut [(&layer.q_proj, &mut s.q)])?;
        norm_heads(&mut s.q, &layer.q_norm, cfg.rms_eps);
        cross_attend(cfg, &s.q, rows, kv, padding, &mut s.attn);
        w.matmuls(&s.attn, &mut [(&layer.o_proj, &mut s.proj)])?;
        for ((x_row, p_row), keys) in x.chunks_exact_mut(e).zip(s.proj.chunks_exact(e)).zip(rows) {
            if *keys != Nothing {
                add_scaled(x_row, p_row, layer.attn_gate);
            }
        }

        // Feed-forward block (SwiGLU), only for rows that see an image.
        ops::rms_norm_rows(x, &layer.ffn_norm, cfg.rms_eps, &mut s.xn);
        w.matmuls(
            &s.xn,
            &mut [(&layer.ffn_gate, &mut s.gate), (&layer.ffn_up, &mut s.up)],
        )?;
        ops::swiglu_in_place(&mut s.gate, &s.up);
        w.matmuls(&s.gate, &mut [(&layer.ffn_down, &mut s.proj)])?;
        for ((x_row, p_row), keys) in x.chunks_exact_mut(e).zip(s.proj.chunks_exact(e)).zip(rows) {
            if matches!(keys, Keys(_)) {
                add_scaled(x_row, p_row, layer.mlp_gate);
            }
        }
        Ok(())
    }
}

use RowKeys::{Everything, Keys, Nothing};

/// `acc += scale · x`.
fn add_scaled(acc: &mut [f32], x: &[f32], scale: f32) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += scale * b;
    }
}

/// RMSNorm of every head-sized chunk of `x` with one shared weight (`q_norm`, `k_norm`).
fn norm_heads(x: &mut [f32], weight: &[f32], eps: f32) {
    let mut out = vec![0.0f32; weight.len()];
    for head in x.chunks_exact_mut(weight.len()) {
        ops::rms_norm(head, weight, eps, &mut out);
        head.copy_from_slice(&out);
    }
}

/// Grouped-query attention of each query row (`q`, `[n][n_head·head_dim]`) over the keys its
/// row may see; rows that see nothing get zeros. One task per (row, head).
fn cross_attend(
    cfg: &LlamaConfig,
    q: &[f32],
    rows: &[RowKeys],
    kv: &CrossKv,
    padding: &CrossKv,
    out: &mut [f32],
) {
    let (hd, kv_dim) = (cfg.head_dim, cfg.kv_dim());
    let group = cfg.n_head / cfg.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let n_keys = |s: &CrossKv| s.keys.len() / kv_dim;
    out.par_chunks_mut(hd)
        .zip(q.par_chunks(hd))
        .enumerate()
        .for_each(|(task, (o, q_head))| {
            let (row, head) = (task / cfg.n_head, task % cfg.n_head);
            let offset = (head / group) * hd;
            let segments: Vec<(&CrossKv, Range<usize>)> = match &rows[row] {
                Nothing => return o.fill(0.0),
                Keys(r) => vec![(kv, r.clone())],
                Everything => vec![(kv, 0..n_keys(kv)), (padding, 0..n_keys(padding))],
            };
            let mut scores = Vec::new();
            for (store, keys) in &segments {
                scores.extend(
                    keys.clone()
                        .map(|j| dot(q_head, &store.keys[j * kv_dim + offset..][..hd]) * scale),
                );
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for s in &mut scores {
                *s = (*s - max).exp();
                sum += *s;
            }
            o.fill(0.0);
            let positions = segments
                .iter()
                .flat_map(|(store, keys)| keys.clone().map(move |j| (*store, j)));
            for (&p, (store, j)) in scores.iter().zip(positions) {
                add_scaled(o, &store.values[j * kv_dim + offset..][..hd], p);
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        });
}

/// Dot product with eight independent accumulators (vectorisable without reassociation flags).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_head_permutation_matches_the_llama_converter() {
        // hd = 8: original index p·4 + i goes to i·2 + p.
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_within_head(&w),
            [0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]
        );
    }

    fn visible(tokens: &[u32], n_attached: usize) -> Vec<Option<Range<usize>>> {
        let mut v = Visibility::default();
        tokens
            .iter()
            .enumerate()
            .map(|(pos, &t)| v.step(t, pos, 9, n_attached).unwrap())
            .collect()
    }

    #[test]
    fn visibility_follows_the_reference_processor() {
        // BOS, image, text, image, text: each image until the next; nothing before the first.
        assert_eq!(
            visible(&[1, 9, 2, 9, 3], 2),
            [None, Some(0..1), Some(0..1), Some(1..2), Some(1..2)]
        );
        // A run of adjacent images: each row sees the run's images up to itself, and text after
        // the run sees them all.
        assert_eq!(
            visible(&[1, 9, 9, 2, 3], 2),
            [None, Some(0..1), Some(0..2), Some(0..2), Some(0..2)]
        );
    }

    #[test]
    fn an_image_token_without_an_image_is_an_error() {
        let mut v = Visibility::default();
        let err = v.step(9, 3, 9, 0).unwrap_err();
        assert!(err.to_string().contains("position 3"), "{err}");
    }
}
