//! `lumen convert HF_DIR [-o OUT.gguf] [--outtype …] [--force]`: runs `lumen-convert`.

use super::forward::{run_sibling, ForwardArgs};

pub const TOOL: &str = "lumen-convert";

pub fn convert(args: ForwardArgs) -> anyhow::Result<()> {
    run_sibling(TOOL, args)
}
