//! What the tool binaries share around their work: the worker-thread count and how an error
//! ends the process.

use std::process::ExitCode;

/// Sizes rayon's global pool (`None`: one thread per core, rayon's default).
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(t) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
    Ok(())
}

/// Ctrl-C removes the temporary file of the output being written and exits with 130.
pub fn clean_up_on_ctrl_c() -> anyhow::Result<()> {
    lumen::gguf::writer::remove_temps_on_interrupt()
        .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}

/// Success, or the error with its causes on stderr and exit status 1.
pub fn exit_with(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
