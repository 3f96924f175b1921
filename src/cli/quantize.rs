//! `lumen quantize IN.gguf OUT.gguf TYPE [THREADS] [options]`: runs `lumen-quantize`.

use super::forward::{run_sibling, ForwardArgs};

pub const TOOL: &str = "lumen-quantize";

pub fn quantize(args: ForwardArgs) -> anyhow::Result<()> {
    run_sibling(TOOL, args)
}
