//! Subcommands served by a sibling executable (`lumen convert` → `lumen-convert`): the tools
//! crate depends on this one, so `lumen` cannot link it and runs the tool binary instead,
//! found next to its own executable. Arguments (including `--help`) pass through unchanged;
//! the tool's exit status becomes ours.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;

/// Everything after the subcommand name, for the tool to parse.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ForwardArgs {
    /// Arguments for the tool (`--help` shows its options).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// Where the sibling `tool` executable is expected.
pub fn sibling_path(tool: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the lumen executable")?;
    let dir = exe
        .parent()
        .context("the lumen executable has no parent directory")?;
    Ok(dir.join(format!("{tool}{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `tool` with the forwarded arguments and exits with its status when it fails.
pub fn run_sibling(tool: &str, args: ForwardArgs) -> anyhow::Result<()> {
    let path = sibling_path(tool)?;
    if !path.is_file() {
        anyhow::bail!(
            "{} not found next to lumen; build the tools with `cargo build --release --workspace`",
            path.display()
        );
    }
    let status = std::process::Command::new(&path)
        .args(&args.args)
        .status()
        .with_context(|| format!("cannot run {}", path.display()))?;
    if !status.success() {
        // The tool has already printed its error; pass its status on unchanged.
        std::process::exit(exit_code(status));
    }
    Ok(())
}

#[cfg(unix)]
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    // A tool killed by a signal reports 128 + signal, as shells do.
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(not(unix))]
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or(1)
}
