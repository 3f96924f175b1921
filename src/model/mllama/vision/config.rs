//! The vision tower's hyper-parameters, read from `mllama.vision.*` with bounds checked before
//! anything is allocated.

use crate::gguf::{keys, GgufFile};
use crate::model::ModelError;

/// Bounds on hyper-parameters read from the file (reject absurd values before allocating).
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_TILES: usize = 64;
const MAX_IMAGE_SIZE: usize = 1 << 14;
/// The encoder pads every tile's tokens to a multiple of this (the reference's choice).
const TOKEN_PAD_MULTIPLE: usize = 8;

/// Vision hyper-parameters (`mllama.vision.*`) and the projector's output width.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    /// Local (ungated) encoder layers.
    pub n_layer: usize,
    /// Global (gated) encoder layers.
    pub n_global_layer: usize,
    /// Local layers whose inputs are the intermediate features, in output order.
    pub intermediate_layers: Vec<usize>,
    pub norm_eps: f32,
    pub image_size: usize,
    pub patch_size: usize,
    pub max_tiles: usize,
    pub n_channels: usize,
    /// Width of the projected states (the text model's hidden size).
    pub text_embd: usize,
}

impl VisionConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let md = file.metadata();
        let arch = file.architecture()?;
        let key = |suffix| keys::arch_key(arch, suffix);
        let dim = |suffix| md.get_usize_capped(&key(suffix), MAX_DIM);
        let layers_key = key(keys::VISION_INTERMEDIATE_LAYERS);
        let intermediate_layers = md
            .get_i32_array(&layers_key)?
            .into_iter()
            .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
            .collect();
        let cfg = Self {
            n_embd: dim(keys::VISION_EMBEDDING_LENGTH)?,
            n_ff: dim(keys::VISION_FEED_FORWARD_LENGTH)?,
            n_head: dim(keys::VISION_HEAD_COUNT)?,
            n_layer: md.get_usize_capped(&key(keys::VISION_BLOCK_COUNT), MAX_LAYERS)?,
            n_global_layer: md
                .get_usize_capped(&key(keys::VISION_GLOBAL_BLOCK_COUNT), MAX_LAYERS)?,
            intermediate_layers,
            norm_eps: md
                .opt(&key(keys::VISION_LAYER_NORM_EPS), |m, k| m.get_f32(k))?
                .unwrap_or(1e-5),
            image_size: md.get_usize_capped(&key(keys::VISION_IMAGE_SIZE), MAX_IMAGE_SIZE)?,
            patch_size: md.get_usize_capped(&key(keys::VISION_PATCH_SIZE), MAX_IMAGE_SIZE)?,
            max_tiles: md.get_usize_capped(&key(keys::VISION_MAX_NUM_TILES), MAX_TILES)?,
            n_channels: md
                .opt(&key(keys::VISION_NUM_CHANNELS), |m, k| {
                    m.get_usize_capped(k, 16)
                })?
                .unwrap_or(3),
            text_embd: dim(keys::EMBEDDING_LENGTH)?,
        };
        cfg.validate().map_err(|message| ModelError::BadConfig {
            path: file.path().to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.n_head == 0 || self.patch_size == 0 || self.image_size == 0 {
            return Err("vision head count, image size and patch size must not be 0".into());
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "vision embedding length {} is not a multiple of the head count {}",
                self.n_embd, self.n_head
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "vision image size {} is not a multiple of the patch size {}",
                self.image_size, self.patch_size
            ));
        }
        let memory = crate::model::physical_memory();
        match self.encoder_bytes() {
            Some(bytes) if bytes <= memory => {}
            bytes => {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                return Err(format!(
                    "encoding one image ({} tiles of {} px, {} tokens × {} wide) needs {} of \
                     buffers, more than this machine's {:.1} GiB of memory",
                    self.max_tiles,
                    self.image_size,
                    self.max_tiles.saturating_mul(self.n_tile_tokens_padded()),
                    self.n_embd,
                    bytes.map_or("more than 2^64 bytes".into(), |b| format!(
                        "{:.1} GiB",
                        gib(b)
                    )),
                    gib(memory),
                ));
            }
        }
        if let Some(&bad) = self
            .intermediate_layers
            .iter()
            .find(|&&i| i >= self.n_layer)
        {
            return Err(format!(
                "vision intermediate layer index {bad} is outside the {} local layers",
                self.n_layer
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Patches along one side of a tile (40 at 560 px).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn n_patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// Tokens per tile in the output: the patches and the class token (1601 at 560 px).
    pub fn n_tile_tokens(&self) -> usize {
        self.n_patches() + 1
    }

    /// Tokens per tile inside the encoder (1608 at 560 px).
    pub fn n_tile_tokens_padded(&self) -> usize {
        self.n_tile_tokens().next_multiple_of(TOKEN_PAD_MULTIPLE)
    }

    /// Width of the encoder output: the global output and every intermediate feature.
    pub fn output_dim(&self) -> usize {
        self.n_embd * (1 + self.intermediate_layers.len())
    }

    /// Input values per patch (3·14·14).
    pub fn patch_len(&self) -> usize {
        self.n_channels * self.patch_size * self.patch_size
    }

    /// f32 bytes one image's encode holds at once: the pixels, the patches, the residual
    /// stream and the layer buffers (`Scratch`), the kept intermediate features and the
    /// output. Limits checked one by one (tiles ≤ 64, image ≤ 16384 px) multiply to far more
    /// than any machine has, so the product is checked at load; `None` past 2⁶⁴.
    pub fn encoder_bytes(&self) -> Option<u64> {
        let n = (self.max_tiles as u64).checked_mul(self.n_tile_tokens_padded() as u64)?;
        let e = self.n_embd as u64;
        // x and six Scratch buffers of n × e, one of n × n_ff; intermediates; output.
        let per_token = e
            .checked_mul(7 + self.intermediate_layers.len() as u64)?
            .checked_add(self.n_ff as u64)?
            .checked_add(self.output_dim() as u64)?
            .checked_add(self.patch_len() as u64)?;
        let values = n
            .checked_mul(per_token)?
            .checked_add(self.pixels_len() as u64)?;
        values.checked_mul(4)
    }

    /// Values of the pixel input: `[max_tiles][n_channels][image_size][image_size]`.
    pub fn pixels_len(&self) -> usize {
        self.max_tiles * self.n_channels * self.image_size * self.image_size
    }
}
