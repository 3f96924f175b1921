//! GGUF → GGUF quantization, the way llama.cpp's `llama-quantize` does it without an
//! importance matrix: the same file types and per-tensor mixes ([`presets`]), the same
//! reference quantizers (`lumen_kernels::quantize_weights`), llama.cpp's tensor order, all
//! metadata kept (`general.file_type` and `general.quantization_version` set, split keys
//! dropped). Rows are quantized in parallel; the output streams into a temporary file beside
//! the target that is renamed into place only when complete.
//!
//! The library reports progress through a callback; only the binary prints.

pub mod presets;

use std::io::Write;
use std::path::PathBuf;

use lumen::gguf::kv::read_kv;
use lumen::gguf::writer::{MetaValue, TensorHeader, ALIGNMENT};
use lumen::gguf::{keys, GgufError, GgufFile, TensorInfo};
use lumen::kernels::GgmlType;

use crate::output::{self, OutputError, RowSource, TestHooks};
use presets::TensorDesc;
pub use presets::{FileType, ModelInfo, TypeError, TypeOptions};

/// Everything that can stop a quantization. Each variant names the file and, where there is
/// one, the tensor and types.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unknown TYPE {0:?} (expected one of {names})", names = FileType::names())]
    UnknownType(String),
    #[error("unknown tensor type {0:?} for {1} (expected F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K or Q6_K)")]
    UnknownTensorType(String, &'static str),
    #[error("{path}: tensor '{tensor}' is already quantized ({from}); requantizing it to {to} loses accuracy, pass --allow-requantize to do it anyway")]
    NeedsRequantize {
        path: PathBuf,
        tensor: String,
        from: GgmlType,
        to: GgmlType,
    },
    #[error("{path}: {source}")]
    Type {
        path: PathBuf,
        #[source]
        source: TypeError,
    },
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("writing {path}: {source} (nothing was left behind)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to quantize, into what, and how.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub input: PathBuf,
    pub output: PathBuf,
    pub file_type: FileType,
    /// `--allow-requantize`: quantized input tensors may be dequantized and quantized again.
    pub allow_requantize: bool,
    pub types: TypeOptions,
    /// Overwrite an existing output (never the input).
    pub force: bool,
    /// Fault injection for tests.
    #[doc(hidden)]
    pub hooks: TestHooks,
}

impl QuantizeOptions {
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>, file_type: FileType) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            file_type,
            allow_requantize: false,
            types: TypeOptions::default(),
            force: false,
            hooks: TestHooks::default(),
        }
    }
}

/// Parses a `--output-tensor-type` / `--token-embedding-type` value (a ggml type name).
pub fn parse_tensor_type(s: &str, option: &'static str) -> Result<GgmlType, QuantizeError> {
    GgmlType::from_name(s)
        .filter(|t| t.is_weight_format())
        .ok_or_else(|| QuantizeError::UnknownTensorType(s.to_string(), option))
}

/// One tensor of the output: where it comes from and what it becomes.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    /// GGUF order, innermost first.
    pub shape: Vec<usize>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub old_bytes: usize,
    pub new_bytes: usize,
}

/// Progress reports.
pub type Event<'a> = crate::output::Event<'a, FileType, TensorReport>;

/// What was written.
#[derive(Debug)]
pub struct Summary {
    pub output: PathBuf,
    pub file_type: FileType,
    pub n_tensors: usize,
    pub n_elements: u64,
    /// Tensor data of the input and of the output.
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// Size of the output file.
    pub file_bytes: u64,
}

/// Quantizes `opts.input` into `opts.output` and reports progress through `on_event`. On any
/// error no output and no temporary file are left behind, and the input is never touched.
pub fn quantize(
    opts: &QuantizeOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, QuantizeError> {
    output::check_output(&opts.output, std::slice::from_ref(&opts.input), opts.force)?;
    let file = GgufFile::open(&opts.input)?;
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    let order = llama_order(&names);
    let tensors: Vec<&TensorInfo> = order.iter().map(|&i| &file.tensors()[i]).collect();
    let plan = plan(&file, &tensors, opts)?;
    let metadata = output_metadata(&file, opts.file_type)?;
    let headers: Vec<TensorHeader> = plan
        .iter()
        .map(|t| TensorHeader {
            name: &t.name,
            ty: t.to,
            shape: &t.shape,
            n_bytes: t.new_bytes,
        })
        .collect();
    let total = output::file_size(&metadata, &headers);
    output::check_space(&opts.output, total, &opts.hooks)?;
    on_event(Event::Start {
        output: &opts.output,
        file_type: opts.file_type,
        n_tensors: plan.len(),
        total_bytes: total,
    });
    let result = output::write_gguf(&opts.output, &metadata, &headers, &opts.hooks, |i, w| {
        write_tensor(&file, tensors[i], &plan[i], w)?;
        on_event(Event::Tensor {
            index: i,
            tensor: &plan[i],
        });
        Ok(())
    });
    result.map_err(|source| QuantizeError::Write {
        path: opts.output.clone(),
        source,
    })?;
    Ok(Summary {
        output: opts.output.clone(),
        file_type: opts.file_type,
        n_tensors: plan.len(),
        n_elements: tensors.iter().map(|t| t.n_elements() as u64).sum(),
        old_bytes: plan.iter().map(|t| t.old_bytes as u64).sum(),
        new_bytes: plan.iter().map(|t| t.new_bytes as u64).sum(),
        file_bytes: total,
    })
}

/// The `N` of a `blk.N.…` tensor name, read the way llama.cpp's `sscanf("blk.%d.")` does.
pub fn layer_number(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

/// llama.cpp's tensor order (its loader's `weight_name_comparer`): tensors outside the
/// `blk.N.` layers first, then layer by layer, by name within each group. The mixes count
/// `attn_v` and `ffn_down` tensors in this order, and the output file lists them in it.
/// Returns the permutation of `names`.
pub fn llama_order(names: &[&str]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&i| (layer_number(names[i]).unwrap_or(-1), names[i]));
    order
}

/// The model facts the mixes need, from `{arch}.*` metadata.
fn model_info(file: &GgufFile) -> Result<ModelInfo, GgufError> {
    let arch = file.architecture()?.to_string();
    let md = file.metadata();
    let get = |suffix: &str| -> usize {
        let key = keys::arch_key(&arch, suffix);
        // Absent, or a per-layer array (some architectures): 0, which no rule singles out.
        md.get_u64(&key).map_or(0, |v| v as usize)
    };
    let n_head = get(keys::HEAD_COUNT);
    let n_head_kv = match get(keys::HEAD_COUNT_KV) {
        0 => n_head,
        n => n,
    };
    Ok(ModelInfo {
        n_layer: get(keys::BLOCK_COUNT),
        n_head,
        n_head_kv,
        n_expert: get(keys::EXPERT_COUNT),
        arch,
    })
}

/// Output type and sizes of every tensor; refuses requantization unless allowed.
fn plan(
    file: &GgufFile,
    tensors: &[&TensorInfo],
    opts: &QuantizeOptions,
) -> Result<Vec<TensorReport>, QuantizeError> {
    let model = model_info(file)?;
    let descs: Vec<TensorDesc> = tensors
        .iter()
        .map(|t| TensorDesc {
            name: &t.name,
            ty: t.ty,
            shape: &t.shape,
        })
        .collect();
    let types =
        presets::choose_types(&descs, opts.file_type, &model, &opts.types).map_err(|source| {
            QuantizeError::Type {
                path: file.path().to_path_buf(),
                source,
            }
        })?;
    tensors
        .iter()
        .zip(types)
        .map(|(t, to)| {
            let requantize = to != t.ty && t.ty.block_elems() > 1;
            if requantize && !opts.allow_requantize {
                return Err(QuantizeError::NeedsRequantize {
                    path: file.path().to_path_buf(),
                    tensor: t.name.clone(),
                    from: t.ty,
                    to,
                });
            }
            let (cols, rows) = cols_rows(t);
            Ok(TensorReport {
                name: t.name.clone(),
                shape: t.shape.clone(),
                from: t.ty,
                to,
                old_bytes: t.n_bytes,
                // choose_types only returns types whose blocks divide the rows.
                new_bytes: to.row_bytes(cols).unwrap_or(0) * rows,
            })
        })
        .collect()
}

fn cols_rows(t: &TensorInfo) -> (usize, usize) {
    let cols = t.shape.first().copied().unwrap_or(1);
    (cols, t.shape.iter().skip(1).product())
}

/// The input's metadata in its order, as llama.cpp writes it: split keys dropped,
/// `general.quantization_version` and `general.file_type` moved to the end with new values.
/// A non-default `general.alignment` is dropped too: the writer aligns to 32 bytes.
fn output_metadata(file: &GgufFile, ft: FileType) -> Result<Vec<(String, MetaValue)>, GgufError> {
    let replaced = [
        keys::GENERAL_QUANTIZATION_VERSION,
        keys::GENERAL_FILE_TYPE,
        keys::SPLIT_NO,
        keys::SPLIT_COUNT,
        keys::SPLIT_TENSORS_COUNT,
    ];
    let mut md: Vec<(String, MetaValue)> = read_kv(file)?
        .into_iter()
        .filter(|(k, v)| {
            let dropped = replaced.contains(&k.as_str())
                || (k == keys::GENERAL_ALIGNMENT && *v != MetaValue::U32(ALIGNMENT as u32));
            !dropped
        })
        .collect();
    md.push((
        keys::GENERAL_QUANTIZATION_VERSION.into(),
        MetaValue::U32(output::QUANTIZATION_VERSION),
    ));
    md.push((keys::GENERAL_FILE_TYPE.into(), MetaValue::U32(ft.id())));
    Ok(md)
}

/// Writes one tensor: its bytes as they are when the type stays, else its rows converted.
fn write_tensor(
    file: &GgufFile,
    t: &TensorInfo,
    r: &TensorReport,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let bytes = file.tensor_bytes(t);
    if r.from == r.to {
        return out.write_all(bytes);
    }
    let (cols, rows) = cols_rows(t);
    let src = RowSource {
        name: &t.name,
        src: bytes,
        src_ty: t.ty,
        cols,
        rows,
    };
    output::write_rows(&src, r.to, |row| row, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_parse_like_sscanf() {
        assert_eq!(layer_number("blk.12.attn_v.weight"), Some(12));
        assert_eq!(layer_number("blk.3x"), Some(3));
        assert_eq!(layer_number("output.weight"), None);
        assert_eq!(layer_number("blk.attn"), None);
    }
}
