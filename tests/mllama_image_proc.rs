//! Image preprocessing against transformers' `MllamaImageProcessor` (PIL backend): the 12 image
//! sizes in `refs/tiny-mllama/preprocess`, the test image behind `meta_ref`, and the outputs of
//! `tools/scripts/mllama_preprocess_refs.py` at the real tile size 560 and the tiny 56
//! (`tests/fixtures/mllama_preprocess`); then refusal of bad files.

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lumen::model::mllama::image_proc::{
    aspect_ratio_id, fit_to_canvas, load_image, load_image_bytes, optimal_grid, preprocess,
    supported_aspect_ratios, ImageError, PreprocessConfig, ProcessedImage, RgbImage,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bound on |ours − reference| for normalised pixel values (one uint8 level is ≈ 0.015).
const PIXEL_TOLERANCE: f64 = 1e-5;

type Arrays = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

fn read_npz(path: &Path) -> Arrays {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = zip::ZipArchive::new(file).unwrap();
    let mut arrays = Arrays::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).unwrap();
        let label = format!("{}:{name}", path.display());
        arrays.insert(name, common::read_npy_bytes(&bytes, &label));
    }
    arrays
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mllama_preprocess")
}

fn config(tile: usize) -> PreprocessConfig {
    PreprocessConfig {
        tile_size: tile,
        ..PreprocessConfig::default()
    }
}

fn max_abs_diff(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max)
}

/// The generator of `refs/tiny-mllama/preprocess` (its index.json):
/// R = x*255//(W-1), G = y*255//(H-1), B = (7x+13y)%256.
fn hf_gradient(width: usize, height: usize) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        [
            (x * 255 / (width - 1)) as u8,
            (y * 255 / (height - 1)) as u8,
            ((7 * x + 13 * y) % 256) as u8,
        ]
    })
}

/// `pattern` of `tools/scripts/mllama_preprocess_refs.py`, RGBA.
fn pattern_rgba(width: usize, height: usize) -> Vec<[u8; 4]> {
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            pixels.push([
                (x * 255 / (width - 1).max(1)) as u8,
                (((x / 7) * 37 + (y / 5) * 91) % 256) as u8,
                ((x * x + 3 * y * y + x * y) % 256) as u8,
                ((3 * x + 5 * y) % 256) as u8,
            ]);
        }
    }
    pixels
}

fn pattern_rgb(width: usize, height: usize) -> RgbImage {
    let rgba = pattern_rgba(width, height);
    RgbImage::from_fn(width, height, |x, y| {
        let p = rgba[y * width + x];
        [p[0], p[1], p[2]]
    })
}

fn encode_png(image: image::DynamicImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

#[test]
fn aspect_ratio_list_is_hf_order() {
    assert_eq!(
        supported_aspect_ratios(4),
        [
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2),
            (3, 1),
            (4, 1)
        ]
    );
    assert_eq!(aspect_ratio_id(1, 2, 4), 2);
    assert_eq!(aspect_ratio_id(4, 1, 4), 8);
}

/// The 12 image sizes (tile 56, pixels) of both PIL-based reference variants, plus the canvas
/// and resize arithmetic the index lists for tile 560.
#[test]
fn hf_reference_cases() {
    for variant in ["hf4_46_3", "hf5_pil"] {
        let dir = common::refs_dir()
            .join("tiny-mllama/preprocess")
            .join(variant);
        let index = read_json(&dir.join("index.json"));
        let cases = index["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 12);
        for case in cases {
            let file = case["file"].as_str().unwrap();
            let (width, height) = (
                case["width"].as_u64().unwrap() as usize,
                case["height"].as_u64().unwrap() as usize,
            );
            let arrays = read_npz(&dir.join(file));
            let image = hf_gradient(width, height);
            let (shape, reference_image) = &arrays["image"];
            assert_eq!(shape, &[height, width, 3], "{file}");
            let generated: Vec<f64> = image.pixels.iter().map(|&v| v as f64).collect();
            assert_eq!(&generated, reference_image, "{file}: input image generator");

            let ours = preprocess(&image, &config(56));
            let (shape, pixels) = &arrays["pixel_values"];
            assert_eq!(shape, &[1, 1, 4, 3, 56, 56], "{file}");
            let diff = max_abs_diff(&ours.pixels, pixels);
            eprintln!("{variant} {file}: max |diff| {diff:.3e}");
            assert!(diff <= PIXEL_TOLERANCE, "{variant} {file}: max diff {diff}");
            assert_eq!(
                ours.aspect_ratio_id as f64, arrays["aspect_ratio_ids"].1[0],
                "{file}"
            );
            let mask: Vec<f64> = ours.aspect_ratio_mask.iter().map(|&m| m as f64).collect();
            assert_eq!(mask, arrays["aspect_ratio_mask"].1, "{file}");
            assert_eq!(ours.num_tiles as f64, arrays["num_tiles"].1[0], "{file}");

            let t56 = &case["tile56"];
            assert_eq!(
                vec![ours.rows, ours.cols],
                usizes(&t56["tiles_hw"]),
                "{file}"
            );
            assert_eq!(
                vec![ours.resized_height, ours.resized_width],
                usizes(&t56["resized_hw"]),
                "{file}"
            );
            let t560 = &case["tile560"];
            let (rows, cols) = optimal_grid(height, width, 4, 560);
            assert_eq!(vec![rows, cols], usizes(&t560["tiles_hw"]), "{file}");
            assert_eq!(
                vec![rows * 560, cols * 560],
                usizes(&t560["canvas_hw"]),
                "{file}"
            );
            let (h, w) = fit_to_canvas(height, width, rows * 560, cols * 560, 560);
            assert_eq!(vec![h, w], usizes(&t560["resized_hw"]), "{file}");
        }
    }
}

/// `refs/tiny-mllama/test.png` through the file loader gives the target's processor outputs.
#[test]
fn meta_ref_test_image() {
    let dir = common::refs_dir().join("tiny-mllama");
    let image = load_image(&dir.join("test.png")).unwrap();
    assert_eq!((image.width, image.height), (97, 61));
    let ours = preprocess(&image, &config(56));
    let (shape, pixels) = common::read_npy(&dir.join("meta_ref/pixel_values.npy"));
    assert_eq!(shape, [1, 1, 4, 3, 56, 56]);
    let pixels: Vec<f64> = pixels.iter().map(|&v| v as f64).collect();
    let diff = max_abs_diff(&ours.pixels, &pixels);
    eprintln!("meta_ref test.png: max |diff| {diff:.3e}");
    assert!(diff <= PIXEL_TOLERANCE, "max diff {diff}");
    let read_ints = |name: &str| {
        let bytes = std::fs::read(dir.join("meta_ref").join(name)).unwrap();
        common::read_npy_bytes(&bytes, name).1
    };
    assert_eq!(read_ints("aspect_ratio_ids.npy"), [6.0]);
    assert_eq!(ours.aspect_ratio_id, 6);
    let mask: Vec<f64> = ours.aspect_ratio_mask.iter().map(|&m| m as f64).collect();
    assert_eq!(read_ints("aspect_ratio_mask.npy"), mask);
}

/// The uint8 levels behind the real tiles, recovered from the normalised values exactly as the
/// reference script does (order [tile][channel][y][x]).
fn recovered_levels(processed: &ProcessedImage, config: &PreprocessConfig) -> Vec<u8> {
    let plane = config.tile_size * config.tile_size;
    let real = &processed.pixels[..processed.num_tiles * 3 * plane];
    real.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % 3;
            let level = ((v as f64 * config.std[c] as f64 + config.mean[c] as f64) * 255.0).round();
            assert!((0.0..=255.0).contains(&level), "{level}");
            level as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn float_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The input of a case of `tests/fixtures/mllama_preprocess`, as our loader sees it.
fn fixture_input(name: &str, width: usize, height: usize) -> RgbImage {
    let dir = fixtures_dir();
    match name {
        _ if name.starts_with("rgb_") => pattern_rgb(width, height),
        "rgba_300x200" => {
            let raw: Vec<u8> = pattern_rgba(width, height).concat();
            let rgba = image::RgbaImage::from_raw(width as u32, height as u32, raw).unwrap();
            let png = encode_png(image::DynamicImage::ImageRgba8(rgba));
            load_image_bytes(&png, name).unwrap()
        }
        "grey_333x250_jpg" => load_image(&dir.join("grey_333x250.jpg")).unwrap(),
        "rgba16_64x48_png" => load_image(&dir.join("rgba16_64x48.png")).unwrap(),
        "palette_trns_90x70_png" => load_image(&dir.join("palette_trns_90x70.png")).unwrap(),
        "rgba_lossless_80x60_webp" => load_image(&dir.join("rgba_lossless_80x60.webp")).unwrap(),
        "two_frames_70x50_gif" => load_image(&dir.join("two_frames_70x50.gif")).unwrap(),
        other => panic!("unknown fixture case {other}"),
    }
}

/// Our decode of the greyscale JPEG against Pillow's (libjpeg): the decoders are different
/// programs, so this is measured and bounded rather than required to be equal.
#[test]
fn jpeg_decode_close_to_pillow() {
    let dir = fixtures_dir();
    let ours = load_image(&dir.join("grey_333x250.jpg")).unwrap();
    let pillow = load_image(&dir.join("grey_333x250_pil_decoded.png")).unwrap();
    assert_eq!((ours.width, ours.height), (pillow.width, pillow.height));
    let diffs: Vec<i32> = ours
        .pixels
        .iter()
        .zip(&pillow.pixels)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let max = diffs.iter().max().unwrap();
    let differing = diffs.iter().filter(|&&d| d != 0).count();
    eprintln!(
        "JPEG decode vs Pillow: max |diff| {max} levels, {differing} of {} samples differ",
        diffs.len()
    );
    assert!(
        *max <= 1,
        "JPEG decode differs from Pillow's by {max} levels"
    );
}

/// Outputs of `tools/scripts/mllama_preprocess_refs.py` at tile 560 and 56: grid, id, mask and
/// sizes exactly; the uint8 levels behind every real tile exactly (sha256); sampled normalised
/// values within 1e-5. The JPEG case is checked on Pillow's decode (the preprocessing), and our
/// own decode is reported.
#[test]
fn processor_refs_560_and_56() {
    let dir = fixtures_dir();
    let index = read_json(&dir.join("index.json"));
    let samples = read_npz(&dir.join("samples.npz"));
    let mut checked = 0;
    for case in index["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (width, height) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let is_jpeg = name.ends_with("_jpg");
        let input = if is_jpeg {
            load_image(&dir.join("grey_333x250_pil_decoded.png")).unwrap()
        } else {
            fixture_input(name, width, height)
        };
        assert_eq!((input.width, input.height), (width, height), "{name}");
        for reference in case["tiles"].as_array().unwrap() {
            let tile = reference["tile"].as_u64().unwrap() as usize;
            let config = config(tile);
            let ours = preprocess(&input, &config);
            let label = format!("{name} tile {tile}");
            assert_eq!(
                vec![ours.rows, ours.cols],
                usizes(&reference["grid_rows_cols"]),
                "{label}"
            );
            assert_eq!(
                vec![ours.resized_height, ours.resized_width],
                usizes(&reference["resized_hw"]),
                "{label}"
            );
            assert_eq!(
                ours.aspect_ratio_id as u64,
                reference["aspect_ratio_id"].as_u64().unwrap(),
                "{label}"
            );
            let mask: Vec<usize> = ours.aspect_ratio_mask.iter().map(|&m| m as usize).collect();
            assert_eq!(mask, usizes(&reference["aspect_ratio_mask"]), "{label}");
            assert_eq!(
                ours.num_tiles as u64,
                reference["num_tiles"].as_u64().unwrap(),
                "{label}"
            );
            assert_eq!(ours.pixels.len(), 4 * 3 * tile * tile, "{label}");

            let key = reference["samples"].as_str().unwrap();
            let idx = &samples[&format!("{key}_idx")].1;
            let val = &samples[&format!("{key}_val")].1;
            let ours_sampled: Vec<f32> = idx.iter().map(|&i| ours.pixels[i as usize]).collect();
            let diff = max_abs_diff(&ours_sampled, val);
            let levels_equal = sha256_hex(&recovered_levels(&ours, &config))
                == reference["levels_sha256"].as_str().unwrap();
            let bits_equal = sha256_hex(&float_bytes(&ours.pixels))
                == reference["pixel_values_sha256"].as_str().unwrap();
            eprintln!(
                "{label}: sampled max |diff| {diff:.3e}, uint8 levels equal {levels_equal}, \
                 float32 bits equal {bits_equal}"
            );
            assert!(diff <= PIXEL_TOLERANCE, "{label}: sampled max diff {diff}");
            assert!(levels_equal, "{label}: resized/padded uint8 levels differ");

            if is_jpeg {
                // Through our own JPEG decoder: the same grid, values within the decoders'
                // difference (at most one level, measured above).
                let decoded = fixture_input(name, width, height);
                let ours = preprocess(&decoded, &config);
                let ours_sampled: Vec<f32> = idx.iter().map(|&i| ours.pixels[i as usize]).collect();
                let diff = max_abs_diff(&ours_sampled, val);
                eprintln!("{label} (our JPEG decode): sampled max |diff| {diff:.3e}");
                let one_level = 1.0 / 255.0 / config.std.iter().fold(f32::MAX, |a, &b| a.min(b));
                assert!(diff <= one_level as f64 + 1e-5, "{label}: {diff}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 22);
}

// ---- bad input ----

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose IHDR claims `width`×`height` (8-bit RGB) followed by `idat` and IEND, with
/// valid chunk CRCs, so only the claimed size is wrong.
fn png_with_header(width: u32, height: u32, idat: &[u8]) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", idat));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// A GIF whose logical screen claims `width`×`height`, with a 1×1 frame.
fn gif_with_header(width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    gif.extend_from_slice(&[0x80, 0, 0]); // global colour table of 2 entries
    gif.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // 1x1 image descriptor
    gif.extend_from_slice(&[2, 2, 0x44, 0x01, 0]); // LZW data
    gif.push(0x3B);
    gif
}

/// A small valid JPEG whose SOF0 frame header is patched to claim `width`×`height`.
fn jpeg_with_header(width: u16, height: u16) -> Vec<u8> {
    let grey = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 16 + y) as u8]));
    let mut bytes = Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(grey)
        .write_to(&mut bytes, image::ImageFormat::Jpeg)
        .unwrap();
    let mut jpeg = bytes.into_inner();
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    // Marker, length (2), precision (1), then height and width big-endian.
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

fn assert_names_file(err: &ImageError, name: &str) {
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn refuses_unknown_format() {
    let err = load_image_bytes(b"just some text, not an image at all", "notes.txt").unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err:?}");
    assert_names_file(&err, "notes.txt");
    // A real format that is not enabled (BMP) is unknown too.
    let err = load_image_bytes(b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0", "a.bmp").unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err:?}");
}

#[test]
fn refuses_corrupt_and_truncated() {
    let mut corrupt = b"\x89PNG\r\n\x1a\n".to_vec();
    corrupt.extend_from_slice(&[0x5A; 200]);
    let err = load_image_bytes(&corrupt, "garbage.png").unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
    assert_names_file(&err, "garbage.png");

    let valid = encode_png(image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(
        64,
        64,
        |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, (x ^ y) as u8]),
    )));
    assert!(load_image_bytes(&valid, "whole.png").is_ok());
    let truncated = &valid[..valid.len() / 2];
    let err = load_image_bytes(truncated, "half.png").unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
    assert_names_file(&err, "half.png");

    // A PNG whose data stream is garbage behind a valid header.
    let bad_idat = png_with_header(8, 8, &[0x78, 0x9C, 1, 2, 3, 4, 5]);
    let err = load_image_bytes(&bad_idat, "bad-idat.png").unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
}

#[test]
fn refuses_empty_images() {
    for (bytes, name) in [
        (png_with_header(0, 10, &[]), "zero-width.png"),
        (png_with_header(10, 0, &[]), "zero-height.png"),
        (gif_with_header(0, 5), "zero.gif"),
    ] {
        let err = load_image_bytes(&bytes, name).unwrap_err();
        assert!(matches!(err, ImageError::Empty { .. }), "{name}: {err:?}");
        assert_names_file(&err, name);
    }
}

#[test]
fn refuses_huge_images_before_decoding() {
    for (bytes, name) in [
        (
            png_with_header(20000, 20000, &[0x78, 0x9C, 3, 0]),
            "huge.png",
        ),
        (png_with_header(16385, 1, &[0x78, 0x9C, 3, 0]), "wide.png"),
        (gif_with_header(20000, 20000), "huge.gif"),
        (jpeg_with_header(20000, 20000), "huge.jpg"),
        (jpeg_with_header(100, 17000), "tall.jpg"),
        // Under the per-side limit, over the pixel budget by one row.
        (
            png_with_header(8192, 8193, &[0x78, 0x9C, 3, 0]),
            "many-pixels.png",
        ),
        // Found by the fuzzer (fuzz/regressions/image): 45 bytes of lossless WebP announcing
        // 11594x8577, which used to decode in full (1.45 s, 821 MB).
        (
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fuzz/regressions/image/webp-lossless-11594x8577.webp"),
            )
            .unwrap(),
            "bomb.webp",
        ),
    ] {
        let start = Instant::now();
        let err = load_image_bytes(&bytes, name).unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            matches!(err, ImageError::TooLarge { .. }),
            "{name}: {err:?}"
        );
        assert_names_file(&err, name);
        assert!(
            elapsed < Duration::from_millis(500),
            "{name}: took {elapsed:?}"
        );
    }
    // The limit itself is allowed through the size check (this one then fails on its data).
    let err = load_image_bytes(&png_with_header(16384, 1, &[0x78, 0x9C, 3, 0]), "edge.png");
    assert!(matches!(err, Err(ImageError::Corrupt { .. })), "{err:?}");
    let err = load_image_bytes(
        &png_with_header(8192, 8192, &[0x78, 0x9C, 3, 0]),
        "edge.png",
    );
    assert!(matches!(err, Err(ImageError::Corrupt { .. })), "{err:?}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let path = fixtures_dir().join("does-not-exist.png");
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err:?}");
    assert_names_file(&err, "does-not-exist.png");
}

/// 16-bit greyscale keeps the high byte of each sample, like every other 16-bit input. This is a
/// deliberate departure from Pillow, which clips 16-bit grey at 255 when converting to RGB (so
/// the reference processor sees an almost white image).
#[test]
fn grey16_keeps_high_byte() {
    let values: Vec<u16> = (0..64u16).map(|i| i * 1031).collect();
    let grey = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(8, 8, values.clone()).unwrap();
    let png = encode_png(image::DynamicImage::ImageLuma16(grey));
    let rgb = load_image_bytes(&png, "grey16.png").unwrap();
    let expected: Vec<u8> = values.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect();
    assert_eq!(rgb.pixels, expected);
}
