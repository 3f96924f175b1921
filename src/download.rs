//! Resumable HTTP(S) downloads into a `.partial` file.
//!
//! A download interrupted part-way leaves its bytes in the partial file; the next attempt asks
//! the server for the rest with `Range: bytes=N-`. A server that ignores the range (200) gets
//! the file rewritten from the start; one that answers 416 (nothing past N) is taken to mean
//! the partial file already holds the whole body — the caller's sha256 check decides whether
//! it really does.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error(
        "{url}: the server answered range request 'bytes={asked}-' with 'Content-Range: {found}'"
    )]
    BadRange {
        url: String,
        asked: u64,
        found: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a download stands, for progress bars.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Bytes in the partial file, including those from an earlier attempt.
    pub bytes: u64,
    /// The whole body's size when the server says it.
    pub total: Option<u64>,
    /// Bytes that were already there when this attempt started.
    pub resumed_from: u64,
}

/// How a finished download went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub bytes: u64,
    pub resumed_from: u64,
}

/// Fetches `url` into `partial`, continuing from what `partial` already holds, and syncs it
/// to disk. Calls `progress` after every block written.
pub fn download_resumable(
    url: &str,
    partial: &Path,
    progress: &mut dyn FnMut(Transfer),
) -> Result<Outcome, DownloadError> {
    let io = |source| DownloadError::Io {
        path: partial.to_path_buf(),
        source,
    };
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let agent = agent();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| http_error(url, e))?;
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_length = header("content-length").and_then(|v| v.parse::<u64>().ok());
    let resumed_from = match status {
        200 => 0,
        206 => {
            let found = header("content-range").unwrap_or_default();
            match parse_content_range_start(&found) {
                Some(start) if start == have => have,
                _ => {
                    return Err(DownloadError::BadRange {
                        url: url.to_string(),
                        asked: have,
                        found,
                    })
                }
            }
        }
        // Nothing after byte `have`: the partial file is already whole (or longer than the
        // body; the checksum will reject it then).
        416 if have > 0 => {
            return Ok(Outcome {
                bytes: have,
                resumed_from: have,
            })
        }
        _ => {
            return Err(DownloadError::Status {
                url: url.to_string(),
                status,
            })
        }
    };
    let total = content_length.map(|n| n + resumed_from);

    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(partial)
        .map_err(io)?;
    // 200 restarts the file; 206 continues it at exactly `have`.
    out.set_len(resumed_from).map_err(io)?;
    out.seek(SeekFrom::Start(resumed_from)).map_err(io)?;

    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = resumed_from;
    progress(Transfer {
        bytes,
        total,
        resumed_from,
    });
    loop {
        let n = body.read(&mut buf).map_err(|e| DownloadError::Http {
            url: url.to_string(),
            message: format!("connection lost after {bytes} bytes: {e}"),
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(io)?;
        bytes += n as u64;
        progress(Transfer {
            bytes,
            total,
            resumed_from,
        });
    }
    if let Some(total) = total.filter(|&t| t != bytes) {
        return Err(DownloadError::Http {
            url: url.to_string(),
            message: format!("the body ended after {bytes} of {total} bytes"),
        });
    }
    out.sync_all().map_err(io)?;
    Ok(Outcome {
        bytes,
        resumed_from,
    })
}

/// A blocking agent that hands every status back to us (416 and 206 are not errors here) and
/// gives up on a stalled connection instead of hanging.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("lumen/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn http_error(url: &str, e: ureq::Error) -> DownloadError {
    DownloadError::Http {
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// The first byte of `bytes START-END/TOTAL`.
fn parse_content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// Syncs a directory so that a rename into it survives a crash (no-op where directories
/// cannot be opened, e.g. Windows).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_start() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(parse_content_range_start("bytes */200"), None);
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
    }
}
