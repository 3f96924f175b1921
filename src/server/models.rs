//! [`ServeModel`] for each architecture the server runs: Llama-family text models, and Llama
//! 3.2 Vision (mllama), whose requests may carry images.

use super::engine::ServeModel;
use crate::model::mllama::text::MllamaCache;
use crate::model::mllama::{image_proc, Mllama};
use crate::model::{KvCache, Llama, Logits};

impl ServeModel for Llama {
    type Cache = KvCache;
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        Llama::new_cache(self, n_ctx)
    }
    fn reset(cache: &mut KvCache) {
        cache.clear();
    }
    fn truncate(cache: &mut KvCache, len: usize) {
        cache.truncate(len);
    }
    fn forward_last(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, String> {
        self.forward(tokens, cache, Logits::Last)
            .map_err(|e| e.to_string())
    }
    fn forward_batch(
        &self,
        tokens: &[u32],
        caches: &mut [&mut KvCache],
    ) -> Result<Vec<Vec<f32>>, String> {
        let logits = Llama::forward_batch(self, tokens, caches).map_err(|e| e.to_string())?;
        let n_vocab = self.config.n_vocab;
        Ok(logits.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect())
    }
}

/// Each request starts from a cleared cache: the cross-attention state binds images to token
/// positions, so a kept prefix would need the cache to cut both consistently.
impl ServeModel for Mllama {
    type Cache = MllamaCache;
    const PREFIX_REUSE: bool = false;
    fn new_cache(&self, n_ctx: usize) -> MllamaCache {
        Mllama::new_cache(self, n_ctx)
    }
    fn reset(cache: &mut MllamaCache) {
        cache.clear();
    }
    fn truncate(cache: &mut MllamaCache, _len: usize) {
        cache.clear();
    }
    fn forward_last(&self, tokens: &[u32], cache: &mut MllamaCache) -> Result<Vec<f32>, String> {
        self.text
            .forward(tokens, cache, Logits::Last)
            .map_err(|e| e.to_string())
    }
    fn accepts_images(&self) -> bool {
        true
    }
    /// Decodes, preprocesses and encodes each image, attaching them in order (the prompt's
    /// `<|image|>` tokens bind them in the same order).
    fn attach_images(&self, cache: &mut MllamaCache, images: &[Vec<u8>]) -> Result<(), String> {
        for (i, bytes) in images.iter().enumerate() {
            let name = format!("image {}", i + 1);
            let rgb = image_proc::load_image_bytes(bytes, &name).map_err(|e| e.to_string())?;
            let processed = image_proc::preprocess(&rgb, &self.preprocess);
            self.attach_processed(cache, &processed, &mut |_| {})
                .map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}
