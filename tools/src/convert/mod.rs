//! Hugging Face checkpoint directory → GGUF, the way llama.cpp's `convert_hf_to_gguf.py` does
//! it (same metadata keys, tensor names, types and layout), streamed one tensor at a time into
//! a temporary file beside the output that is renamed into place only when complete.
//!
//! The library reports progress through a callback; only the binary prints.

pub mod family;
mod hf;
pub mod llama;
pub mod mllama;
mod pre_tokenizer;
pub mod safetensors;
mod spm;
mod vocab;
mod write;

use std::path::{Path, PathBuf};

use lumen::kernels::GgmlType;

pub use crate::output::{free_space, TestHooks};
pub use hf::{HfConfig, SamplingDefaults};
pub use llama::TensorPlan;

/// Everything that can stop a conversion. Each variant names the file and, where there is
/// one, the key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{dir}: no config.json: not a Hugging Face model directory")]
    MissingConfig { dir: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: key '{key}': {message}")]
    BadKey {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: architecture {found:?} is not supported (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("{index}: shard {shard} (holding tensor '{tensor}') does not exist")]
    MissingShard {
        index: PathBuf,
        shard: PathBuf,
        tensor: String,
    },
    #[error("{index}: {message}")]
    IndexMismatch { index: PathBuf, message: String },
    #[error("{path}: invalid safetensors header: {message}")]
    BadHeader { path: PathBuf, message: String },
    #[error("{path}: truncated: its header describes {needed} bytes but the file has {file_len}")]
    TruncatedShard {
        path: PathBuf,
        needed: u64,
        file_len: u64,
    },
    #[error("{path}: tensor '{tensor}' has dtype {dtype} (supported: F32, F16, BF16)")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: tensor '{tensor}' has shape {found:?} but config.json implies {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor '{tensor}' is not part of the model config.json describes")]
    UnexpectedTensor { path: PathBuf, tensor: String },
    #[error("{dir}: tensor '{tensor}' is missing from the checkpoint")]
    MissingTensor { dir: PathBuf, tensor: String },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: unknown BPE pre-tokenizer (llama.cpp probe hash {hash}); known: {known}")]
    UnknownPreTokenizer {
        path: PathBuf,
        hash: String,
        known: String,
    },
    #[error("unknown --outtype {0:?} (expected f32, f16, bf16, q8_0 or auto)")]
    UnknownOutType(String),
    #[error("--outtype {name}: the converter writes f32, f16, bf16 or q8_0; for {upper} run two commands:\n  lumen convert {dir} --outtype auto -o model.gguf\n  lumen quantize model.gguf model-{upper}.gguf {upper}", upper = name.to_ascii_uppercase(), dir = "HF_DIR")]
    NeedsQuantize { name: String },
    /// The output path is refused (an input, a directory, an existing file without `--force`)
    /// or its file system lacks the space.
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("writing {path}: {source} (nothing was left behind)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `--outtype` as given: a file type, or `auto` (decided from the checkpoint's dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    Auto,
    Fixed(FileType),
}

/// Names `lumen quantize` accepts but the converter does not write itself.
const QUANTIZE_ONLY: &[&str] = &[
    "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k", "q4_k_s",
    "q4_k_m", "q5_k", "q5_k_s", "q5_k_m", "q6_k",
];

impl std::str::FromStr for OutType {
    type Err = ConvertError;

    fn from_str(s: &str) -> Result<Self, ConvertError> {
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "auto" => OutType::Auto,
            "f32" => OutType::Fixed(FileType::F32),
            "f16" => OutType::Fixed(FileType::F16),
            "bf16" => OutType::Fixed(FileType::BF16),
            "q8_0" => OutType::Fixed(FileType::Q8_0),
            q if QUANTIZE_ONLY.contains(&q) => {
                return Err(ConvertError::NeedsQuantize { name: s.into() })
            }
            _ => return Err(ConvertError::UnknownOutType(s.into())),
        })
    }
}

/// The file types the converter writes (llama.cpp's `LlamaFileType` ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
}

impl FileType {
    pub fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q8_0 => 7,
            FileType::BF16 => 32,
        }
    }

    /// The type of the matrices (1-D tensors stay F32).
    pub fn tensor_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
        }
    }

    pub fn name(self) -> &'static str {
        self.tensor_type().name()
    }
}

/// What to convert and where.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    pub input: PathBuf,
    /// Default: `HF_DIR/<dir name>-<TYPE>.gguf`.
    pub output: Option<PathBuf>,
    /// `None` = auto.
    pub outtype: Option<FileType>,
    pub force: bool,
    /// Fault injection for tests (a full disk cannot be made reliably as root).
    #[doc(hidden)]
    pub hooks: TestHooks,
}

/// Progress reports.
pub type Event<'a> = crate::output::Event<'a, FileType, TensorPlan>;

/// What was written.
#[derive(Debug)]
pub struct Summary {
    pub output: PathBuf,
    pub file_type: FileType,
    pub n_tensors: usize,
    pub bytes: u64,
}

/// Converts `opts.input` and reports progress through `on_event`. On any error no output and
/// no temporary file are left behind.
pub fn convert(
    opts: &ConvertOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    let dir = &opts.input;
    let json = hf::read_config_json(dir)?;
    let architecture = hf::architecture(&json)?;
    if mllama::HF_ARCHITECTURES.contains(&architecture.as_str()) {
        return mllama::convert(opts, json, on_event);
    }
    let Some(f) = family::Family::from_hf(&architecture) else {
        let supported: Vec<&str> = family::hf_architectures()
            .chain(mllama::HF_ARCHITECTURES.iter().copied())
            .collect();
        return Err(ConvertError::UnsupportedArchitecture {
            path: json.path.clone(),
            found: architecture,
            supported: supported.join(", "),
        });
    };
    family::convert(opts, json, f, on_event)
}

/// The common end of every conversion: the output path (default
/// `HF_DIR/<dir name>-<TYPE>.gguf`) checked against the inputs, then the write.
fn write_output(
    opts: &ConvertOptions,
    ckpt: &safetensors::Checkpoint,
    ft: FileType,
    plan: &[TensorPlan],
    metadata: &[(String, lumen::gguf::writer::MetaValue)],
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary, ConvertError> {
    let dir = &opts.input;
    let output = match &opts.output {
        Some(p) => p.clone(),
        None => dir.join(format!("{}-{}.gguf", dir_name(dir), ft.name())),
    };
    crate::output::check_output(&output, &input_files(dir, ckpt), opts.force)?;
    write::write(&output, metadata, plan, ckpt, ft, &opts.hooks, on_event)
}

/// llama.cpp's `auto`: the dtype of the first matrix if it is BF16 or F16, else F16.
fn guess_file_type(ckpt: &safetensors::Checkpoint) -> FileType {
    use safetensors::SrcDtype;
    ckpt.tensors
        .values()
        .filter(|t| t.shape.len() >= 2)
        .find_map(|t| match t.dtype {
            Ok(SrcDtype::BF16) => Some(FileType::BF16),
            Ok(SrcDtype::F16) => Some(FileType::F16),
            _ => None,
        })
        .unwrap_or(FileType::F16)
}

fn dir_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

/// Every file the conversion reads.
fn input_files(dir: &Path, ckpt: &safetensors::Checkpoint) -> Vec<PathBuf> {
    let mut files = vec![
        dir.join("config.json"),
        dir.join("generation_config.json"),
        dir.join("preprocessor_config.json"),
        dir.join(safetensors::INDEX_FILE),
    ];
    files.extend(vocab::input_files(dir));
    files.extend(ckpt.shard_paths().map(Path::to_path_buf));
    files
}
