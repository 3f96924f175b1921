//! `lumen perplexity`.

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {}

pub fn perplexity(_args: PerplexityArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
