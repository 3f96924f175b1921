//! Llama 3.2 Vision (`mllama`): a Llama 3.1 text decoder with gated cross-attention layers that
//! read the states of a vision encoder, from one GGUF file in Ollama's schema.
//!
//! - `image_proc`: image file → normalised tiles, as the reference `MllamaImageProcessor`.
//! - `vision`: tiles → projected cross-attention states (vision encoder + projector).
//! - `text`: the decoder with cross-attention, its caches and masks.
//!
//! [`Mllama`] ties them together: encode an image, attach it to a cache, then run the prompt
//! whose `<|image|>` tokens refer to the attached images in order.

pub mod image_proc;
pub mod text;
pub mod vision;

use std::sync::Arc;

use lumen_kernels::KernelSet;

use self::image_proc::{PreprocessConfig, ProcessedImage, CLIP_MEAN, CLIP_STD};
use self::text::{MllamaCache, MllamaText};
use self::vision::{VisionConfig, VisionEncoder, VisionProgress};
use super::{Cache, EncodedImage, ImageInput, Logits, Model, ModelError, ModelInfo};
use crate::gguf::{keys, GgufFile};

pub use self::text::{CrossAttentionSemantics, ARCHITECTURE};
use crate::tokenizer::IMAGE_TOKEN;

/// Whether `file` holds an mllama model (`general.architecture = mllama`).
pub fn is_mllama(file: &GgufFile) -> bool {
    file.architecture().is_ok_and(|a| a == ARCHITECTURE)
}

/// The whole model: text decoder and vision encoder over one mapped file.
pub struct Mllama {
    pub text: MllamaText,
    pub vision: VisionEncoder,
    /// Tile size, tile budget and normalisation of the image preprocessing for this file.
    pub preprocess: PreprocessConfig,
}

impl Mllama {
    pub fn load(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let text = MllamaText::load(file.clone())?;
        let vision = VisionEncoder::load(file.clone())?;
        if vision.config.text_embd != text.config.llama.n_embd {
            return Err(ModelError::BadConfig {
                path: file.path().to_path_buf(),
                message: format!(
                    "the projector writes {} values per state but the text model's width is {}",
                    vision.config.text_embd, text.config.llama.n_embd
                ),
            });
        }
        let preprocess = preprocess_config(&file, &vision.config)?;
        Ok(Self {
            text,
            vision,
            preprocess,
        })
    }

    /// Encodes a preprocessed image ([`image_proc::preprocess`]) and attaches it to `cache`.
    pub fn attach_processed(
        &self,
        cache: &mut MllamaCache,
        image: &ProcessedImage,
        on_progress: &mut dyn FnMut(VisionProgress),
    ) -> Result<(), ModelError> {
        self.attach_image(
            cache,
            &image.pixels,
            image.aspect_ratio_id,
            &image.aspect_ratio_mask,
            on_progress,
        )
    }

    /// f32 matmuls in both parts (validation against float references).
    pub fn set_reference_matmul(&mut self, on: bool) {
        self.text.set_reference_matmul(on);
        self.vision.set_reference_matmul(on);
    }

    pub fn set_kernels(&mut self, kernels: &'static KernelSet) {
        self.text.set_kernels(kernels);
        self.vision.set_kernels(kernels);
    }

    pub fn new_cache(&self, n_ctx: usize) -> MllamaCache {
        self.text.new_cache(n_ctx)
    }

    /// Encodes one preprocessed image (`pixels` `[max_tiles][channels][size][size]`, its aspect
    /// ratio id and per-tile mask) and attaches it to `cache` for the next unbound `<|image|>`.
    pub fn attach_image(
        &self,
        cache: &mut MllamaCache,
        pixels: &[f32],
        aspect_ratio_id: usize,
        aspect_mask: &[u8],
        on_progress: &mut dyn FnMut(VisionProgress),
    ) -> Result<(), ModelError> {
        // The processor marks the first rows·cols tiles real; the text side relies on that.
        let n_tiles = aspect_mask.iter().take_while(|&&m| m != 0).count();
        if aspect_mask[n_tiles..].iter().any(|&m| m != 0) {
            return Err(ModelError::BadVisionStates(format!(
                "aspect ratio mask {aspect_mask:?}: real tiles must come first"
            )));
        }
        let states = self
            .vision
            .encode_with(pixels, aspect_ratio_id, aspect_mask, on_progress)?;
        self.text
            .attach_image(cache, &states, self.vision.config.max_tiles, n_tiles)
    }
}

impl Model for Mllama {
    fn info(&self) -> ModelInfo {
        let cfg = &self.text.config;
        ModelInfo {
            detail: Some(format!("{} cross-attention layers", cfg.cross_layers.len())),
            ..cfg.llama.info(ARCHITECTURE)
        }
    }
    fn kernels(&self) -> &'static KernelSet {
        self.text.kernels()
    }
    fn packed_bytes(&self) -> usize {
        self.text.packed_bytes() + self.vision.packed_bytes()
    }
    fn set_reference_matmul(&mut self, on: bool) {
        Mllama::set_reference_matmul(self, on);
    }
    fn new_cache(&self, n_ctx: usize) -> Cache {
        Cache::Vision(Mllama::new_cache(self, n_ctx))
    }
    fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        let Cache::Vision(c) = cache else {
            return Err(ModelError::WrongCache("mllama"));
        };
        self.text.forward(tokens, c, which)
    }
    fn vision(&self) -> Option<&dyn ImageInput> {
        Some(self)
    }
}

impl ImageInput for Mllama {
    fn image_token(&self) -> u32 {
        self.text.config.image_token()
    }
    fn encode_image(&self, bytes: &[u8], name: &str) -> anyhow::Result<EncodedImage> {
        let rgb = image_proc::load_image_bytes(bytes, name)?;
        let image = image_proc::preprocess(&rgb, &self.preprocess);
        let states = self
            .vision
            .encode(
                &image.pixels,
                image.aspect_ratio_id,
                &image.aspect_ratio_mask,
            )
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        Ok(EncodedImage {
            states,
            n_tiles: image.num_tiles,
        })
    }
    fn attach_encoded(&self, cache: &mut Cache, image: &EncodedImage) -> Result<(), ModelError> {
        let Cache::Vision(c) = cache else {
            return Err(ModelError::WrongCache("mllama"));
        };
        self.text.attach_image(
            c,
            &image.states,
            self.vision.config.max_tiles,
            image.n_tiles,
        )
    }
    fn processor_prompt(&self, prompt: &str, n_images: usize, bos: &str) -> String {
        processor_prompt(prompt, n_images, bos)
    }
    fn describe(&self) -> String {
        let v = &self.vision.config;
        format!(
            "vision {} + {} layers, {} px tiles",
            v.n_layer, v.n_global_layer, v.image_size
        )
    }
}

/// Preprocessing from the file: tile size and count of the vision encoder, and the
/// normalisation from `mllama.vision.image_mean`/`image_std` (CLIP's when absent, as in Ollama's
/// files).
fn preprocess_config(
    file: &GgufFile,
    vision: &VisionConfig,
) -> Result<PreprocessConfig, ModelError> {
    let triple = |suffix: &str, default: [f32; 3]| -> Result<[f32; 3], ModelError> {
        let key = keys::arch_key(ARCHITECTURE, suffix);
        match file.metadata().opt(&key, |m, k| m.get_f32_array(k))? {
            None => Ok(default),
            Some(v) => {
                let positive = suffix != keys::VISION_IMAGE_STD || v.iter().all(|&x| x > 0.0);
                match <[f32; 3]>::try_from(v.as_slice()) {
                    Ok(t) if positive && t.iter().all(|x| x.is_finite()) => Ok(t),
                    _ => Err(ModelError::BadConfig {
                        path: file.path().to_path_buf(),
                        message: format!("{key} = {v:?}: expected 3 finite values (std > 0)"),
                    }),
                }
            }
        }
    };
    Ok(PreprocessConfig {
        tile_size: vision.image_size,
        max_tiles: vision.max_tiles,
        mean: triple(keys::VISION_IMAGE_MEAN, CLIP_MEAN)?,
        std: triple(keys::VISION_IMAGE_STD, CLIP_STD)?,
    })
}

/// A raw (non-chat) prompt as the reference processor (`MllamaProcessor`) prepares it before
/// tokenizing with BOS: with images but no `<|image|>` in the text, one is prepended per image
/// (as Ollama does); then, unless the text already holds `bos`, the leading `<|image|>` tokens
/// are moved in front of an inserted `bos`. Tokenized with BOS this gives
/// `[BOS, <|image|>…, BOS, text…]` (and `[BOS, BOS, text…]` without images), exactly the
/// reference's ids.
pub fn processor_prompt(prompt: &str, n_images: usize, bos: &str) -> String {
    let prompt = if n_images > 0 && !prompt.contains(IMAGE_TOKEN) {
        IMAGE_TOKEN.repeat(n_images) + prompt
    } else {
        prompt.to_string()
    };
    if prompt.contains(bos) {
        return prompt;
    }
    let text = prompt.trim_start_matches(IMAGE_TOKEN);
    let n_leading = (prompt.len() - text.len()) / IMAGE_TOKEN.len();
    format!("{}{bos}{text}", IMAGE_TOKEN.repeat(n_leading))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOS: &str = "<|begin_of_text|>";

    #[test]
    fn processor_prompt_moves_leading_images_before_bos() {
        let p = |text, n| processor_prompt(text, n, BOS);
        assert_eq!(p("<|image|>Hi", 1), "<|image|><|begin_of_text|>Hi");
        assert_eq!(p("Hi", 2), "<|image|><|image|><|begin_of_text|>Hi");
        assert_eq!(p("Hi", 0), "<|begin_of_text|>Hi");
        assert_eq!(p("A <|image|> B", 1), "<|begin_of_text|>A <|image|> B");
        let with_bos = "<|begin_of_text|><|image|>Hi";
        assert_eq!(p(with_bos, 1), with_bos);
    }
}
