//! Image preprocessing as the reference `MllamaImageProcessor` does it.
//!
//! image file → RGB (alpha composited onto white) → choose a tile grid → resize with PIL's
//! BILINEAR filter on uint8 → pad bottom/right with black → ×1/255 → (x − mean)/std → split into
//! row-major tiles, packed to `max_tiles` (absent tiles are exact zeros).
//!
//! The resize reproduces Pillow's two-pass fixed-point resampler bit for bit, because the
//! normalised values then equal the reference processor's to float rounding; any other bilinear
//! resize moves pixels by a level or more. See `shared/specs/MLLAMA_PREPROCESS.md`.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Largest accepted width or height, checked on the header before anything is decoded.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Most pixels an accepted image may have (8192 × 8192), also checked on the header. The model
/// never sees more than four 560-pixel tiles (1.25 Mpx), so this only has to admit real photos
/// (a 48 Mpx phone picture, an 8K frame is 33 Mpx) while refusing the few-byte WebP or PNG
/// that announces 100+ Mpx and would cost a second of CPU and most of a gigabyte to decode.
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

/// Most memory a decoder may allocate (a 16384² RGBA8 image needs exactly 1 GiB).
pub const DECODE_ALLOC_LIMIT: u64 = 1 << 30;

/// The OpenAI CLIP normalisation that Llama 3.2 Vision was trained with, as published; the
/// nearest f32 is what the reference's float32 cast gives.
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{name}: cannot read the image: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("{name}: unknown or unsupported image format (expected PNG, JPEG, WebP or GIF)")]
    UnknownFormat { name: String },
    #[error("{name}: the image is empty ({width}x{height})")]
    Empty {
        name: String,
        width: u32,
        height: u32,
    },
    #[error("{name}: the image is {width}x{height}, over the limits of {MAX_IMAGE_SIDE} pixels a side and {MAX_IMAGE_PIXELS} pixels in all; scale it down first")]
    TooLarge {
        name: String,
        width: u32,
        height: u32,
    },
    #[error("{name}: decoding the {width}x{height} image needs {bytes} bytes, over the {DECODE_ALLOC_LIMIT}-byte limit")]
    TooMuchMemory {
        name: String,
        width: u32,
        height: u32,
        bytes: u64,
    },
    #[error("{name}: corrupt or truncated image: {source}")]
    Corrupt {
        name: String,
        source: image::ImageError,
    },
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`[height, width, 3]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// An image whose pixel (x, y) is `f(x, y)`.
    pub fn from_fn(
        width: usize,
        height: usize,
        mut f: impl FnMut(usize, usize) -> [u8; 3],
    ) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&f(x, y));
            }
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }
}

/// Tile size, tile budget and normalisation; the GGUF carries `mllama.vision.image_size`,
/// `mllama.vision.max_num_tiles` and optionally the mean/std.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub tile_size: usize,
    pub max_tiles: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    /// The released Llama 3.2 Vision models: 560×560 tiles, up to 4 of them, CLIP mean/std.
    fn default() -> Self {
        PreprocessConfig {
            tile_size: 560,
            max_tiles: 4,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }
}

/// What the vision encoder consumes for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `[max_tiles, 3, tile, tile]`; tiles past `num_tiles` are all zero.
    pub pixels: Vec<f32>,
    /// 1-based index of (rows, cols) in [`supported_aspect_ratios`] (HF/Meta numbering).
    pub aspect_ratio_id: usize,
    /// `[max_tiles]`: 1 for the first `num_tiles` tiles.
    pub aspect_ratio_mask: Vec<u8>,
    pub num_tiles: usize,
    /// The tile grid.
    pub rows: usize,
    pub cols: usize,
    /// Size of the image after the resize, before padding to the grid.
    pub resized_height: usize,
    pub resized_width: usize,
}

/// Reads, decodes and preprocesses an image file: `preprocess(&load_image(path)?, config)`.
pub fn load_and_preprocess(
    path: &Path,
    config: &PreprocessConfig,
) -> Result<ProcessedImage, ImageError> {
    Ok(preprocess(&load_image(path)?, config))
}

/// Reads and decodes an image file (see [`load_image_bytes`]).
pub fn load_image(path: &Path) -> Result<RgbImage, ImageError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        name: name.clone(),
        source,
    })?;
    load_image_bytes(&bytes, &name)
}

/// Decodes PNG, JPEG, WebP or GIF (first frame) bytes to RGB; `name` labels errors.
/// The size is checked on the header before decoding, and decoding runs under a memory limit.
/// EXIF orientation is applied, as transformers' `load_image` does.
pub fn load_image_bytes(bytes: &[u8], name: &str) -> Result<RgbImage, ImageError> {
    // PNG and GIF headers are read directly: their decoders reject a zero side with a generic
    // format error, and a clear "empty"/"too large" message is worth the few lines.
    if let Some((width, height)) = peek_header_dimensions(bytes) {
        check_dimensions(name, width, height)?;
    }
    let corrupt = |source| ImageError::Corrupt {
        name: name.to_string(),
        source,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            name: name.to_string(),
            source,
        })?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif) => {}
        _ => {
            return Err(ImageError::UnknownFormat {
                name: name.to_string(),
            })
        }
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(DECODE_ALLOC_LIMIT);
    reader.limits(limits);

    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(name, width, height)?;
    let bytes = decoder.total_bytes();
    if bytes > DECODE_ALLOC_LIMIT {
        return Err(ImageError::TooMuchMemory {
            name: name.to_string(),
            width,
            height,
            bytes,
        });
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(to_rgb_like_pil(image))
}

fn check_dimensions(name: &str, width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty {
            name: name.to_string(),
            width,
            height,
        });
    }
    let pixels = width as u64 * height as u64;
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || pixels > MAX_IMAGE_PIXELS {
        return Err(ImageError::TooLarge {
            name: name.to_string(),
            width,
            height,
        });
    }
    Ok(())
}

/// Width and height from a PNG IHDR or a GIF logical screen descriptor, if the bytes are one.
fn peek_header_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let be32 = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    let le16 = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]) as u32;
    if bytes.len() >= 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR" {
        return Some((be32(16), be32(20)));
    }
    if bytes.len() >= 10 && (bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a")) {
        return Some((le16(6), le16(8)));
    }
    None
}

/// RGB conversion as transformers' `convert_to_rgb` on a PIL image: images with alpha are
/// composited onto white with Pillow's integer `alpha_composite`, the rest converted directly.
/// 16-bit samples keep their high byte, as Pillow reads 16-bit RGB(A) PNGs. (Pillow converts
/// 16-bit greyscale by clipping at 255, which turns almost every pixel white; we deliberately take
/// the high byte there too.)
fn to_rgb_like_pil(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels: Vec<u8> = match image {
        DynamicImage::ImageRgb8(im) => im.into_raw(),
        DynamicImage::ImageLuma8(im) => im.into_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(im) => im
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| composite_on_white([p[0], p[0], p[0]], p[1]))
            .collect(),
        DynamicImage::ImageRgba8(im) => rgba_on_white(im.as_raw()),
        DynamicImage::ImageLuma16(im) => im
            .into_raw()
            .iter()
            .flat_map(|&l| [high_byte(l); 3])
            .collect(),
        DynamicImage::ImageLumaA16(im) => im
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| composite_on_white([high_byte(p[0]); 3], high_byte(p[1])))
            .collect(),
        DynamicImage::ImageRgb16(im) => im.into_raw().iter().map(|&v| high_byte(v)).collect(),
        DynamicImage::ImageRgba16(im) => {
            let bytes: Vec<u8> = im.into_raw().iter().map(|&v| high_byte(v)).collect();
            rgba_on_white(&bytes)
        }
        // Float images come only from HDR formats, which are not enabled.
        other => rgba_on_white(other.to_rgba8().as_raw()),
    };
    RgbImage {
        width,
        height,
        pixels,
    }
}

fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

fn rgba_on_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| composite_on_white([p[0], p[1], p[2]], p[3]))
        .collect()
}

/// Pillow's `alpha_composite(white, src)` (AlphaComposite.c, 7 fractional bits, divisions by 255
/// done with shifts), specialised to an opaque white destination.
fn composite_on_white(rgb: [u8; 3], alpha: u8) -> [u8; 3] {
    const BITS: u32 = 7;
    if alpha == 0 {
        return [255; 3];
    }
    let a = alpha as u32;
    let blend = 255 * (255 - a);
    let out_alpha_255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << BITS) / out_alpha_255;
    let coef2 = 255 * (1 << BITS) - coef1;
    let shift_div_255 = |v: u32| ((v >> 8) + v) >> 8;
    rgb.map(|c| {
        let t = c as u32 * coef1 + 255 * coef2;
        (shift_div_255(t + (0x80 << BITS)) >> BITS) as u8
    })
}

/// Tile grids (rows, cols) with rows·cols ≤ `max_tiles`, rows as the outer loop; the position
/// in this list + 1 is the aspect-ratio id.
pub fn supported_aspect_ratios(max_tiles: usize) -> Vec<(usize, usize)> {
    let mut grids = Vec::new();
    for rows in 1..=max_tiles {
        for cols in 1..=max_tiles {
            if rows * cols <= max_tiles {
                grids.push((rows, cols));
            }
        }
    }
    grids
}

/// The tile grid (rows, cols) for an image, as `get_optimal_tiled_canvas`: the least upscaling
/// that fits the whole image, else the least downscaling; ties go to the smallest canvas, then
/// to the first grid in list order.
pub fn optimal_grid(height: usize, width: usize, max_tiles: usize, tile: usize) -> (usize, usize) {
    let grids = supported_aspect_ratios(max_tiles);
    let scales: Vec<f64> = grids
        .iter()
        .map(|&(rows, cols)| {
            let scale_h = (rows * tile) as f64 / height as f64;
            let scale_w = (cols * tile) as f64 / width as f64;
            if scale_w > scale_h {
                scale_h
            } else {
                scale_w
            }
        })
        .collect();
    let upscale = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .reduce(f64::min);
    let selected = upscale.unwrap_or_else(|| scales.iter().copied().reduce(f64::max).unwrap());
    let mut best: Option<(usize, usize)> = None;
    for (&grid, &scale) in grids.iter().zip(&scales) {
        let area = |(r, c): (usize, usize)| r * c;
        if scale == selected && best.is_none_or(|b| area(grid) < area(b)) {
            best = Some(grid);
        }
    }
    best.unwrap()
}

/// Size (height, width) of the image resized into the canvas, as `get_image_size_fit_to_canvas`:
/// each side is first clamped to [tile, canvas side]; the side that needs the smaller scale gets
/// its target and the other follows the aspect ratio (floored, at least 1).
pub fn fit_to_canvas(
    height: usize,
    width: usize,
    canvas_height: usize,
    canvas_width: usize,
    tile: usize,
) -> (usize, usize) {
    let target_w = width.clamp(tile, canvas_width);
    let target_h = height.clamp(tile, canvas_height);
    let scale_h = target_h as f64 / height as f64;
    let scale_w = target_w as f64 / width as f64;
    let at_least_one = |v: f64| (v.floor() as usize).max(1);
    if scale_w < scale_h {
        (
            at_least_one(height as f64 * scale_w).min(target_h),
            target_w,
        )
    } else {
        (target_h, at_least_one(width as f64 * scale_h).min(target_w))
    }
}

/// 1-based id of a grid in [`supported_aspect_ratios`].
pub fn aspect_ratio_id(rows: usize, cols: usize, max_tiles: usize) -> usize {
    supported_aspect_ratios(max_tiles)
        .iter()
        .position(|&g| g == (rows, cols))
        .map(|i| i + 1)
        .expect("grid comes from supported_aspect_ratios")
}

/// Resizes, pads, normalises and tiles one image. The image must not be empty (no loaded image
/// is) and the tile size and count must be positive (the model loader checks them).
pub fn preprocess(image: &RgbImage, config: &PreprocessConfig) -> ProcessedImage {
    assert!(
        image.width > 0 && image.height > 0 && config.tile_size > 0 && config.max_tiles > 0,
        "preprocess: empty image {}x{} or bad config {config:?}",
        image.width,
        image.height
    );
    let tile = config.tile_size;
    let (rows, cols) = optimal_grid(image.height, image.width, config.max_tiles, tile);
    let (resized_height, resized_width) =
        fit_to_canvas(image.height, image.width, rows * tile, cols * tile, tile);
    let resized = resize_bilinear(image, resized_width, resized_height);

    let levels = normalised_levels(config);
    let num_tiles = rows * cols;
    let tile_len = 3 * tile * tile;
    let mut pixels = vec![0f32; config.max_tiles * tile_len];
    for (t, out) in pixels
        .chunks_exact_mut(tile_len)
        .take(num_tiles)
        .enumerate()
    {
        let (top, left) = ((t / cols) * tile, (t % cols) * tile);
        for (c, plane) in out.chunks_exact_mut(tile * tile).enumerate() {
            for (y, row) in plane.chunks_exact_mut(tile).enumerate() {
                for (x, v) in row.iter_mut().enumerate() {
                    let (sy, sx) = (top + y, left + x);
                    // Padding (bottom/right) is black before normalisation.
                    let level = if sy < resized.height && sx < resized.width {
                        resized.pixels[(sy * resized.width + sx) * 3 + c]
                    } else {
                        0
                    };
                    *v = levels[c][level as usize];
                }
            }
        }
    }
    ProcessedImage {
        pixels,
        aspect_ratio_id: aspect_ratio_id(rows, cols, config.max_tiles),
        aspect_ratio_mask: (0..config.max_tiles)
            .map(|t| u8::from(t < num_tiles))
            .collect(),
        num_tiles,
        rows,
        cols,
        resized_height,
        resized_width,
    }
}

/// The normalised value of every uint8 level per channel, with the reference's arithmetic:
/// rescale in float64 then cast to float32, subtract and divide in float32.
fn normalised_levels(config: &PreprocessConfig) -> [[f32; 256]; 3] {
    let mut table = [[0f32; 256]; 3];
    for (c, channel) in table.iter_mut().enumerate() {
        for (level, v) in channel.iter_mut().enumerate() {
            let rescaled = (level as f64 * (1.0 / 255.0)) as f32;
            *v = (rescaled - config.mean[c]) / config.std[c];
        }
    }
    table
}

/// Pillow's fixed-point precision for 8-bit resampling (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Per-output-pixel source windows and fixed-point weights along one axis.
struct Coefficients {
    /// Weights per output pixel (unused tail entries are zero).
    ksize: usize,
    /// (first source index, number of source pixels) per output pixel.
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` for the BILINEAR (triangle) filter followed by
/// `normalize_coeffs_8bpc`. When shrinking, the filter is widened by the scale, so every source
/// pixel contributes (area-aware, unlike textbook bilinear).
fn bilinear_coefficients(in_size: usize, out_size: usize) -> Coefficients {
    const SUPPORT: f64 = 1.0;
    let triangle = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = SUPPORT * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inverse = 1.0 / filter_scale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut window = vec![0f64; ksize];
    for (xx, out) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // `as` truncates toward zero like C's (int) cast.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax - xmin;
        let mut total = 0.0;
        for (x, w) in window.iter_mut().take(count).enumerate() {
            *w = triangle(((x + xmin) as f64 - center + 0.5) * inverse);
            total += *w;
        }
        for (w, fixed) in window.iter().take(count).zip(out.iter_mut()) {
            let w = if total != 0.0 { w / total } else { *w };
            let scaled = w * (1u32 << PRECISION_BITS) as f64;
            *fixed = if w < 0.0 {
                (scaled - 0.5) as i32
            } else {
                (scaled + 0.5) as i32
            };
        }
        bounds.push((xmin, count));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

/// Rounds a fixed-point sum (which already holds the +0.5) back to a clipped uint8.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One output sample: `sum(source[i] * weight[i]) + 0.5`, as Pillow accumulates it.
fn weighted_sum(samples: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let mut sum: i64 = 1 << (PRECISION_BITS - 1);
    for (s, &w) in samples.zip(weights) {
        sum += s as i64 * w as i64;
    }
    clip8(sum)
}

/// `PIL.Image.resize((width, height), BILINEAR)` on an RGB uint8 image, bit for bit: two
/// separable passes with a uint8 intermediate, a pass whose size does not change skipped, in
/// Pillow's order — the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width does (Pillow 13's `ImagingResampleInner`; the order changes results by
/// up to a level), else the horizontal pass first, over only the source rows the vertical pass
/// reads.
pub fn resize_bilinear(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let need_horizontal = width != image.width;
    let need_vertical = height != image.height;
    if !need_horizontal && !need_vertical {
        return image.clone();
    }
    let height_shrink = image.height as i64 - height as i64;
    let width_shrink = image.width as i64 - width as i64;
    let vertical_first = height_shrink > 0 && height_shrink > 2 * width_shrink;

    let vertical = bilinear_coefficients(image.height, height);
    let horizontal = bilinear_coefficients(image.width, width);
    if vertical_first {
        let rows = if need_vertical {
            vertical_pass(image, &vertical, 0)
        } else {
            image.clone()
        };
        return if need_horizontal {
            horizontal_pass(&rows, 0..rows.height, &horizontal)
        } else {
            rows
        };
    }
    if !need_horizontal {
        return vertical_pass(image, &vertical, 0);
    }
    let first_row = vertical.bounds[0].0;
    let (last_start, last_count) = vertical.bounds[height - 1];
    let columns = horizontal_pass(image, first_row..last_start + last_count, &horizontal);
    if need_vertical {
        // The intermediate starts at source row `first_row`.
        vertical_pass(&columns, &vertical, first_row)
    } else {
        columns
    }
}

/// Resamples each row in `rows` of `image` to the coefficients' output width.
fn horizontal_pass(
    image: &RgbImage,
    rows: std::ops::Range<usize>,
    coeffs: &Coefficients,
) -> RgbImage {
    let width = coeffs.bounds.len();
    let height = rows.len();
    let mut out = Vec::with_capacity(height * width * 3);
    for y in rows {
        let row = &image.pixels[y * image.width * 3..(y + 1) * image.width * 3];
        for (xx, &(xmin, count)) in coeffs.bounds.iter().enumerate() {
            let k = &coeffs.weights[xx * coeffs.ksize..][..count];
            for c in 0..3 {
                let samples = (xmin..xmin + count).map(|x| row[x * 3 + c]);
                out.push(weighted_sum(samples, k));
            }
        }
    }
    RgbImage {
        width,
        height,
        pixels: out,
    }
}

/// Resamples each column to the coefficients' output height; row `r` of `image` is source row
/// `r + row_offset`.
fn vertical_pass(image: &RgbImage, coeffs: &Coefficients, row_offset: usize) -> RgbImage {
    let stride = image.width * 3;
    let height = coeffs.bounds.len();
    let mut out = Vec::with_capacity(height * stride);
    for (yy, &(ymin, count)) in coeffs.bounds.iter().enumerate() {
        let k = &coeffs.weights[yy * coeffs.ksize..][..count];
        let ymin = ymin - row_offset;
        for i in 0..stride {
            let samples = (ymin..ymin + count).map(|y| image.pixels[y * stride + i]);
            out.push(weighted_sum(samples, k));
        }
    }
    RgbImage {
        width: image.width,
        height,
        pixels: out,
    }
}
