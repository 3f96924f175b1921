//! Key/value cache: per layer, `n_ctx` rows of `n_head_kv · head_dim` f32 keys and values.

pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    row: usize,
    n_ctx: usize,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Self {
        Self {
            keys: vec![vec![0.0; n_ctx * kv_dim]; n_layer],
            values: vec![vec![0.0; n_ctx * kv_dim]; n_layer],
            row: kv_dim,
            n_ctx,
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
        self.n_ctx
    }

    /// Forgets every position (a new conversation reuses the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on (e.g. to re-run a diverging suffix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Writes rows for positions `pos0..` of one layer (not yet counted in `len`).
    pub(crate) fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let start = pos0 * self.row;
        self.keys[layer][start..start + k.len()].copy_from_slice(k);
        self.values[layer][start..start + v.len()].copy_from_slice(v);
    }

    pub(crate) fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        (&self.keys[layer], &self.values[layer])
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
