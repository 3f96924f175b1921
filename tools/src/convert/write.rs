//! The output side: `general.*` metadata and streaming the tensors through the tools' shared
//! writer (see [`crate::output`]: path checks, free space, temporary file + rename).

use std::io::Write;
use std::path::Path;

use lumen::gguf::keys;
use lumen::gguf::writer::{MetaValue, TensorHeader};
use lumen::kernels::GgmlType;

use crate::output::{self, RowSource};

use super::hf::SamplingDefaults;
use super::llama::{self, Source, TensorPlan};
use super::safetensors::Checkpoint;
use super::vocab::Vocab;
use super::{ConvertError, Event, FileType, Summary, TestHooks};

/// All metadata of a file of architecture `arch` in llama.cpp's order: architecture, type,
/// sampling defaults, naming, the hyper-parameter keys `hparams` (which carry
/// `general.file_type` where the architecture puts it), quantization version, vocabulary.
pub fn metadata_for(
    dir: &Path,
    arch: &str,
    hparams: Vec<(String, MetaValue)>,
    plan: &[TensorPlan],
    vocab: &Vocab,
) -> Vec<(String, MetaValue)> {
    let mut md: Vec<(String, MetaValue)> = vec![
        (
            keys::GENERAL_ARCHITECTURE.into(),
            MetaValue::Str(arch.into()),
        ),
        (keys::GENERAL_TYPE.into(), MetaValue::Str("model".into())),
    ];
    md.extend(sampling_metadata(&SamplingDefaults::read(dir)));
    md.push((
        keys::GENERAL_NAME.into(),
        MetaValue::Str(title_case(&super::dir_name(dir))),
    ));
    let n_params: usize = plan.iter().map(|t| t.shape.iter().product::<usize>()).sum();
    md.push((
        keys::GENERAL_SIZE_LABEL.into(),
        MetaValue::Str(size_label(n_params as u64)),
    ));
    md.extend(hparams);
    md.push((
        keys::GENERAL_QUANTIZATION_VERSION.into(),
        MetaValue::U32(output::QUANTIZATION_VERSION),
    ));
    md.extend(vocab.metadata());
    md
}

fn sampling_metadata(s: &SamplingDefaults) -> Vec<(String, MetaValue)> {
    let floats = [
        (keys::GENERAL_SAMPLING_TOP_P, s.top_p),
        (keys::GENERAL_SAMPLING_MIN_P, s.min_p),
        (keys::GENERAL_SAMPLING_TEMP, s.temp),
        (keys::GENERAL_SAMPLING_PENALTY_REPEAT, s.penalty_repeat),
    ];
    let top_k = s
        .top_k
        .map(|k| (keys::GENERAL_SAMPLING_TOP_K.to_string(), MetaValue::I32(k)));
    top_k
        .into_iter()
        .chain(
            floats
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), MetaValue::F32(v)))),
        )
        .collect()
}

/// gguf-py's `id_to_title`: `tiny-llama` → `Tiny Llama`; words with capitals or that look like
/// versions (`v2`, `3b`) are kept; like Python's `str.title`, a letter after a non-letter
/// starts a new capitalised run.
fn title_case(id: &str) -> String {
    let is_version = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_digit())
            || (w.starts_with('v')
                && w.len() > 1
                && w[1..].chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    id.replace('-', " ")
        .split_whitespace()
        .map(|w| {
            let lower = w.chars().any(char::is_alphabetic) && !w.chars().any(char::is_uppercase);
            if !lower || is_version(w) {
                return w.to_string();
            }
            let mut prev_letter = false;
            w.chars()
                .map(|c| {
                    let out = if prev_letter {
                        c
                    } else {
                        c.to_ascii_uppercase()
                    };
                    prev_letter = c.is_alphabetic();
                    out
                })
                .collect()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// gguf-py's `model_weight_count_rounded_notation(n, min_digits=2)`: `8.4M`, `1.2B`, `135M`.
fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = match n {
        n if n > 1e12 => (n * 1e-12, "T"),
        n if n > 1e9 => (n * 1e-9, "B"),
        n if n > 1e6 => (n * 1e-6, "M"),
        n => (n * 1e-3, "K"),
    };
    let int_digits = format!("{}", scaled.round() as u64)
        .trim_start_matches('0')
        .len();
    let decimals = 2usize.saturating_sub(int_digits);
    format!("{scaled:.decimals$}{suffix}")
}

/// Checks free space, then streams header and tensors into `output`.
pub fn write(
    output: &Path,
    metadata: &[(String, MetaValue)],
    plan: &[TensorPlan],
    ckpt: &Checkpoint,
    ft: FileType,
    hooks: &TestHooks,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    let headers: Vec<TensorHeader> = plan
        .iter()
        .map(|t| TensorHeader {
            name: &t.name,
            ty: t.ty,
            shape: &t.shape,
            n_bytes: t.n_bytes(),
        })
        .collect();
    let total = output::file_size(metadata, &headers);
    output::check_space(output, total, hooks)?;
    on_event(Event::Start {
        output,
        file_type: ft,
        n_tensors: plan.len(),
        total_bytes: total,
    });
    let result = output::write_gguf(output, metadata, &headers, hooks, |i, w| {
        write_tensor(ckpt, &plan[i], w)?;
        on_event(Event::Tensor {
            index: i,
            tensor: &plan[i],
        });
        Ok(())
    });
    result.map_err(|source| ConvertError::Write {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(Summary {
        output: output.to_path_buf(),
        file_type: ft,
        n_tensors: plan.len(),
        bytes: total,
    })
}

/// Writes one tensor's bytes: source rows (permuted for Q/K) converted to the output type.
fn write_tensor(ckpt: &Checkpoint, t: &TensorPlan, out: &mut dyn Write) -> std::io::Result<()> {
    let (cols, rows) = t.cols_rows();
    match &t.source {
        Source::Generated(values) => {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let src = RowSource {
                name: &t.name,
                src: &bytes,
                src_ty: GgmlType::F32,
                cols,
                rows,
            };
            output::write_rows(&src, t.ty, |r| r, out)
        }
        Source::Checkpoint {
            tensor,
            permute_heads,
            ..
        } => {
            // The plan only admits readable dtypes; this guards the invariant.
            let src_ty = tensor
                .dtype
                .as_ref()
                .map_err(|d| std::io::Error::other(format!("unsupported dtype {d}")))?
                .ggml();
            let src = RowSource {
                name: &t.name,
                src: ckpt.bytes(tensor),
                src_ty,
                cols,
                rows,
            };
            let heads = *permute_heads;
            output::write_rows(
                &src,
                t.ty,
                |r| heads.map_or(r, |h| llama::permuted_source_row(r, rows, h)),
                out,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_size_labels_match_gguf_py() {
        assert_eq!(title_case("tiny-llama"), "Tiny Llama");
        assert_eq!(title_case("SmolLM2-135M"), "SmolLM2 135M");
        assert_eq!(title_case("llama3b-v2"), "Llama3B v2");
        assert_eq!(size_label(8_356_296), "8.4M");
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(1_235_814_400), "1.2B");
    }
}
