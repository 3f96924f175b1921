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

mod config;
mod ops;

pub use config::VisionConfig;
use ops::{add_bias, add_scaled, gelu_in_place, int16_enabled, linear, LayerNorm, Linear};

use std::sync::Arc;

use lumen_kernels::dense_attention::{self, DenseShape};
use lumen_kernels::dense_gemm::int16::I16Matrix;
use lumen_kernels::{GgmlType, KernelSet};
use rayon::prelude::*;

use crate::gguf::{names, GgufFile};
use crate::model::weights::{matrix, vector, Matrix, Weights};
use crate::model::ModelError;

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
        int16: bool,
    ) -> Result<Self, ModelError> {
        let (e, f) = (cfg.n_embd, cfg.n_ff);
        let linear =
            |suffix, cols, rows| Linear::new(file, matrix(file, &name(suffix), cols, rows)?, int16);
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

    fn linears(&self) -> [&Linear; 6] {
        [
            &self.attn_q,
            &self.attn_k,
            &self.attn_v,
            &self.attn_output,
            &self.ffn_up,
            &self.ffn_down,
        ]
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
        // The fast path (integer matrices) also runs attention in bf16; exact runs stay f32.
        let attend = if self.attn_q.int16_usable(w).is_some() {
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
        let int16 = int16_enabled();
        let tile_position_embd =
            AspectTable::load(f, names::V_TILE_POSITION_EMBD, cfg.max_tiles * tokens * e)?;
        let pre_tile_embd =
            AspectTable::load(f, names::V_PRE_TILE_POSITION_EMBD, cfg.max_tiles * e)?;
        let post_tile_embd =
            AspectTable::load(f, names::V_POST_TILE_POSITION_EMBD, cfg.max_tiles * e)?;
        let layers = (0..cfg.n_layer)
            .map(|i| EncoderLayer::load(f, &cfg, &|s| names::v_blk(i, s), false, int16))
            .collect::<Result<Vec<_>, _>>()?;
        let global_layers = (0..cfg.n_global_layer)
            .map(|i| EncoderLayer::load(f, &cfg, &|s| names::v_global_blk(i, s), true, int16))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patch_embd: Linear::new(f, patch_matrix(f, &cfg)?, int16)?,
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
                int16,
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
    /// Heap bytes of the matrices' integer copies (the start-up line's repacked weights).
    pub fn packed_bytes(&self) -> usize {
        let layers = self.layers.iter().chain(&self.global_layers);
        layers
            .flat_map(EncoderLayer::linears)
            .chain([&self.patch_embd, &self.projector])
            .filter_map(|l| l.int16.as_ref())
            .map(I16Matrix::bytes)
            .sum()
    }

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
    fn intermediates_follow_the_listed_order() {
        assert_eq!(intermediate_order(&[3, 7, 15, 23, 30]), vec![0, 1, 2, 3, 4]);
        assert_eq!(intermediate_order(&[7, 3]), vec![1, 0]);
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
