//! Random-weight GGUFs with the exact shapes of real Llama models, for speed measurements
//! without downloading weights. Quantized blocks are random bytes with scales chosen so the
//! dequantized weights have a plausible spread (~0.02), which keeps activations finite.
//! llama.cpp loads these files too: they carry a byte-level vocabulary of the right size.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use half::f16;
use lumen::gguf::writer::{write_streaming, MetaValue, TensorHeader};
use lumen::gguf::{keys, names};
use lumen::kernels::GgmlType;
use lumen::registry::SyntheticShape;

mod mllama_shapes;

use mllama_shapes::vision_shape;
#[cfg(test)]
use mllama_shapes::VisionShape;
use mllama_shapes::{mllama_metadata, mllama_plan};

/// Weight types for a synthetic file: one type for every matrix, or llama.cpp's Q4_K_M mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightMix {
    Pure(GgmlType),
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the output (or tied embeddings) and for
    /// attn_v / ffn_down on the layers `use_more_bits` picks.
    Q4KM,
}

impl WeightMix {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        if name.eq_ignore_ascii_case("Q4_K_M") {
            return Ok(Self::Q4KM);
        }
        match GgmlType::from_name(name) {
            Some(t) if t.is_weight_format() => Ok(Self::Pure(t)),
            _ => bail!("unknown weight type '{name}' (F32, F16, BF16, Q4_0 … Q6_K, Q4_K_M)"),
        }
    }

    fn file_type_name(self) -> String {
        match self {
            Self::Pure(t) => t.name().to_string(),
            Self::Q4KM => "Q4_K_M".into(),
        }
    }

    /// The type of one matrix: `role` is the GGUF tensor suffix, `layer` its block (if any).
    fn type_for(self, role: &str, layer: Option<usize>, n_layer: usize) -> GgmlType {
        match self {
            Self::Pure(t) => t,
            Self::Q4KM => {
                // llama.cpp's use_more_bits: the first and last eighth, and every third between.
                let more_bits = |i: usize| {
                    i < n_layer / 8 || i >= 7 * n_layer / 8 || (i - n_layer / 8) % 3 == 2
                };
                match (role, layer) {
                    (names::OUTPUT, _) => GgmlType::Q6_K,
                    (names::ATTN_V | names::FFN_DOWN, Some(i)) if more_bits(i) => GgmlType::Q6_K,
                    _ => GgmlType::Q4_K,
                }
            }
        }
    }
}

struct Planned {
    name: String,
    ty: GgmlType,
    shape: Vec<usize>,
    n_bytes: usize,
}

fn plan(shape: &SyntheticShape, mix: WeightMix) -> anyhow::Result<Vec<Planned>> {
    let (e, ff, q, kv) = (
        shape.n_embd,
        shape.n_ff,
        shape.n_head * shape.head_dim,
        shape.n_head_kv * shape.head_dim,
    );
    let mut out = Vec::new();
    let mut push = |name: String, ty: GgmlType, dims: Vec<usize>| -> anyhow::Result<()> {
        let n_bytes = ty.row_bytes(dims[0]).with_context(|| {
            format!(
                "{name}: row of {} does not fit {} blocks",
                dims[0],
                ty.name()
            )
        })? * dims[1..].iter().product::<usize>();
        out.push(Planned {
            name,
            ty,
            shape: dims,
            n_bytes,
        });
        Ok(())
    };
    // With tied embeddings the embedding matrix is also the output head: give it the output type.
    let embd_role = if shape.tied_embeddings {
        names::OUTPUT
    } else {
        names::TOKEN_EMBD
    };
    push(
        names::TOKEN_EMBD.into(),
        mix.type_for(embd_role, None, shape.n_layer),
        vec![e, shape.n_vocab],
    )?;
    if shape.llama3_rope_factor.is_some() {
        push(
            names::ROPE_FREQS.into(),
            GgmlType::F32,
            vec![shape.head_dim / 2],
        )?;
    }
    for i in 0..shape.n_layer {
        let ty = |role| mix.type_for(role, Some(i), shape.n_layer);
        push(names::blk(i, names::ATTN_NORM), GgmlType::F32, vec![e])?;
        push(names::blk(i, names::ATTN_Q), ty(names::ATTN_Q), vec![e, q])?;
        push(names::blk(i, names::ATTN_K), ty(names::ATTN_K), vec![e, kv])?;
        push(names::blk(i, names::ATTN_V), ty(names::ATTN_V), vec![e, kv])?;
        push(
            names::blk(i, names::ATTN_OUTPUT),
            ty(names::ATTN_OUTPUT),
            vec![q, e],
        )?;
        push(names::blk(i, names::FFN_NORM), GgmlType::F32, vec![e])?;
        push(
            names::blk(i, names::FFN_GATE),
            ty(names::FFN_GATE),
            vec![e, ff],
        )?;
        push(names::blk(i, names::FFN_UP), ty(names::FFN_UP), vec![e, ff])?;
        push(
            names::blk(i, names::FFN_DOWN),
            ty(names::FFN_DOWN),
            vec![ff, e],
        )?;
    }
    push(names::OUTPUT_NORM.into(), GgmlType::F32, vec![e])?;
    if !shape.tied_embeddings {
        push(
            names::OUTPUT.into(),
            mix.type_for(names::OUTPUT, None, shape.n_layer),
            vec![e, shape.n_vocab],
        )?;
    }
    Ok(out)
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the rest are shifted
/// past 255. llama.cpp looks up the newline token through it, so the vocabulary starts with
/// these 256 characters.
fn byte_level_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return b as char;
    }
    let shifted = (0..=b).filter(|&x| !printable(x)).count() - 1;
    char::from_u32(256 + shifted as u32).unwrap_or('?')
}

/// The architecture, a name saying what the file is, and the text model's hyper-parameters.
fn general_and_text_metadata(
    arch: &str,
    shape: &SyntheticShape,
    mix: WeightMix,
) -> Vec<(String, MetaValue)> {
    let mut md = vec![
        (
            keys::GENERAL_ARCHITECTURE.into(),
            MetaValue::Str(arch.into()),
        ),
        (
            keys::GENERAL_NAME.into(),
            MetaValue::Str(format!("synthetic {} {}", shape.id, mix.file_type_name())),
        ),
    ];
    md.extend(text_hparams(arch, shape));
    md
}

fn metadata(shape: &SyntheticShape, mix: WeightMix) -> Vec<(String, MetaValue)> {
    let mut md = general_and_text_metadata("llama", shape, mix);
    md.extend(vocab_metadata(shape.n_vocab, &[]));
    md
}

/// The Llama hyper-parameter keys under `arch`.
fn text_hparams(arch: &str, shape: &SyntheticShape) -> Vec<(String, MetaValue)> {
    let k = |s| keys::arch_key(arch, s);
    let u32v = |v: usize| MetaValue::U32(v as u32);
    vec![
        (k(keys::VOCAB_SIZE), u32v(shape.n_vocab)),
        (k(keys::CONTEXT_LENGTH), u32v(shape.context_length)),
        (k(keys::EMBEDDING_LENGTH), u32v(shape.n_embd)),
        (k(keys::BLOCK_COUNT), u32v(shape.n_layer)),
        (k(keys::FEED_FORWARD_LENGTH), u32v(shape.n_ff)),
        (k(keys::HEAD_COUNT), u32v(shape.n_head)),
        (k(keys::HEAD_COUNT_KV), u32v(shape.n_head_kv)),
        (k(keys::ROPE_DIMENSION_COUNT), u32v(shape.head_dim)),
        (k(keys::ROPE_FREQ_BASE), MetaValue::F32(shape.rope_theta)),
        (k(keys::RMS_EPS), MetaValue::F32(1e-5)),
    ]
}

/// A byte-level BPE vocabulary of `n_vocab` tokens followed by the control tokens `extra`.
fn vocab_metadata(n_vocab: usize, extra: &[&str]) -> Vec<(String, MetaValue)> {
    let mut tokens: Vec<MetaValue> = (0..=255u8)
        .map(|b| MetaValue::Str(byte_level_char(b).to_string()))
        .collect();
    // Token 256 is the one merge's result, so the vocabulary is a valid byte-level BPE.
    tokens.push(MetaValue::Str("ĠĠ".into()));
    tokens.extend((257..n_vocab).map(|i| MetaValue::Str(format!("<synth_{i}>"))));
    tokens.extend(extra.iter().map(|t| MetaValue::Str(t.to_string())));
    let mut types = vec![MetaValue::I32(1); n_vocab];
    types.extend(extra.iter().map(|_| MetaValue::I32(3)));
    vec![
        (keys::TOKENIZER_MODEL.into(), MetaValue::Str("gpt2".into())),
        (keys::TOKENIZER_PRE.into(), MetaValue::Str("default".into())),
        (keys::TOKENIZER_TOKENS.into(), MetaValue::Array(tokens)),
        (keys::TOKENIZER_TOKEN_TYPE.into(), MetaValue::Array(types)),
        (
            keys::TOKENIZER_MERGES.into(),
            MetaValue::Array(vec![MetaValue::Str("Ġ Ġ".into())]),
        ),
        (keys::TOKENIZER_BOS_ID.into(), MetaValue::U32(0)),
        (keys::TOKENIZER_EOS_ID.into(), MetaValue::U32(1)),
    ]
}

/// Fast deterministic bytes (xorshift64*), so multi-gigabyte files write at disk speed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Byte offsets of the f16 scale fields in one block, and the magnitude to give them.
fn scale_fields(ty: GgmlType) -> (&'static [usize], f32) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => (&[0], 0.004),
        GgmlType::Q8_0 => (&[0], 0.0003),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (&[0, 2], 0.003),
        GgmlType::Q2_K => (&[80, 82], 0.0005),
        GgmlType::Q3_K => (&[108], 0.0005),
        GgmlType::Q4_K | GgmlType::Q5_K => (&[0, 2], 0.00003),
        GgmlType::Q6_K => (&[208], 0.00003),
        _ => (&[], 0.0),
    }
}

/// One tensor's bytes: random blocks with moderate scales, or ones for norms.
fn tensor_bytes(
    t: &Planned,
    rng: &mut Rng,
    rope_freqs: &[f32],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if t.name == names::ROPE_FREQS {
        return out.write_all(
            &rope_freqs
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect::<Vec<_>>(),
        );
    }
    // Norm weights are ones; other vectors (biases, gates, embeddings) small random values.
    let is_norm = t.shape.len() == 1 && (t.name.contains("norm") || t.name.contains("_ln."));
    let block_bytes = t.ty.block_bytes();
    let mut buf = vec![0u8; (1 << 20) / block_bytes * block_bytes];
    let mut left = t.n_bytes;
    while left > 0 {
        let chunk = &mut buf[..left.min((1 << 20) / block_bytes * block_bytes)];
        match t.ty {
            GgmlType::F32 => {
                for v in chunk.chunks_exact_mut(4) {
                    let x = if is_norm { 1.0 } else { rng.unit() * 0.03 };
                    v.copy_from_slice(&x.to_le_bytes());
                }
            }
            GgmlType::F16 => {
                for v in chunk.chunks_exact_mut(2) {
                    v.copy_from_slice(&f16::from_f32(rng.unit() * 0.03).to_le_bytes());
                }
            }
            GgmlType::BF16 => {
                for v in chunk.chunks_exact_mut(2) {
                    v.copy_from_slice(&half::bf16::from_f32(rng.unit() * 0.03).to_le_bytes());
                }
            }
            ty => {
                rng.fill(chunk);
                let (fields, magnitude) = scale_fields(ty);
                for block in chunk.chunks_exact_mut(block_bytes) {
                    for &at in fields {
                        let d = f16::from_f32(magnitude * (0.5 + 0.5 * rng.unit().abs()));
                        block[at..at + 2].copy_from_slice(&d.to_le_bytes());
                    }
                }
            }
        }
        out.write_all(chunk)?;
        left -= chunk.len();
    }
    Ok(())
}

/// llama3 rope scaling factors (`rope_freqs.weight`), as llama.cpp's converter computes them.
fn llama3_rope_freqs(shape: &SyntheticShape) -> Vec<f32> {
    let Some(factor) = shape.llama3_rope_factor else {
        return Vec::new();
    };
    let (low, high, orig) = (1.0f64, 4.0f64, 8192.0f64);
    (0..shape.head_dim / 2)
        .map(|i| {
            let freq = (shape.rope_theta as f64).powf(-2.0 * i as f64 / shape.head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < orig / high {
                1.0
            } else if wavelen > orig / low {
                factor
            } else {
                let smooth = (orig / wavelen - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor as f64 + smooth)) as f32
            }
        })
        .collect()
}

/// Writes the synthetic model; returns its size in bytes.
pub fn synth(
    shape: &SyntheticShape,
    mix: WeightMix,
    path: &Path,
    seed: u64,
) -> anyhow::Result<u64> {
    let (planned, metadata) = match vision_shape(&shape.id) {
        Some(vision) => (
            mllama_plan(shape, &vision, mix)?,
            mllama_metadata(shape, &vision, mix),
        ),
        None => (plan(shape, mix)?, metadata(shape, mix)),
    };
    write_planned(shape, &planned, &metadata, path, seed)
}

/// Streams the planned tensors' random bytes after `metadata`.
fn write_planned(
    shape: &SyntheticShape,
    planned: &[Planned],
    metadata: &[(String, MetaValue)],
    path: &Path,
    seed: u64,
) -> anyhow::Result<u64> {
    let headers: Vec<TensorHeader> = planned
        .iter()
        .map(|t| TensorHeader {
            name: &t.name,
            ty: t.ty,
            shape: &t.shape,
            n_bytes: t.n_bytes,
        })
        .collect();
    let rope_freqs = llama3_rope_freqs(shape);
    let mut rng = Rng(seed | 1);
    write_streaming(path, metadata, &headers, |i, out| {
        tensor_bytes(&planned[i], &mut rng, &rope_freqs, out)
    })
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(std::fs::metadata(path)?.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lumen::gguf::GgufFile;
    use lumen::model::{Llama, Logits};

    use super::*;

    fn tiny_shape(tied: bool) -> SyntheticShape {
        SyntheticShape {
            id: "tiny".into(),
            n_vocab: 300,
            n_embd: 256,
            n_layer: 8,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 64,
            rope_theta: 500000.0,
            llama3_rope_factor: Some(32.0),
            context_length: 128,
            tied_embeddings: tied,
        }
    }

    #[test]
    fn every_type_and_the_q4_k_m_mix_load_and_give_finite_logits() {
        let dir = std::env::temp_dir().join(format!("lumen-synth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, tied) in [
            ("Q4_0", true),
            ("Q4_1", false),
            ("Q8_0", true),
            ("Q4_K_M", true),
            ("Q6_K", false),
            ("F16", true),
        ] {
            let path = dir.join(format!("{name}.gguf"));
            synth(&tiny_shape(tied), WeightMix::parse(name).unwrap(), &path, 7).unwrap();
            let file = Arc::new(GgufFile::open(&path).unwrap());
            let expected_tensors = 2 + 9 * 8 + 1 + usize::from(!tied);
            assert_eq!(file.tensors().len(), expected_tensors, "{name}");
            let model = Llama::load(file.clone()).unwrap();
            let vocab = lumen::tokenizer::VocabSpec::from_gguf(file.metadata()).unwrap();
            let tokenizer = lumen::tokenizer::Tokenizer::from_spec(vocab)
                .expect("the synthetic vocabulary is valid BPE");
            let ids = tokenizer.encode("a b\n", false).unwrap();
            assert_eq!(
                ids,
                vec![97, 32, 98, 10],
                "byte tokens sit at their byte values"
            );
            assert_eq!(tokenizer.decode(&ids), "a b\n");
            let mut cache = model.new_cache(8);
            let logits = model.forward(&[1, 2, 3], &mut cache, Logits::Last).unwrap();
            assert!(
                logits.iter().all(|l| l.is_finite()),
                "{name}: non-finite logits"
            );
            if name == "Q4_K_M" {
                // use_more_bits picks layer 0 (first eighth) but not layer 1.
                assert_eq!(
                    file.tensor_info("blk.0.ffn_down.weight").unwrap().ty,
                    GgmlType::Q6_K
                );
                assert_eq!(
                    file.tensor_info("blk.1.ffn_down.weight").unwrap().ty,
                    GgmlType::Q4_K
                );
                assert_eq!(
                    file.tensor_info("token_embd.weight").unwrap().ty,
                    GgmlType::Q6_K
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The text and vision shape of `../shared/fixtures/tiny-mllama`.
    fn tiny_mllama_shape() -> (SyntheticShape, VisionShape) {
        let text = SyntheticShape {
            id: "tiny-mllama".into(),
            n_vocab: 128256,
            n_embd: 64,
            n_layer: 5,
            n_ff: 128,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            rope_theta: 500000.0,
            llama3_rope_factor: Some(8.0),
            context_length: 131072,
            tied_embeddings: false,
        };
        let vision = VisionShape {
            cross_attention_layers: vec![1, 3],
            n_embd: 32,
            n_ff: 64,
            n_head: 2,
            n_layer: 4,
            n_global_layer: 2,
            intermediate_layers: vec![1, 3],
            image_size: 56,
            patch_size: 14,
            max_num_tiles: 4,
            n_channels: 3,
        };
        (text, vision)
    }

    fn write_mllama(text: &SyntheticShape, vision: &VisionShape, mix: &str, path: &Path) {
        let mix = WeightMix::parse(mix).unwrap();
        let planned = mllama_plan(text, vision, mix).unwrap();
        let md = mllama_metadata(text, vision, mix);
        write_planned(text, &planned, &md, path, 7).unwrap();
    }

    /// (name, type, shape) in file order.
    fn layout(file: &GgufFile) -> Vec<(String, GgmlType, Vec<usize>)> {
        file.tensors()
            .iter()
            .map(|t| (t.name.clone(), t.ty, t.shape.clone()))
            .collect()
    }

    fn mllama_keys(file: &GgufFile) -> Vec<(String, MetaValue)> {
        let mut kv = lumen::gguf::kv::read_kv(file).unwrap();
        kv.retain(|(k, _)| {
            k.starts_with("mllama.") && k != "mllama.attention.layer_norm_rms_epsilon"
        });
        kv.sort_by(|a, b| a.0.cmp(&b.0));
        kv
    }

    /// The synthetic mllama layout is the converter's (itself checked against an independent
    /// expectation in tools/tests/convert_mllama.rs), and its Q4_K_M types are exactly what
    /// `lumen quantize` chooses for the converted file.
    #[test]
    fn mllama_synth_matches_the_converter_and_the_quantizer() {
        use lumen_tools::convert::{self, ConvertOptions, FileType};
        use lumen_tools::quantize::{self, QuantizeOptions};
        let tmp = tempfile::tempdir().unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny-mllama");
        let converted = tmp.path().join("converted-f16.gguf");
        let opts = ConvertOptions {
            input: fixture,
            output: Some(converted.clone()),
            outtype: Some(FileType::F16),
            ..Default::default()
        };
        convert::convert(&opts, &mut |_| {}).unwrap();
        let quantized = tmp.path().join("converted-q4km.gguf");
        let q = QuantizeOptions::new(&converted, &quantized, quantize::FileType::Q4_K_M);
        quantize::quantize(&q, &mut |_| {}).unwrap();

        let (text, vision) = tiny_mllama_shape();
        let by_name = |f: &GgufFile| {
            let mut l = layout(f);
            l.sort_by(|a, b| a.0.cmp(&b.0));
            l
        };
        let synth_f16 = tmp.path().join("synth-f16.gguf");
        write_mllama(&text, &vision, "F16", &synth_f16);
        let (a, b) = (
            GgufFile::open(&synth_f16).unwrap(),
            GgufFile::open(&converted).unwrap(),
        );
        assert_eq!(by_name(&a), by_name(&b));
        assert_eq!(mllama_keys(&a), mllama_keys(&b));
        let tokens = a.metadata().get_str_array(keys::TOKENIZER_TOKENS).unwrap();
        assert_eq!(tokens.len(), 128257);
        assert_eq!(tokens[128256], "<|image|>");

        let synth_q = tmp.path().join("synth-q4km.gguf");
        write_mllama(&text, &vision, "Q4_K_M", &synth_q);
        let (a, b) = (
            GgufFile::open(&synth_q).unwrap(),
            GgufFile::open(&quantized).unwrap(),
        );
        assert_eq!(layout(&a), layout(&b), "same types and llama.cpp order");
    }

    #[test]
    fn llama_3_2_11b_vision_q4_k_m_plan() {
        let registry = lumen::registry::Registry::builtin();
        let text = registry
            .synthetic
            .iter()
            .find(|s| s.id == "llama-3.2-11b-vision")
            .expect("models.toml has the shape");
        let vision = vision_shape(&text.id).unwrap();
        assert_eq!(
            vision.cross_attention_layers,
            [3, 8, 13, 18, 23, 28, 33, 38]
        );
        let plan = mllama_plan(text, &vision, WeightMix::Q4KM).unwrap();
        let ty = |name: &str| plan.iter().find(|t| t.name == name).unwrap().ty;
        let shape = |name: &str| plan.iter().find(|t| t.name == name).unwrap().shape.clone();
        assert_eq!(shape("token_embd.weight"), [4096, 128264]);
        assert_eq!(shape("v.tile_position_embd.weight"), [8_197_120, 9]);
        assert_eq!(shape("mm.0.weight"), [7680, 4096]);
        assert_eq!(ty("output.weight"), GgmlType::Q6_K);
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.3.cross_attn_q_proj.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.3.cross_attn_v_proj.weight"), GgmlType::Q4_K);
        // use_more_bits over the 40 ffn_down (layer 0: first eighth) and the 32 attn_v.
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6_K);
        assert_eq!(ty("blk.5.ffn_down.weight"), GgmlType::Q4_K);
        assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q6_K);
        assert_eq!(ty("v.blk.0.attn_q.weight"), GgmlType::F16);
        assert_eq!(ty("v.global.blk.7.ffn_down.weight"), GgmlType::F16);
        assert_eq!(ty("v.position_embd.weight"), GgmlType::F32);
        assert_eq!(ty("blk.3.cross_attn_attn_gate"), GgmlType::F32);
        // rope_freqs, embeddings/head; 32 self + 8 cross layers; patch, class, position and
        // tile tables with their gates, pre/post LN; 32 local + 8 global layers; projector.
        let n_tensors = 1 + 3 + 32 * 9 + 8 * 13 + (2 + 2 + 2 + 2 + 2 + 4) + 32 * 12 + 8 * 14 + 2;
        assert_eq!(plan.len(), n_tensors);
        let gib = plan.iter().map(|t| t.n_bytes).sum::<usize>() as f64 / (1u64 << 30) as f64;
        assert!((6.0..8.0).contains(&gib), "{gib:.2} GiB");
    }

    #[test]
    fn llama3_rope_factors_match_the_converter_formula_at_the_ends() {
        let f = llama3_rope_freqs(&tiny_shape(true));
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0, "high frequencies are not scaled");
        assert_eq!(f[31], 32.0, "low frequencies are divided by the factor");
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn byte_level_alphabet_is_the_gpt2_map() {
        assert_eq!(byte_level_char(b'A'), 'A');
        assert_eq!(byte_level_char(b' '), 'Ġ');
        assert_eq!(byte_level_char(b'\n'), 'Ċ');
        let all: std::collections::HashSet<char> = (0..=255u8).map(byte_level_char).collect();
        assert_eq!(all.len(), 256);
    }
}
