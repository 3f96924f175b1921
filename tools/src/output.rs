//! What the tools share about writing a GGUF: the output-path rules (never an input, an
//! existing file only with `--force`), the free-space check made before anything is written,
//! the streaming write through Lumen's writer (temporary file + fsync + rename), fault
//! injection for tests, and the parallel row conversion between tensor types.

use std::io::Write;
use std::path::{Path, PathBuf};

use lumen::gguf::writer::{encode_header, write_streaming, MetaValue, TensorHeader, ALIGNMENT};
use lumen::kernels::{dequantize_row, quantize_weights, GgmlType, KernelError};
use rayon::prelude::*;

/// ggml's `GGML_QNT_VERSION`, which llama.cpp's converter and quantizer write.
pub const QUANTIZATION_VERSION: u32 = 2;

/// Why an output cannot be written. Each tool maps these into its own error type.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} is a directory; give a file name")]
    IsDir(PathBuf),
    #[error("{0} is one of the input files; choose another output path")]
    IsInput(PathBuf),
    #[error("{0} already exists (pass --force to overwrite it)")]
    Exists(PathBuf),
    #[error(
        "{dir}: not enough free space: the output needs {needed} bytes, {available} are available"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Progress reports of a tool writing a GGUF (`F`: its file type, `T`: what it says about a
/// tensor).
#[derive(Debug)]
pub enum Event<'a, F, T> {
    /// Inputs checked; writing starts.
    Start {
        output: &'a Path,
        file_type: F,
        n_tensors: usize,
        total_bytes: u64,
    },
    /// Tensor `index` was written.
    Tensor { index: usize, tensor: &'a T },
}

/// Test-only fault injection (a full disk cannot be made reliably as root).
#[derive(Clone, Debug, Default)]
pub struct TestHooks {
    /// Pretend the output file system has this many bytes free.
    pub free_bytes: Option<u64>,
    /// Fail with an I/O error when tensor `n` is about to be written.
    pub fail_at_tensor: Option<usize>,
}

/// The directory `output` will be created in.
fn parent_dir(output: &Path) -> &Path {
    output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Refuses a directory, an input file (even with `--force`) and an existing file without
/// `--force`.
pub fn check_output(output: &Path, inputs: &[PathBuf], force: bool) -> Result<(), OutputError> {
    if output.is_dir() {
        return Err(OutputError::IsDir(output.to_path_buf()));
    }
    let parent = parent_dir(output);
    let canon_parent = parent.canonicalize().map_err(|source| OutputError::Io {
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
        return Err(OutputError::IsInput(output.to_path_buf()));
    }
    if output.exists() && !force {
        return Err(OutputError::Exists(output.to_path_buf()));
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

/// Size of the GGUF file these metadata and tensors make.
pub fn file_size(metadata: &[(String, MetaValue)], headers: &[TensorHeader]) -> u64 {
    let (header, offsets) = encode_header(metadata, headers);
    let data_end = offsets
        .last()
        .zip(headers.last())
        .map_or(0, |(off, h)| off + h.n_bytes);
    (header.len() + data_end.next_multiple_of(ALIGNMENT)) as u64
}

/// Fails unless the file system of `output` has `needed` bytes free.
pub fn check_space(output: &Path, needed: u64, hooks: &TestHooks) -> Result<(), OutputError> {
    let dir = parent_dir(output);
    let available = match hooks.free_bytes {
        Some(b) => b,
        None => free_space(dir).map_err(|source| OutputError::Io {
            path: dir.to_path_buf(),
            source,
        })?,
    };
    if available < needed {
        return Err(OutputError::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// [`write_streaming`] with the test hook's injected failure before tensor `fail_at_tensor`.
pub fn write_gguf(
    output: &Path,
    metadata: &[(String, MetaValue)],
    headers: &[TensorHeader],
    hooks: &TestHooks,
    mut fill: impl FnMut(usize, &mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_streaming(output, metadata, headers, |i, w| {
        if hooks.fail_at_tensor == Some(i) {
            return Err(std::io::Error::other("injected write failure (test hook)"));
        }
        fill(i, w)
    })
}

/// Rows are converted in parallel in chunks of about this many output bytes, so memory stays
/// bounded whatever the tensor size.
const CHUNK_BYTES: usize = 32 << 20;

/// One tensor's rows to convert: `rows` rows of `cols` elements of `src_ty` in `src`.
pub struct RowSource<'a> {
    pub name: &'a str,
    pub src: &'a [u8],
    pub src_ty: GgmlType,
    pub cols: usize,
    pub rows: usize,
}

/// Writes the rows of `t` converted to `dst_ty`, output row r taken from source row
/// `source_row(r)`: a chunk of rows at a time, the rows of a chunk in parallel.
pub fn write_rows(
    t: &RowSource,
    dst_ty: GgmlType,
    source_row: impl Fn(usize) -> usize + Sync,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let (cols, rows) = (t.cols, t.rows);
    let src_row = t.src_ty.row_bytes(cols).unwrap_or(0);
    let dst_row = dst_ty.row_bytes(cols).unwrap_or(0);
    if t.src.len() != rows * src_row || dst_row == 0 || src_row == 0 {
        return Err(std::io::Error::other(format!(
            "tensor '{}': {} source bytes for {rows} rows of {cols} {} (to {dst_ty})",
            t.name,
            t.src.len(),
            t.src_ty
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
                let sr = source_row(start + i);
                let s = &t.src[sr * src_row..(sr + 1) * src_row];
                convert_row(t.src_ty, s, dst_ty, d, f32_row)
            })
            .map_err(|e| std::io::Error::other(format!("tensor '{}': {e}", t.name)))?;
        out.write_all(dst)?;
    }
    Ok(())
}

/// One row from `src_ty` to `dst_ty`: a byte copy when they agree, else through f32 with
/// Lumen's kernels (ggml's reference rounding and quantizers).
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
    f32_row.resize(src.len() / src_ty.block_bytes() * src_ty.block_elems(), 0.0);
    dequantize_row(src_ty, src, f32_row)?;
    quantize_weights(dst_ty, f32_row, dst)
}
