//! `lumen inspect FILE [--json]`, and `lumen inspect --kernels`: the kernel set this CPU
//! resolved, with the source file of every kernel.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lumen::gguf::{GgufFile, OpenOptions};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file.
    #[arg(env = "LUMEN_MODEL", required_unless_present = "kernels")]
    file: Option<PathBuf>,
    /// Print the kernel set chosen for this CPU (or by LUMEN_KERNELS): for every weight and
    /// activation type, which source file supplies each kind of kernel.
    #[arg(long)]
    kernels: bool,
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
    match print_inspection(&args) {
        // `lumen inspect F | head` closes the pipe early: that is the reader's choice, not an error.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn print_inspection(args: &InspectArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.kernels {
        print_kernels(&mut out)?;
    }
    let Some(path) = &args.file else {
        return Ok(());
    };
    let file = GgufFile::open_with(path, OpenOptions { mmap: true })
        .with_context(|| format!("cannot inspect {}", path.display()))?;
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
            "file": path,
            "version": file.version(),
            "alignment": file.alignment(),
            "metadata": metadata.into_iter().collect::<serde_json::Map<_, _>>(),
            "tensors": tensors,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: GGUF v{}, {} metadata keys, {} tensors",
        path.display(),
        file.version(),
        metadata.len(),
        file.tensors().len()
    )?;
    writeln!(out, "\nmetadata:")?;
    let width = metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &metadata {
        writeln!(out, "  {k:width$}  {}", show(v))?;
    }
    writeln!(out, "\ntensors:")?;
    let width = file
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "  {:width$}  {:6}  {:24}  {:>12}  {:>12}",
        "name", "type", "shape", "bytes", "offset"
    )?;
    for t in file.tensors() {
        let shape = format!("{:?}", t.shape);
        writeln!(
            out,
            "  {:width$}  {:6}  {shape:24}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            t.n_bytes,
            t.offset
        )?;
    }
    let total: usize = file.tensors().iter().map(|t| t.n_bytes).sum();
    writeln!(
        out,
        "\n  {} tensors, {:.1} MiB of tensor data",
        file.tensors().len(),
        total as f64 / (1 << 20) as f64
    )?;
    Ok(())
}

/// The resolved kernel set as a table: one row per type, one column per kernel kind, each
/// cell the source module that supplied it (`-` where the set has none).
fn print_kernels(out: &mut impl Write) -> anyhow::Result<()> {
    use lumen_kernels::kernel_set::KernelKind;
    use lumen_kernels::{GgmlType, Isa};
    let ks = lumen_kernels::kernels();
    let best = Isa::best_available();
    writeln!(
        out,
        "kernel level: {} (this CPU runs up to {}{})",
        ks.isa.name(),
        best.name(),
        if ks.isa == best {
            ""
        } else {
            "; LUMEN_KERNELS chose another level"
        }
    )?;
    if let Some(problem) = lumen_kernels::kernel_set::forced_kernels_problem() {
        writeln!(out, "note: {problem}")?;
    }
    let rows: Vec<(GgmlType, Vec<&str>)> = GgmlType::ALL
        .into_iter()
        .map(|ty| {
            let cells = KernelKind::ALL
                .iter()
                .map(|&k| ks.source(ty, k).unwrap_or("-"))
                .collect();
            (ty, cells)
        })
        .collect();
    let width = |c: usize| {
        rows.iter()
            .map(|(_, cells)| cells[c].len())
            .chain([KernelKind::ALL[c].name().len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..KernelKind::ALL.len()).map(width).collect();
    let line = |first: &str, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = format!("  {first:6}");
        for (cell, w) in cells.zip(&widths) {
            l.push_str(&format!("  {cell:w$}"));
        }
        l.trim_end().to_string()
    };
    let header = line("type", &mut KernelKind::ALL.iter().map(|k| k.name()));
    writeln!(out, "{header}")?;
    for (ty, cells) in &rows {
        writeln!(out, "{}", line(ty.name(), &mut cells.iter().copied()))?;
    }
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
