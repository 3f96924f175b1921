//! Key/value cache: per layer, keys transposed per KV head (`[kv_head][head_dim][n_ctx]`) and
//! values `[kv_head][n_ctx][head_dim]`, the layout `lumen_kernels::attention` reads with
//! contiguous vector loads.

use lumen_kernels::attention::{self, AttentionShape, LayerCache};

use super::ModelError;

/// Bytes `n_slots` caches of `n_ctx` positions reserve at `per_token` bytes a position,
/// refused past the machine's memory with a named error. The buffers are reserved whole at
/// creation (backed lazily, but reserved), so a `-c` (or, with `-c 0`, a training context)
/// too large for the machine would otherwise abort in the allocator.
pub fn size(per_token: usize, n_ctx: usize, n_slots: usize) -> Result<u64, ModelError> {
    let bytes = (per_token as u64)
        .checked_mul(n_ctx as u64)
        .and_then(|b| b.checked_mul(n_slots as u64));
    let memory = super::physical_memory();
    match bytes {
        Some(b) if b <= memory => Ok(b),
        _ => Err(ModelError::KvCacheTooLarge {
            n_ctx,
            n_slots,
            bytes: bytes.unwrap_or(u64::MAX),
            memory,
        }),
    }
}

pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    shape: AttentionShape,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, shape: AttentionShape) -> Self {
        let per_layer = shape.n_head_kv * shape.head_dim * shape.n_ctx;
        Self {
            // Zeroed allocations are lazily backed by the OS: a large -c costs nothing until used.
            // One allocation per layer (`vec![v; n]` would clone, i.e. write, every copy), so
            // slots a model never stores into (mllama's cross-attention layers) stay untouched.
            keys: (0..n_layer).map(|_| vec![0.0; per_layer]).collect(),
            values: (0..n_layer).map(|_| vec![0.0; per_layer]).collect(),
            shape,
            len: 0,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.shape.n_ctx
    }

    /// Forgets every position (a new conversation reuses the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on (e.g. to re-run a diverging suffix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(crate) fn shape(&self) -> &AttentionShape {
        &self.shape
    }

    /// Writes K/V rows (`[n][kv_dim]`) for positions `pos0..` of one layer (not yet counted in
    /// `len`).
    pub(crate) fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        attention::store(
            &self.shape,
            &mut self.keys[layer],
            &mut self.values[layer],
            pos0,
            k,
            v,
        );
    }

    pub(crate) fn layer(&self, layer: usize) -> LayerCache<'_> {
        LayerCache {
            keys: &self.keys[layer],
            values: &self.values[layer],
        }
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
