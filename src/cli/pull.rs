//! `lumen pull` and `lumen models`.

#[derive(clap::Args, Debug)]
pub struct PullArgs {}

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {}

pub fn pull(_args: PullArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

pub fn models(_args: ModelsArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
