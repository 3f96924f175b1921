//! The output side: `general.*` metadata, output-path checks, free space, and streaming the
//! tensors through Lumen's GGUF writer (temporary file + fsync + rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use lumen::gguf::keys;
use lumen::gguf::writer::{encode_header, write_streaming, MetaValue, TensorHeader};
use lumen::kernels::{dequantize_row, quantize_row, GgmlType, KernelError};
use rayon::prelude::*;

use super::hf::{HfConfig, SamplingDefaults};
use super::llama::{self, Source, TensorPlan};
use super::safetensors::Checkpoint;
use super::vocab::Vocab;
use super::{ConvertError, Event, FileType, Summary, TestHooks};

/// ggml's `GGML_QNT_VERSION`, which llama.cpp's converter writes.
const QUANTIZATION_VERSION: u32 = 2;
/// Rows are converted in parallel in chunks of about this many output bytes, so memory stays
/// bounded whatever the tensor size.
const CHUNK_BYTES: usize = 32 << 20;

/// All metadata in llama.cpp's order: architecture, type, sampling defaults, naming,
/// hyper-parameters, quantization version, vocabulary.
pub fn metadata(
    dir: &Path,
    cfg: &HfConfig,
    ft: FileType,
    plan: &[TensorPlan],
    vocab: &Vocab,
) -> Vec<(String, MetaValue)> {
    let mut md: Vec<(String, MetaValue)> = vec![
        (
            keys::GENERAL_ARCHITECTURE.into(),
            MetaValue::Str(llama::GGUF_ARCH.into()),
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
    md.extend(llama::hparams_metadata(cfg, ft));
    md.push((
        keys::GENERAL_QUANTIZATION_VERSION.into(),
        MetaValue::U32(QUANTIZATION_VERSION),
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

/// Refuses a directory, an input file (even with `--force`) and an existing file without
/// `--force`.
pub fn check_output(output: &Path, inputs: &[PathBuf], force: bool) -> Result<(), ConvertError> {
    if output.is_dir() {
        return Err(ConvertError::OutputIsDir(output.to_path_buf()));
    }
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let canon_parent = parent.canonicalize().map_err(|source| ConvertError::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let target = match output.canonicalize() {
        Ok(p) => p,
        Err(_) => canon_parent.join(output.file_name().unwrap_or_default()),
    };
    let is_input = inputs
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .any(|p| p == target);
    if is_input {
        return Err(ConvertError::OutputIsInput(output.to_path_buf()));
    }
    if output.exists() && !force {
        return Err(ConvertError::OutputExists(output.to_path_buf()));
    }
    Ok(())
}

/// Bytes available to us on the file system holding `dir`.
#[cfg(unix)]
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs buffer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field widths differ between platforms
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn free_space(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
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
    let total = file_size(metadata, &headers);
    check_space(output, total, hooks)?;
    on_event(Event::Start {
        output,
        file_type: ft,
        n_tensors: plan.len(),
        total_bytes: total,
    });
    let result = write_streaming(output, metadata, &headers, |i, w| {
        if hooks.fail_at_tensor == Some(i) {
            return Err(std::io::Error::other("injected write failure (test hook)"));
        }
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

fn file_size(metadata: &[(String, MetaValue)], headers: &[TensorHeader]) -> u64 {
    let (header, offsets) = encode_header(metadata, headers);
    let data_end = offsets
        .last()
        .zip(headers.last())
        .map_or(0, |(off, h)| off + h.n_bytes);
    (header.len() + data_end.next_multiple_of(lumen::gguf::writer::ALIGNMENT)) as u64
}

fn check_space(output: &Path, needed: u64, hooks: &TestHooks) -> Result<(), ConvertError> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let available = match hooks.free_bytes {
        Some(b) => b,
        None => free_space(dir).map_err(|source| ConvertError::Io {
            path: dir.to_path_buf(),
            source,
        })?,
    };
    if available < needed {
        return Err(ConvertError::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Writes one tensor's bytes: source rows (permuted for Q/K) converted to the output type,
/// a chunk of rows at a time, the rows of a chunk in parallel.
fn write_tensor(ckpt: &Checkpoint, t: &TensorPlan, out: &mut dyn Write) -> std::io::Result<()> {
    match &t.source {
        Source::Generated(values) => {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            write_rows(&bytes, GgmlType::F32, t, None, out)
        }
        Source::Checkpoint {
            tensor,
            permute_heads,
            ..
        } => {
            // The plan only admits readable dtypes; this guards the invariant.
            let ty = tensor
                .dtype
                .as_ref()
                .map_err(|d| std::io::Error::other(format!("unsupported dtype {d}")))?
                .ggml();
            write_rows(ckpt.bytes(tensor), ty, t, *permute_heads, out)
        }
    }
}

fn write_rows(
    src: &[u8],
    src_ty: GgmlType,
    t: &TensorPlan,
    permute_heads: Option<usize>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let (cols, rows) = t.cols_rows();
    let src_row = cols * src_ty.block_bytes();
    let dst_row = t.ty.row_bytes(cols).unwrap_or(0);
    if src.len() != rows * src_row || dst_row == 0 {
        return Err(std::io::Error::other(format!(
            "tensor '{}': {} source bytes for {rows} rows of {cols} {src_ty}",
            t.name,
            src.len()
        )));
    }
    let chunk_rows = (CHUNK_BYTES / dst_row).clamp(1, rows.max(1));
    let mut buf = vec![0u8; chunk_rows * dst_row];
    for start in (0..rows).step_by(chunk_rows) {
        let n = chunk_rows.min(rows - start);
        let dst = &mut buf[..n * dst_row];
        dst.par_chunks_mut(dst_row)
            .enumerate()
            .try_for_each_init(Vec::new, |f32_row, (i, d)| {
                let r = start + i;
                let sr = permute_heads.map_or(r, |h| llama::permuted_source_row(r, rows, h));
                convert_row(
                    src_ty,
                    &src[sr * src_row..(sr + 1) * src_row],
                    t.ty,
                    d,
                    f32_row,
                )
            })
            .map_err(std::io::Error::other)?;
        out.write_all(dst)?;
    }
    Ok(())
}

/// One row from `src_ty` to `dst_ty`: a byte copy when they agree, else through f32 with
/// Lumen's kernels (ggml's rounding).
fn convert_row(
    src_ty: GgmlType,
    src: &[u8],
    dst_ty: GgmlType,
    dst: &mut [u8],
    f32_row: &mut Vec<f32>,
) -> Result<(), KernelError> {
    if src_ty == dst_ty {
        dst.copy_from_slice(src);
        return Ok(());
    }
    f32_row.resize(src.len() / src_ty.block_bytes(), 0.0);
    dequantize_row(src_ty, src, f32_row)?;
    quantize_row(dst_ty, f32_row, dst)
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
