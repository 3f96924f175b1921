//! The building blocks every text architecture shares: the decoder layer (attention with
//! optional Q/K/V/O biases, per-head Q/K norms, RoPE, sliding window and soft-capping from the
//! config's [`Flavor`](super::llama::Flavor); SwiGLU or GeGLU feed-forward; optional norms of
//! both outputs before the residual adds), its scratch buffers, the embedding lookup, the
//! input checks and the output head.

use super::kv_cache::KvCache;
use super::llama::{FfnKind, LlamaConfig, Logits};
use super::weights::{matrix, vector, Matrix, Weights};
use super::ModelError;
use crate::gguf::{names, GgufFile};
use crate::tensor::ops::{self, RopeAngles};
use lumen_kernels::attention;
use lumen_kernels::matmul::WeightView;

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
    /// The tensors only some families have (`None` where the file has none).
    extra: LayerExtras,
}

/// Optional per-layer tensors: Q/K/V biases (Qwen2), per-head Q/K norms (Qwen3, Gemma 3),
/// norms of the attention and FFN outputs before the residual adds (Gemma 2/3).
#[derive(Default)]
struct LayerExtras {
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    o_bias: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    post_ffn_norm: Option<Vec<f32>>,
}

impl Layer {
    /// Layer `i`'s tensors (`blk.{i}.*`), shapes checked against `cfg`.
    pub(crate) fn load(f: &GgufFile, i: usize, cfg: &LlamaConfig) -> Result<Self, ModelError> {
        let (e, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let m = |suffix, cols, rows| matrix(f, &names::blk(i, suffix), cols, rows);
        let opt = |suffix, len| -> Result<Option<Vec<f32>>, ModelError> {
            let name = names::blk(i, suffix);
            match f.tensor_info(&name) {
                Some(_) => vector(f, &name, len).map(Some),
                None => Ok(None),
            }
        };
        let hd = cfg.head_dim;
        let extra = LayerExtras {
            q_bias: opt(names::ATTN_Q_BIAS, q)?,
            k_bias: opt(names::ATTN_K_BIAS, kv)?,
            v_bias: opt(names::ATTN_V_BIAS, kv)?,
            o_bias: opt(names::ATTN_OUTPUT_BIAS, e)?,
            q_norm: opt(names::ATTN_Q_NORM, hd)?,
            k_norm: opt(names::ATTN_K_NORM, hd)?,
            post_attn_norm: opt(names::ATTN_POST_NORM, e)?,
            post_ffn_norm: opt(names::FFN_POST_NORM, e)?,
        };
        // Phi-3 fuses Q/K/V into one tensor and gate/up into `ffn_up` (gate rows first): each
        // part is a row range of the fused matrix.
        let (attn_q, attn_k, attn_v) = match f.tensor_info(&names::blk(i, names::ATTN_QKV)) {
            Some(_) => {
                let qkv = m(names::ATTN_QKV, e, q + 2 * kv)?;
                (qkv.rows(0, q), qkv.rows(q, kv), qkv.rows(q + kv, kv))
            }
            None => (
                m(names::ATTN_Q, e, q)?,
                m(names::ATTN_K, e, kv)?,
                m(names::ATTN_V, e, kv)?,
            ),
        };
        let (ffn_gate, ffn_up) = match f.tensor_info(&names::blk(i, names::FFN_GATE)) {
            Some(_) => (m(names::FFN_GATE, e, ff)?, m(names::FFN_UP, e, ff)?),
            None => {
                let gate_up = m(names::FFN_UP, e, 2 * ff)?;
                (gate_up.rows(0, ff), gate_up.rows(ff, ff))
            }
        };
        Ok(Layer {
            extra,
            attn_norm: vector(f, &names::blk(i, names::ATTN_NORM), e)?,
            attn_q,
            attn_k,
            attn_v,
            attn_output: m(names::ATTN_OUTPUT, q, e)?,
            ffn_norm: vector(f, &names::blk(i, names::FFN_NORM), e)?,
            ffn_gate,
            ffn_up,
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
        let opts = cfg.score_options(il);
        self.forward_with(w, cfg, x, s, &mut |s| {
            angles.apply_qk(&mut s.q, &mut s.k, cfg.head_dim);
            cache.store(il, pos0, &s.k, &s.v);
            attention::attend_with(
                w.kernels.isa,
                cache.shape(),
                &cache.layer(il),
                &s.q,
                pos0,
                &opts,
                &mut s.attn,
            );
        })
    }

    /// One token of each of several sequences (row i of `x` belongs to `caches[i]`, at its
    /// current length): the matmuls run once over all rows, attention per sequence.
    #[allow(clippy::too_many_arguments)]
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
        let opts = cfg.score_options(il);
        self.forward_with(w, cfg, x, s, &mut |s| {
            angles.apply_qk(&mut s.q, &mut s.k, cfg.head_dim);
            for (i, cache) in caches.iter_mut().enumerate() {
                let pos = cache.len();
                let (q, kv) = (i * q_dim..(i + 1) * q_dim, i * kv_dim..(i + 1) * kv_dim);
                cache.store(il, pos, &s.k[kv.clone()], &s.v[kv]);
                attention::attend_with(
                    w.kernels.isa,
                    cache.shape(),
                    &cache.layer(il),
                    &s.q[q.clone()],
                    pos,
                    &opts,
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
        let ex = &self.extra;
        for (bias, rows) in [
            (&ex.q_bias, &mut s.q),
            (&ex.k_bias, &mut s.k),
            (&ex.v_bias, &mut s.v),
        ] {
            if let Some(b) = bias {
                ops::add_bias_rows(rows, b);
            }
        }
        for (norm, rows) in [(&ex.q_norm, &mut s.q), (&ex.k_norm, &mut s.k)] {
            if let Some(w) = norm {
                ops::rms_norm_pieces_in_place(rows, w, cfg.rms_eps);
            }
        }
        attend(s);
        w.matmuls(&s.attn, &mut [(&self.attn_output, &mut s.proj)])?;
        if let Some(b) = &ex.o_bias {
            ops::add_bias_rows(&mut s.proj, b);
        }
        residual_add(
            x,
            &mut s.proj,
            ex.post_attn_norm.as_deref(),
            cfg.rms_eps,
            &mut s.xn,
        );

        // Feed-forward block (SwiGLU or GeGLU).
        ops::rms_norm_rows(x, &self.ffn_norm, cfg.rms_eps, &mut s.xn);
        w.matmuls(
            &s.xn,
            &mut [(&self.ffn_gate, &mut s.gate), (&self.ffn_up, &mut s.up)],
        )?;
        match cfg.flavor.ffn {
            FfnKind::SwiGlu => ops::swiglu_in_place(&mut s.gate, &s.up),
            FfnKind::GeGluTanh => ops::geglu_in_place(&mut s.gate, &s.up),
        }
        w.matmuls(&s.gate, &mut [(&self.ffn_down, &mut s.proj)])?;
        residual_add(
            x,
            &mut s.proj,
            ex.post_ffn_norm.as_deref(),
            cfg.rms_eps,
            &mut s.xn,
        );
        Ok(())
    }
}

/// `x += out`, through `post_norm` first where the layer has one (Gemma); `tmp` is scratch of
/// `out`'s size.
fn residual_add(
    x: &mut [f32],
    out: &mut [f32],
    post_norm: Option<&[f32]>,
    eps: f32,
    tmp: &mut [f32],
) {
    match post_norm {
        Some(w) => {
            ops::rms_norm_rows(out, w, eps, tmp);
            ops::add_in_place(x, tmp);
        }
        None => ops::add_in_place(x, out),
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
    if let Some(cap) = cfg.flavor.final_softcap {
        ops::softcap_in_place(&mut logits, cap);
    }
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
