//! `lumen pull` and `lumen models`: the model registry (models.toml) and the local cache.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use lumen::registry::{cache_dir, CacheStatus, FetchEvent, Registry};

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Model id from the registry (default: the registry's default model).
    name: Option<String>,
    /// Registry file to use instead of the built-in models.toml.
    #[arg(long = "registry", env = "LUMEN_REGISTRY")]
    registry: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Registry file to use instead of the built-in models.toml.
    #[arg(long = "registry", env = "LUMEN_REGISTRY")]
    registry: Option<PathBuf>,
}

pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let registry = Registry::load(args.registry.as_deref())?;
    let name = args.name.as_deref().unwrap_or(&registry.default);
    let entry = registry.get(name)?;
    let cache = cache_dir();
    let bar = ProgressBar::hidden();
    let path = entry.ensure(&cache, &mut |event| match event {
        FetchEvent::Downloading { id, source } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(entry.size);
            bar.set_style(byte_style());
            bar.println(format!("pulling {id} from {source}"));
        }
        FetchEvent::Extracting { bytes, total, .. } => {
            bar.set_length(total);
            bar.set_position(bytes);
        }
        FetchEvent::Verified { .. } => bar.finish_and_clear(),
    });
    bar.finish_and_clear();
    let path = path?;
    println!(
        "{} ({}) verified (sha256) at {}",
        entry.id,
        size_label(entry.size),
        path.display()
    );
    Ok(())
}

fn byte_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

pub fn models(args: ModelsArgs) -> anyhow::Result<()> {
    let registry = Registry::load(args.registry.as_deref())?;
    let cache = cache_dir();
    let rows: Vec<[String; 6]> = registry
        .models
        .iter()
        .map(|m| {
            let id = if m.id == registry.default {
                format!("{} (default)", m.id)
            } else {
                m.id.clone()
            };
            let status = match m.cache_status(&cache) {
                CacheStatus::Verified => "cached".to_string(),
                CacheStatus::Unverified => "cached, unverified (pull re-fetches it)".to_string(),
                CacheStatus::Partial(n) => {
                    format!("partial {} (pull resumes it)", size_label(n))
                }
                CacheStatus::Missing => "not cached".to_string(),
            };
            [
                id,
                m.arch.clone(),
                m.quant.clone(),
                size_label(m.size),
                m.source.label(),
                status,
            ]
        })
        .collect();
    let header = ["MODEL", "ARCH", "QUANT", "SIZE", "SOURCE", "STATUS"].map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            rows.iter()
                .chain([&header])
                .map(|r| r[c].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    println!("cache: {}", cache.display());
    Ok(())
}

/// `93.8 MiB`, `4.58 GiB`.
fn size_label(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    const GIB: f64 = (1u64 << 30) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{bytes} B")
    }
}
