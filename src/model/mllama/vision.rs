//! The mllama vision encoder and projector: normalised tiles of one image → the states the
//! text decoder's cross-attention layers read.
//!
//! Forward as in Hugging Face's `MllamaVisionModel` with Meta's semantics (spec §2.3): patch
//! convolution, gated pre-tile / positional / tile embeddings, `layernorm_pre`, tokens padded to
//! a multiple of 8 per tile, a local encoder whose listed layers' *inputs* are the intermediate
//! features, `layernorm_post`, the post-tile embedding, a gated global encoder, then
//! `[global | intermediates interleaved]` through the projector. Every tile slot runs, also the
//! padding tiles of a small image: real tokens attend to padding tokens (the reference does),
//! so skipping them would change the result.

use std::sync::Arc;

use lumen_kernels::dense_attention::{self, DenseShape};
use lumen_kernels::dense_gemm::{self, PanelMatrix};
use lumen_kernels::matmul::{matmul_many, QuantizedRows, WeightView};
use lumen_kernels::{GgmlType, KernelSet, PackedMatrix};
use rayon::prelude::*;

use crate::gguf::{keys, names, GgufFile};
use crate::model::weights::{matrix, vector, Matrix, Weights};
use crate::model::ModelError;

/// Bounds on hyper-parameters read from the file (reject absurd values before allocating).
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_TILES: usize = 64;
const MAX_IMAGE_SIZE: usize = 1 << 14;
/// The encoder pads every tile's tokens to a multiple of this (the reference's choice).
const TOKEN_PAD_MULTIPLE: usize = 8;

/// Vision hyper-parameters (`mllama.vision.*`) and the projector's output width.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    /// Local (ungated) encoder layers.
    pub n_layer: usize,
    /// Global (gated) encoder layers.
    pub n_global_layer: usize,
    /// Local layers whose inputs are the intermediate features, in output order.
    pub intermediate_layers: Vec<usize>,
    pub norm_eps: f32,
    pub image_size: usize,
    pub patch_size: usize,
    pub max_tiles: usize,
    pub n_channels: usize,
    /// Width of the projected states (the text model's hidden size).
    pub text_embd: usize,
}

impl VisionConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let md = file.metadata();
        let arch = file.architecture()?;
        let key = |suffix| keys::arch_key(arch, suffix);
        let dim = |suffix| md.get_usize_capped(&key(suffix), MAX_DIM);
        let layers_key = key(keys::VISION_INTERMEDIATE_LAYERS);
        let intermediate_layers = md
            .get_i32_array(&layers_key)?
            .into_iter()
            .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
            .collect();
        let cfg = Self {
            n_embd: dim(keys::VISION_EMBEDDING_LENGTH)?,
            n_ff: dim(keys::VISION_FEED_FORWARD_LENGTH)?,
            n_head: dim(keys::VISION_HEAD_COUNT)?,
            n_layer: md.get_usize_capped(&key(keys::VISION_BLOCK_COUNT), MAX_LAYERS)?,
            n_global_layer: md
                .get_usize_capped(&key(keys::VISION_GLOBAL_BLOCK_COUNT), MAX_LAYERS)?,
            intermediate_layers,
            norm_eps: md
                .opt(&key(keys::VISION_LAYER_NORM_EPS), |m, k| m.get_f32(k))?
                .unwrap_or(1e-5),
            image_size: md.get_usize_capped(&key(keys::VISION_IMAGE_SIZE), MAX_IMAGE_SIZE)?,
            patch_size: md.get_usize_capped(&key(keys::VISION_PATCH_SIZE), MAX_IMAGE_SIZE)?,
            max_tiles: md.get_usize_capped(&key(keys::VISION_MAX_NUM_TILES), MAX_TILES)?,
            n_channels: md
                .opt(&key(keys::VISION_NUM_CHANNELS), |m, k| {
                    m.get_usize_capped(k, 16)
                })?
                .unwrap_or(3),
            text_embd: dim(keys::EMBEDDING_LENGTH)?,
        };
        cfg.validate().map_err(|message| ModelError::BadConfig {
            path: file.path().to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "vision embedding length {} is not a multiple of the head count {}",
                self.n_embd, self.n_head
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "vision image size {} is not a multiple of the patch size {}",
                self.image_size, self.patch_size
            ));
        }
        if let Some(&bad) = self
            .intermediate_layers
            .iter()
            .find(|&&i| i >= self.n_layer)
        {
            return Err(format!(
                "vision intermediate layer index {bad} is outside the {} local layers",
                self.n_layer
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Patches along one side of a tile (40 at 560 px).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn n_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// Tokens per tile in the output: the patches and the class token (1601 at 560 px).
    pub fn n_tile_tokens(&self) -> usize {
        self.n_patches() + 1
    }

    /// Tokens per tile inside the encoder (1608 at 560 px).
    pub fn n_tile_tokens_padded(&self) -> usize {
        self.n_tile_tokens().next_multiple_of(TOKEN_PAD_MULTIPLE)
    }

    /// Width of the encoder output: the global output and every intermediate feature.
    pub fn output_dim(&self) -> usize {
        self.n_embd * (1 + self.intermediate_layers.len())
    }

    /// Input values per patch (3·14·14).
    pub fn patch_len(&self) -> usize {
        self.n_channels * self.patch_size * self.patch_size
    }

    /// Values of the pixel input: `[max_tiles][n_channels][image_size][image_size]`.
    pub fn pixels_len(&self) -> usize {
        self.max_tiles * self.n_channels * self.image_size * self.image_size
    }
}

/// A LayerNorm's weight and bias.
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl LayerNorm {
    fn load(file: &GgufFile, weight: &str, bias: &str, n: usize) -> Result<Self, ModelError> {
        Ok(Self {
            weight: vector(file, weight, n)?,
            bias: vector(file, bias, n)?,
        })
    }

    /// Normalises every row of `x` (`[rows][n]`) into `out`.
    fn apply(&self, x: &[f32], eps: f32, out: &mut [f32]) {
        let n = self.weight.len();
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(o, row)| layer_norm_row(row, &self.weight, &self.bias, eps, o));
    }
}

/// `(x − mean)/√(var + eps)·w + b` with the biased variance, as PyTorch's LayerNorm.
fn layer_norm_row(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * inv * w + b;
    }
}

/// erf(x), Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free so loops over it
/// vectorise; with it GELU differs from the exact form by under 1e-7·|x|.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * lumen_kernels::math::exp(-a * a);
    y.copysign(x)
}

/// GELU in its exact (erf) form, Hugging Face's `"gelu"`.
fn gelu_in_place(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|chunk| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// A weight matrix of the encoder and, on the default path, its Q8_0 requantization.
///
/// Why int8: thousands of tokens per image make the linear layers compute-bound (≈10 TFLOP
/// at 11B), and the packed Q8_0 tiles (`vpdpbusd`) run them about 3× faster than the f32
/// GEMM (11B shape, 2 threads: ≈0.55 s vs ≈1.55 s per layer). The cost is Q8_0 rounding of
/// weights and activations: on tiny-mllama (a worst case: 32-wide rows) the encoder output
/// moves 1.8e-2 relative L2 from the exact path (`tools/tests/mllama_vision.rs`). F32 files
/// keep f32 weights: converting to F32 asks for exactness. `LUMEN_VISION_F32=1` keeps the f32
/// GEMM and f32 attention for every layer (A/B). Layers whose matrices run in int8 also run
/// attention in bf16 (`dense_attention::attend_bf16`, where the CPU has AVX-512 BF16).
struct Linear {
    matrix: Matrix,
    int8: Option<Int8Copy>,
}

/// A Q8_0 copy of a matrix: GGUF row layout (what the matmul drivers check and fall back to)
/// and the packed layout the VNNI tiles read.
struct Int8Copy {
    bytes: Vec<u8>,
    packed: PackedMatrix,
}

impl Linear {
    /// `matrix`, requantized to Q8_0 when `int8` is on and its type and shape allow it.
    fn new(file: &GgufFile, matrix: Matrix, int8: bool) -> Result<Self, ModelError> {
        let int8 = if int8 {
            requantize_q8_0(file, &matrix)?
        } else {
            None
        };
        Ok(Self { matrix, int8 })
    }

    /// Whether the Q8_0 copy can run here: not in reference mode, and either the row layout
    /// was kept or the level has the packed Q8_0 kernels (a kernel set forced after load may
    /// lack them; the exact path then serves).
    fn int8_usable(&self, w: &Weights) -> bool {
        self.int8.as_ref().is_some_and(|c| {
            !w.reference_matmul
                && (!c.bytes.is_empty() || w.kernels.packed_gemv(GgmlType::Q8_0).is_some())
        })
    }

    fn int8_view(&self) -> Option<WeightView<'_>> {
        self.int8.as_ref().map(|c| WeightView {
            ty: GgmlType::Q8_0,
            rows: self.matrix.rows,
            cols: self.matrix.cols,
            bytes: &c.bytes,
            packed: Some(&c.packed),
        })
    }
}

/// Whether the encoder requantizes its matrices to Q8_0 (the default; `LUMEN_VISION_F32=1`
/// keeps the f32 GEMM).
fn int8_enabled() -> bool {
    std::env::var("LUMEN_VISION_F32").map_or(true, |v| v != "1")
}

/// Q8_0 of every row of `m`, packed; `None` for F32
/// weights and shapes the packed layout cannot hold.
fn requantize_q8_0(file: &GgufFile, m: &Matrix) -> Result<Option<Int8Copy>, ModelError> {
    let q8 = GgmlType::Q8_0;
    let row_bytes = q8.row_bytes(m.cols);
    let Some(row_bytes) =
        row_bytes.filter(|_| m.ty != GgmlType::F32 && PackedMatrix::supports(q8, m.rows, m.cols))
    else {
        return Ok(None);
    };
    // The level's activation quantizer writes the same Q8_0 blocks as llama.cpp's reference
    // quantizer (max-abs scale, round to nearest), vectorised: loading 11B's tower is ~0.8 G
    // weights.
    let quantize = lumen_kernels::kernels()
        .quantize(q8)
        .ok_or(lumen_kernels::KernelError::NotActivationFormat { ty: q8 })?;
    let view = m.view(file);
    let mut bytes = vec![0u8; m.rows * row_bytes];
    if m.ty == q8 {
        bytes.copy_from_slice(view.bytes);
    } else {
        bytes
            .par_chunks_mut(row_bytes)
            .enumerate()
            .try_for_each_init(
                || vec![0.0f32; m.cols],
                |buf, (r, dst)| {
                    lumen_kernels::dequantize_row(m.ty, view.row(r), buf)?;
                    quantize(buf, dst);
                    Ok::<_, ModelError>(())
                },
            )?;
    }
    let packed = PackedMatrix::pack(q8, m.rows, m.cols, &bytes)?;
    // With packed Q8_0 kernels at this level the drivers never read the row layout: keep one
    // copy, not two (~0.8 GB at 11B). The mapped original is only read again by the exact
    // reference path, so its pages need not stay resident either.
    let bytes = if lumen_kernels::kernels().packed_gemv(q8).is_some() {
        file.release_range(m.offset, m.n_bytes);
        Vec::new()
    } else {
        bytes
    };
    Ok(Some(Int8Copy { bytes, packed }))
}

/// Applies weight matrices to the activation rows `x`: reference runs through the shared
/// dequantized-f32 matmuls; otherwise the Q8_0 copies through the packed int8 GEMM (one
/// activation quantization for all of them), and matrices without one through the f32 panel
/// GEMM on dequantized weights (a few ms of repacking per matrix) where the kernel level has
/// it, else the shared quantized-activation matmuls.
fn linear(w: &Weights, x: &[f32], targets: &mut [(&Linear, &mut [f32])]) -> Result<(), ModelError> {
    let (int8, rest): (Vec<_>, Vec<_>) = targets
        .iter_mut()
        .map(|(l, out)| (*l, &mut **out))
        .partition(|(l, _)| l.int8_usable(w));
    if let Some((first, _)) = int8.first() {
        let qr = QuantizedRows::quantize(w.kernels, GgmlType::Q8_0, x, first.matrix.cols)?;
        let views: Vec<WeightView> = int8.iter().filter_map(|(l, _)| l.int8_view()).collect();
        let mut outs: Vec<&mut [f32]> = int8.into_iter().map(|(_, out)| out).collect();
        matmul_many(w.kernels, &views, &qr, &mut outs)?;
    }
    let isa = w.kernels.isa;
    if w.reference_matmul || !dense_gemm::has_fast_kernel(isa) {
        let mut targets: Vec<(&Matrix, &mut [f32])> =
            rest.into_iter().map(|(l, out)| (&l.matrix, out)).collect();
        return w.matmuls(x, &mut targets);
    }
    for (l, out) in rest {
        let m = &l.matrix;
        let view = m.view(w.file);
        let panels = PanelMatrix::pack(m.rows, m.cols, |r, buf: &mut [f32]| {
            lumen_kernels::dequantize_row(m.ty, view.row(r), buf).map_err(ModelError::from)
        })?;
        dense_gemm::gemm(isa, x, &panels, out);
    }
    Ok(())
}

/// `x[t][..] += bias` for every row.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len()).for_each(|row| {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

/// `acc += scale · x`.
fn add_scaled(acc: &mut [f32], x: &[f32], scale: f32) {
    acc.par_chunks_mut(4096)
        .zip(x.par_chunks(4096))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += scale * b;
            }
        });
}

/// A table of per-aspect-ratio rows (`[n_rows][row_len]`, row 0 = padding image) read one row
/// at a time from the mapped file (the tile-position table is 295 MB in F32 at 11B).
struct AspectTable {
    name: &'static str,
    ty: GgmlType,
    row_len: usize,
    n_rows: usize,
    offset: usize,
    row_bytes: usize,
}

impl AspectTable {
    fn load(file: &GgufFile, name: &'static str, row_len: usize) -> Result<Self, ModelError> {
        let t = file.require(name)?;
        let row_bytes = t.ty.row_bytes(row_len);
        let n_rows = t.shape.get(1).copied().unwrap_or(1);
        let shape_ok = t.shape.first() == Some(&row_len)
            && t.shape.iter().skip(2).all(|&d| d == 1)
            && n_rows >= 1;
        match row_bytes {
            Some(row_bytes) if shape_ok => Ok(Self {
                name,
                ty: t.ty,
                row_len,
                n_rows,
                offset: t.offset,
                row_bytes,
            }),
            _ => Err(ModelError::BadShape {
                path: file.path().to_path_buf(),
                tensor: name.to_string(),
                expected: vec![row_len, n_rows],
                found: t.shape.clone(),
            }),
        }
    }

    /// Row `id`, dequantized; `id` is checked by the caller against `n_rows`.
    fn row(&self, file: &GgufFile, id: usize) -> Result<Vec<f32>, ModelError> {
        let bytes = file.bytes_at(self.offset + id * self.row_bytes, self.row_bytes);
        let mut out = vec![0.0f32; self.row_len];
        lumen_kernels::dequantize_row(self.ty, bytes, &mut out)?;
        Ok(out)
    }
}

/// One scalar gate (stored already transformed: tanh(g) or 1 − tanh(g)).
fn gate(file: &GgufFile, name: &str) -> Result<f32, ModelError> {
    Ok(vector(file, name, 1)?[0])
}

/// One encoder layer; `gates` (attention, MLP) only in the global encoder.
struct EncoderLayer {
    attn_norm: LayerNorm,
    attn_q: Linear,
    attn_k: Linear,
    attn_v: Linear,
    attn_output: Linear,
    ffn_norm: LayerNorm,
    ffn_up: Linear,
    ffn_up_bias: Vec<f32>,
    ffn_down: Linear,
    ffn_down_bias: Vec<f32>,
    gates: Option<(f32, f32)>,
}

impl EncoderLayer {
    fn load(
        file: &GgufFile,
        cfg: &VisionConfig,
        name: &dyn Fn(&str) -> String,
        gated: bool,
        int8: bool,
    ) -> Result<Self, ModelError> {
        let (e, f) = (cfg.n_embd, cfg.n_ff);
        let linear =
            |suffix, cols, rows| Linear::new(file, matrix(file, &name(suffix), cols, rows)?, int8);
        let gates = if gated {
            Some((
                gate(file, &name(names::V_ATTN_GATE))?,
                gate(file, &name(names::V_FFN_GATE))?,
            ))
        } else {
            None
        };
        Ok(Self {
            attn_norm: LayerNorm::load(
                file,
                &name(names::V_ATTN_NORM_WEIGHT),
                &name(names::V_ATTN_NORM_BIAS),
                e,
            )?,
            attn_q: linear(names::V_ATTN_Q, e, e)?,
            attn_k: linear(names::V_ATTN_K, e, e)?,
            attn_v: linear(names::V_ATTN_V, e, e)?,
            attn_output: linear(names::V_ATTN_OUTPUT, e, e)?,
            ffn_norm: LayerNorm::load(
                file,
                &name(names::V_FFN_NORM_WEIGHT),
                &name(names::V_FFN_NORM_BIAS),
                e,
            )?,
            ffn_up: linear(names::V_FFN_UP_WEIGHT, e, f)?,
            ffn_up_bias: vector(file, &name(names::V_FFN_UP_BIAS), f)?,
            ffn_down: linear(names::V_FFN_DOWN_WEIGHT, f, e)?,
            ffn_down_bias: vector(file, &name(names::V_FFN_DOWN_BIAS), e)?,
            gates,
        })
    }

    /// `x += g_attn·attn(LN1(x))`, `x += g_ffn·mlp(LN2(x))` over all tokens of the image.
    fn forward(
        &self,
        w: &Weights,
        cfg: &VisionConfig,
        flagged: &[bool],
        x: &mut [f32],
        s: &mut Scratch,
    ) -> Result<(), ModelError> {
        let (gate_attn, gate_ffn) = self.gates.unwrap_or((1.0, 1.0));
        self.attn_norm.apply(x, cfg.norm_eps, &mut s.xn);
        linear(
            w,
            &s.xn,
            &mut [
                (&self.attn_q, &mut s.q),
                (&self.attn_k, &mut s.k),
                (&self.attn_v, &mut s.v),
            ],
        )?;
        let shape = DenseShape {
            n_tok: flagged.len(),
            n_head: cfg.n_head,
            head_dim: cfg.head_dim(),
        };
        // The fast path (int8 matrices) also runs attention in bf16; exact runs stay f32.
        let attend = if self.attn_q.int8.is_some() && !w.reference_matmul {
            dense_attention::attend_bf16
        } else {
            dense_attention::attend
        };
        attend(
            w.kernels.isa,
            &shape,
            &s.q,
            &s.k,
            &s.v,
            Some(flagged),
            &mut s.attn,
        );
        linear(w, &s.attn, &mut [(&self.attn_output, &mut s.proj)])?;
        add_scaled(x, &s.proj, gate_attn);

        self.ffn_norm.apply(x, cfg.norm_eps, &mut s.xn);
        linear(w, &s.xn, &mut [(&self.ffn_up, &mut s.ff)])?;
        add_bias(&mut s.ff, &self.ffn_up_bias);
        gelu_in_place(&mut s.ff);
        linear(w, &s.ff, &mut [(&self.ffn_down, &mut s.proj)])?;
        add_bias(&mut s.proj, &self.ffn_down_bias);
        add_scaled(x, &s.proj, gate_ffn);
        Ok(())
    }
}

/// Activation buffers of one image, reused by every layer.
struct Scratch {
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
}

impl Scratch {
    fn new(cfg: &VisionConfig, n: usize) -> Self {
        let e = n * cfg.n_embd;
        Self {
            xn: vec![0.0; e],
            q: vec![0.0; e],
            k: vec![0.0; e],
            v: vec![0.0; e],
            attn: vec![0.0; e],
            proj: vec![0.0; e],
            ff: vec![0.0; n * cfg.n_ff],
        }
    }
}

/// The vision encoder and projector over a mapped mllama GGUF.
pub struct VisionEncoder {
    file: Arc<GgufFile>,
    pub config: VisionConfig,
    /// The patch convolution as a matrix: `n_embd` rows of `(channel, ky, kx)` inputs.
    patch_embd: Linear,
    class_embd: Vec<f32>,
    /// `[n_tile_tokens][n_embd]`.
    position_embd: Vec<f32>,
    /// 1 − tanh(g).
    position_gate: f32,
    /// Per aspect ratio `[max_tiles][n_tile_tokens][n_embd]`.
    tile_position_embd: AspectTable,
    /// tanh(g) of the same HF gate.
    tile_position_gate: f32,
    /// Per aspect ratio `[max_tiles][n_embd]`.
    pre_tile_embd: AspectTable,
    pre_tile_gate: f32,
    post_tile_embd: AspectTable,
    post_tile_gate: f32,
    pre_ln: LayerNorm,
    post_ln: LayerNorm,
    layers: Vec<EncoderLayer>,
    global_layers: Vec<EncoderLayer>,
    projector: Linear,
    projector_bias: Vec<f32>,
    reference_matmul: bool,
    kernels: &'static KernelSet,
}

/// Progress of [`VisionEncoder::encode_with`]: `done` of `total` encoder layers have run.
#[derive(Clone, Copy, Debug)]
pub struct VisionProgress {
    pub done: usize,
    pub total: usize,
}

impl VisionEncoder {
    pub fn load(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let cfg = VisionConfig::from_gguf(&file)?;
        let f = &*file;
        let e = cfg.n_embd;
        let tokens = cfg.n_tile_tokens();
        let int8 = int8_enabled();
        let tile_position_embd =
            AspectTable::load(f, names::V_TILE_POSITION_EMBD, cfg.max_tiles * tokens * e)?;
        let pre_tile_embd =
            AspectTable::load(f, names::V_PRE_TILE_POSITION_EMBD, cfg.max_tiles * e)?;
        let post_tile_embd =
            AspectTable::load(f, names::V_POST_TILE_POSITION_EMBD, cfg.max_tiles * e)?;
        let layers = (0..cfg.n_layer)
            .map(|i| EncoderLayer::load(f, &cfg, &|s| names::v_blk(i, s), false, int8))
            .collect::<Result<Vec<_>, _>>()?;
        let global_layers = (0..cfg.n_global_layer)
            .map(|i| EncoderLayer::load(f, &cfg, &|s| names::v_global_blk(i, s), true, int8))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patch_embd: Linear::new(f, patch_matrix(f, &cfg)?, int8)?,
            class_embd: vector(f, names::V_CLASS_EMBD, e)?,
            position_embd: vector(f, names::V_POSITION_EMBD, tokens * e)?,
            position_gate: gate(f, names::V_POSITION_EMBD_GATE)?,
            tile_position_embd,
            tile_position_gate: gate(f, names::V_TILE_POSITION_EMBD_GATE)?,
            pre_tile_embd,
            pre_tile_gate: gate(f, names::V_PRE_TILE_POSITION_EMBD_GATE)?,
            post_tile_embd,
            post_tile_gate: gate(f, names::V_POST_TILE_POSITION_EMBD_GATE)?,
            pre_ln: LayerNorm::load(f, names::V_PRE_LN_WEIGHT, names::V_PRE_LN_BIAS, e)?,
            post_ln: LayerNorm::load(f, names::V_POST_LN_WEIGHT, names::V_POST_LN_BIAS, e)?,
            layers,
            global_layers,
            projector: Linear::new(
                f,
                matrix(f, names::MM_PROJ_WEIGHT, cfg.output_dim(), cfg.text_embd)?,
                int8,
            )?,
            projector_bias: vector(f, names::MM_PROJ_BIAS, cfg.text_embd)?,
            reference_matmul: false,
            kernels: lumen_kernels::kernels(),
            config: cfg,
            file,
        })
    }

    /// Dequantized-f32 matmuls with f64 sums instead of the kernels' activation formats
    /// (validation only; F32 weights already compute in f32).
    pub fn set_reference_matmul(&mut self, on: bool) {
        self.reference_matmul = on;
    }

    /// Uses another kernel set (A/B tests, benchmarks); the default is `lumen_kernels::kernels()`.
    pub fn set_kernels(&mut self, kernels: &'static KernelSet) {
        self.kernels = kernels;
    }

    fn weights(&self) -> Weights<'_> {
        Weights {
            file: &self.file,
            kernels: self.kernels,
            reference_matmul: self.reference_matmul,
        }
    }

    /// The cross-attention states of one image: `[max_tiles · n_tile_tokens][text_embd]`
    /// (tile-major, then the tile's tokens, class token first). `pixels` is
    /// `[max_tiles][channels][size][size]`, `aspect_mask` has one entry per tile slot (non-zero
    /// for the image's real tiles).
    pub fn encode(
        &self,
        pixels: &[f32],
        aspect_ratio_id: usize,
        aspect_mask: &[u8],
    ) -> Result<Vec<f32>, ModelError> {
        self.encode_with(pixels, aspect_ratio_id, aspect_mask, &mut |_| {})
    }

    /// [`Self::encode`] with a progress report after every encoder layer.
    pub fn encode_with(
        &self,
        pixels: &[f32],
        aspect_ratio_id: usize,
        aspect_mask: &[u8],
        on_progress: &mut dyn FnMut(VisionProgress),
    ) -> Result<Vec<f32>, ModelError> {
        let features = self.features(pixels, aspect_ratio_id, aspect_mask, on_progress)?;
        self.project(&features)
    }

    /// The projector: `[rows][output_dim]` features → `[rows][text_embd]` states.
    pub fn project(&self, features: &[f32]) -> Result<Vec<f32>, ModelError> {
        let rows = features.len() / self.config.output_dim();
        let mut out = vec![0.0f32; rows * self.config.text_embd];
        linear(
            &self.weights(),
            features,
            &mut [(&self.projector, &mut out)],
        )?;
        add_bias(&mut out, &self.projector_bias);
        Ok(out)
    }

    /// The encoder output before the projector: `[max_tiles][n_tile_tokens][output_dim]`, each
    /// row the global encoder's output followed by the intermediate features interleaved
    /// (feature `d·k_count + k` is dimension `d` of the `k`-th listed layer's input).
    pub fn features(
        &self,
        pixels: &[f32],
        aspect_ratio_id: usize,
        aspect_mask: &[u8],
        on_progress: &mut dyn FnMut(VisionProgress),
    ) -> Result<Vec<f32>, ModelError> {
        self.check_input(pixels, aspect_ratio_id, aspect_mask)?;
        let cfg = &self.config;
        let w = self.weights();
        let padded_len = cfg.n_tile_tokens_padded();
        let n = cfg.max_tiles * padded_len;
        let flagged: Vec<bool> = (0..n)
            .map(|t| aspect_mask[t / padded_len] == 0 || t % padded_len >= cfg.n_tile_tokens())
            .collect();
        let mut x = self.embed(&w, pixels, aspect_ratio_id)?;
        let mut s = Scratch::new(cfg, n);
        let total = cfg.n_layer + cfg.n_global_layer;
        let mut intermediates = Vec::with_capacity(cfg.intermediate_layers.len());
        for (il, layer) in self.layers.iter().enumerate() {
            for _ in cfg.intermediate_layers.iter().filter(|&&k| k == il) {
                intermediates.push(x.clone());
            }
            layer.forward(&w, cfg, &flagged, &mut x, &mut s)?;
            on_progress(VisionProgress {
                done: il + 1,
                total,
            });
        }
        // Intermediates in the order the file lists the layers.
        let order = intermediate_order(&cfg.intermediate_layers);
        let intermediates: Vec<Vec<f32>> = order
            .into_iter()
            .map(|i| std::mem::take(&mut intermediates[i]))
            .collect();

        self.post_ln.apply(&x, cfg.norm_eps, &mut s.xn);
        std::mem::swap(&mut x, &mut s.xn);
        let post = self.post_tile_embd.row(&self.file, aspect_ratio_id)?;
        self.add_per_tile(&mut x, &post, self.post_tile_gate, padded_len);
        for (ig, layer) in self.global_layers.iter().enumerate() {
            layer.forward(&w, cfg, &flagged, &mut x, &mut s)?;
            on_progress(VisionProgress {
                done: cfg.n_layer + ig + 1,
                total,
            });
        }
        Ok(self.assemble_features(&x, &intermediates))
    }

    fn bad_input(&self, message: String) -> ModelError {
        ModelError::BadConfig {
            path: self.file.path().to_path_buf(),
            message: format!("image input does not fit the vision encoder: {message}"),
        }
    }

    fn check_input(
        &self,
        pixels: &[f32],
        aspect_ratio_id: usize,
        aspect_mask: &[u8],
    ) -> Result<(), ModelError> {
        let cfg = &self.config;
        if pixels.len() != cfg.pixels_len() {
            return Err(self.bad_input(format!(
                "{} pixel values, expected {} ({} tiles of {}×{}×{})",
                pixels.len(),
                cfg.pixels_len(),
                cfg.max_tiles,
                cfg.n_channels,
                cfg.image_size,
                cfg.image_size
            )));
        }
        if aspect_mask.len() != cfg.max_tiles {
            return Err(self.bad_input(format!(
                "aspect ratio mask has {} entries, expected {}",
                aspect_mask.len(),
                cfg.max_tiles
            )));
        }
        if aspect_mask.iter().all(|&m| m == 0) {
            return Err(self.bad_input("aspect ratio mask has no real tile".to_string()));
        }
        let n_ratios = [
            &self.tile_position_embd,
            &self.pre_tile_embd,
            &self.post_tile_embd,
        ]
        .iter()
        .map(|t| t.n_rows)
        .min()
        .unwrap_or(0);
        if aspect_ratio_id >= n_ratios {
            let table = [
                &self.tile_position_embd,
                &self.pre_tile_embd,
                &self.post_tile_embd,
            ]
            .into_iter()
            .find(|t| t.n_rows == n_ratios)
            .map_or("", |t| t.name);
            return Err(self.bad_input(format!(
                "aspect ratio id {aspect_ratio_id} is outside the {n_ratios} rows of '{table}'"
            )));
        }
        Ok(())
    }

    /// Steps 1–6 of spec §2.3: patches, embeddings, `layernorm_pre`, padded tokens.
    /// Returns `[max_tiles · n_tile_tokens_padded][n_embd]` (pad tokens zero).
    fn embed(
        &self,
        w: &Weights,
        pixels: &[f32],
        aspect_ratio_id: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config;
        let e = cfg.n_embd;
        let (n_patches, tokens) = (cfg.n_patches(), cfg.n_tile_tokens());
        let patches = extract_patches(cfg, pixels);
        let mut patch_out = vec![0.0f32; cfg.max_tiles * n_patches * e];
        linear(w, &patches, &mut [(&self.patch_embd, &mut patch_out)])?;
        self.add_per_tile(
            &mut patch_out,
            &self.pre_tile_embd.row(&self.file, aspect_ratio_id)?,
            self.pre_tile_gate,
            n_patches,
        );

        // Class token first, then the patches; positional and tile embeddings per token.
        let tile_pos = self.tile_position_embd.row(&self.file, aspect_ratio_id)?;
        let mut x = vec![0.0f32; cfg.max_tiles * tokens * e];
        x.par_chunks_mut(tokens * e)
            .zip(patch_out.par_chunks(n_patches * e))
            .zip(tile_pos.par_chunks(tokens * e))
            .for_each(|((tile, patches), tile_pos)| {
                tile[..e].copy_from_slice(&self.class_embd);
                tile[e..].copy_from_slice(patches);
                for ((v, &p), &t) in tile.iter_mut().zip(&self.position_embd).zip(tile_pos) {
                    *v += self.position_gate * p + self.tile_position_gate * t;
                }
            });

        let padded_len = cfg.n_tile_tokens_padded();
        let mut out = vec![0.0f32; cfg.max_tiles * padded_len * e];
        out.par_chunks_mut(padded_len * e)
            .zip(x.par_chunks(tokens * e))
            .for_each(|(dst, src)| {
                self.pre_ln
                    .apply_rows(src, cfg.norm_eps, &mut dst[..tokens * e]);
            });
        Ok(out)
    }

    /// `x[tile][t] += gate · table[tile]` for the `per_tile` tokens of every tile slot.
    fn add_per_tile(&self, x: &mut [f32], table: &[f32], gate: f32, per_tile: usize) {
        let e = self.config.n_embd;
        x.par_chunks_mut(per_tile * e)
            .zip(table.par_chunks(e))
            .for_each(|(tile, emb)| {
                for row in tile.chunks_exact_mut(e) {
                    for (v, &t) in row.iter_mut().zip(emb) {
                        *v += gate * t;
                    }
                }
            });
    }

    /// Drops the pad tokens and joins `[global | intermediates interleaved]` per token.
    fn assemble_features(&self, global: &[f32], intermediates: &[Vec<f32>]) -> Vec<f32> {
        let cfg = &self.config;
        let (e, dim) = (cfg.n_embd, cfg.output_dim());
        let (tokens, padded_len) = (cfg.n_tile_tokens(), cfg.n_tile_tokens_padded());
        let k_count = intermediates.len();
        let mut out = vec![0.0f32; cfg.max_tiles * tokens * dim];
        out.par_chunks_mut(dim).enumerate().for_each(|(r, row)| {
            let src = (r / tokens) * padded_len + r % tokens;
            row[..e].copy_from_slice(&global[src * e..][..e]);
            for (k, inter) in intermediates.iter().enumerate() {
                for (d, &v) in inter[src * e..][..e].iter().enumerate() {
                    row[e + d * k_count + k] = v;
                }
            }
        });
        out
    }
}

impl LayerNorm {
    /// [`Self::apply`] without the parallel split (callers already run per tile).
    fn apply_rows(&self, x: &[f32], eps: f32, out: &mut [f32]) {
        let n = self.weight.len();
        for (o, row) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
            layer_norm_row(row, &self.weight, &self.bias, eps, o);
        }
    }
}

/// For each listed layer index (in file order), the position of its saved input in the order
/// the local encoder saved them (ascending layer, file order among equal indices).
fn intermediate_order(layers: &[usize]) -> Vec<usize> {
    let mut saved: Vec<(usize, usize)> = layers.iter().copied().zip(0..).collect();
    saved.sort();
    let mut order = vec![0; layers.len()];
    for (pos, &(_, listed)) in saved.iter().enumerate() {
        order[listed] = pos;
    }
    order
}

/// The patch convolution's weight (GGUF `[p, p, channels, n_embd]`, PyTorch
/// `[n_embd, channels, p, p]`) as a matrix of `n_embd` rows over `(channel, ky, kx)` inputs.
fn patch_matrix(file: &GgufFile, cfg: &VisionConfig) -> Result<Matrix, ModelError> {
    let name = names::V_PATCH_EMBD;
    let t = file.require(name)?;
    let p = cfg.patch_size;
    let expected = [p, p, cfg.n_channels, cfg.n_embd];
    let row_bytes = t.ty.row_bytes(cfg.patch_len());
    match row_bytes {
        Some(_) if t.shape == expected && t.ty.is_weight_format() => Ok(Matrix {
            ty: t.ty,
            rows: cfg.n_embd,
            cols: cfg.patch_len(),
            offset: t.offset,
            n_bytes: t.n_bytes,
            packed: None,
        }),
        _ => Err(ModelError::BadShape {
            path: file.path().to_path_buf(),
            tensor: format!("{name} (type {})", t.ty.name()),
            expected: expected.to_vec(),
            found: t.shape.clone(),
        }),
    }
}

/// `[max_tiles · n_patches][channels · p · p]`: patch rows in row-major order within each
/// tile, each patch's values ordered (channel, ky, kx) like the convolution weight.
fn extract_patches(cfg: &VisionConfig, pixels: &[f32]) -> Vec<f32> {
    let (p, side, size) = (cfg.patch_size, cfg.patches_per_side(), cfg.image_size);
    let (c_count, patch_len, n_patches) = (cfg.n_channels, cfg.patch_len(), cfg.n_patches());
    let mut out = vec![0.0f32; cfg.max_tiles * n_patches * patch_len];
    out.par_chunks_mut(patch_len)
        .enumerate()
        .for_each(|(r, patch)| {
            let (tile, pi) = (r / n_patches, r % n_patches);
            let (py, px) = (pi / side, pi % side);
            for c in 0..c_count {
                let plane = &pixels[(tile * c_count + c) * size * size..][..size * size];
                for ky in 0..p {
                    let src = &plane[(py * p + ky) * size + px * p..][..p];
                    patch[(c * p + ky) * p..][..p].copy_from_slice(src);
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // erf at a few points (Abramowitz & Stegun table 7.1).
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.0, -0.842_700_8),
            (4.0, 0.999_999_98),
        ] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn intermediates_follow_the_listed_order() {
        assert_eq!(intermediate_order(&[3, 7, 15, 23, 30]), vec![0, 1, 2, 3, 4]);
        assert_eq!(intermediate_order(&[7, 3]), vec![1, 0]);
    }

    #[test]
    fn layer_norm_matches_the_definition() {
        let x = [1.0f32, 2.0, 3.0, 6.0];
        let (w, b) = ([1.0f32, 2.0, 1.0, 1.0], [0.0f32, 0.0, 1.0, 0.0]);
        let mut out = [0.0f32; 4];
        layer_norm_row(&x, &w, &b, 0.0, &mut out);
        // mean 3, var (4+1+0+9)/4 = 3.5.
        let s = 3.5f32.sqrt();
        let want = [-2.0 / s, -2.0 / s, 1.0, 3.0 / s];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6);
        }
    }

    #[test]
    fn patches_are_ordered_channel_row_column() {
        let cfg = VisionConfig {
            n_embd: 4,
            n_ff: 4,
            n_head: 1,
            n_layer: 1,
            n_global_layer: 0,
            intermediate_layers: vec![],
            norm_eps: 1e-5,
            image_size: 4,
            patch_size: 2,
            max_tiles: 2,
            n_channels: 2,
            text_embd: 4,
        };
        let pixels: Vec<f32> = (0..cfg.pixels_len()).map(|i| i as f32).collect();
        let patches = extract_patches(&cfg, &pixels);
        // Tile 1, patch (row 1, col 0): channel 0 rows 2..4, cols 0..2, then channel 1.
        let r = cfg.n_patches() + 2;
        let tile1 = 2 * 16;
        assert_eq!(
            &patches[r * 8..][..8],
            &[
                (tile1 + 8) as f32,
                (tile1 + 9) as f32,
                (tile1 + 12) as f32,
                (tile1 + 13) as f32,
                (tile1 + 16 + 8) as f32,
                (tile1 + 16 + 9) as f32,
                (tile1 + 16 + 12) as f32,
                (tile1 + 16 + 13) as f32,
            ]
        );
    }
}
