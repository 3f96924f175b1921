//! Arbitrary bytes as an image: decoding returns an RGB image or an error, never panics, and a
//! decoded image preprocesses (at a 56-pixel tile, so inputs stay fast) into tensors of the
//! announced shapes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lumen::model::mllama::image_proc::{load_image_bytes, preprocess, PreprocessConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(image) = load_image_bytes(data, "fuzz input") else {
        return;
    };
    let config = PreprocessConfig {
        tile_size: 56,
        ..PreprocessConfig::default()
    };
    let out = preprocess(&image, &config);
    let tile = config.tile_size;
    assert_eq!(out.pixels.len(), config.max_tiles * 3 * tile * tile);
    assert_eq!(out.aspect_ratio_mask.len(), config.max_tiles);
    assert_eq!(out.num_tiles, out.rows * out.cols);
    assert!((1..=config.max_tiles).contains(&out.num_tiles));
    assert!(out.resized_height <= out.rows * tile && out.resized_width <= out.cols * tile);
    assert!(out.pixels.iter().all(|p| p.is_finite()));
});
