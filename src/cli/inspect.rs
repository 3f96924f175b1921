//! `lumen inspect FILE [--json]`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lumen::gguf::{GgufFile, OpenOptions};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file.
    #[arg(env = "LUMEN_MODEL")]
    file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Print metadata arrays whole instead of their first entries.
    #[arg(long)]
    full: bool,
}

/// Arrays longer than this are summarised (vocabularies have 10⁵ entries).
const ARRAY_PREVIEW: usize = 8;

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let file = GgufFile::open_with(&args.file, OpenOptions { mmap: true })
        .with_context(|| format!("cannot inspect {}", args.file.display()))?;
    let metadata: Vec<(String, Value)> = file
        .metadata()
        .raw()
        .iter()
        .map(|(k, v)| (k.clone(), if args.full { v.clone() } else { summarise(v) }))
        .collect();
    if args.json {
        let tensors: Vec<Value> = file
            .tensors()
            .iter()
            .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.shape, "bytes": t.n_bytes, "offset": t.offset}))
            .collect();
        let doc = json!({
            "file": args.file,
            "version": file.version(),
            "alignment": file.alignment(),
            "metadata": metadata.into_iter().collect::<serde_json::Map<_, _>>(),
            "tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors",
        args.file.display(),
        file.version(),
        metadata.len(),
        file.tensors().len()
    );
    println!("\nmetadata:");
    let width = metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &metadata {
        println!("  {k:width$}  {}", show(v));
    }
    println!("\ntensors:");
    let width = file
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    println!(
        "  {:width$}  {:6}  {:24}  {:>12}  {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    for t in file.tensors() {
        let shape = format!("{:?}", t.shape);
        println!(
            "  {:width$}  {:6}  {shape:24}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            t.n_bytes,
            t.offset
        );
    }
    let total: usize = file.tensors().iter().map(|t| t.n_bytes).sum();
    println!(
        "\n  {} tensors, {:.1} MiB of tensor data",
        file.tensors().len(),
        total as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn summarise(v: &Value) -> Value {
    match v {
        Value::Array(items) if items.len() > ARRAY_PREVIEW => {
            json!({"len": items.len(), "first": items[..ARRAY_PREVIEW].to_vec()})
        }
        Value::String(s) if s.len() > 200 => Value::String(format!(
            "{}… ({} bytes)",
            s.chars().take(120).collect::<String>(),
            s.len()
        )),
        other => other.clone(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(o) if o.contains_key("len") => {
            format!("[{} items] {} …", o["len"], o["first"])
        }
        other => other.to_string(),
    }
}
