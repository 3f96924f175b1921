"""Reference outputs of transformers' `MllamaImageProcessorPil` (the PIL backend, bit-identical to
transformers 4.46.3's only processor) for `tests/mllama_image_proc.rs`.

Run with the torch venv (transformers 5.x, numpy, Pillow):

    $VENV_TORCH/bin/python tools/scripts/mllama_preprocess_refs.py \
        tests/fixtures/mllama_preprocess

Inputs. The large RGB/RGBA images are generated from integer formulas that the Rust test
reimplements (`pattern` below), so only their outputs are committed. Inputs whose bytes matter
(a greyscale JPEG, a 16-bit RGBA PNG, a palette PNG with tRNS, a lossless RGBA WebP, a two-frame
GIF with a transparent index) are written as files next to the
outputs and read by both sides; for the JPEG, Pillow's decode is also saved as a lossless PNG so
the test can tell a decoder difference from a preprocessing difference.

Outputs (kept small: full 4x3x560x560 arrays would be 15 MB per case):
- `index.json`: per case and tile size (560 real, 56 tiny): grid, aspect-ratio id and mask,
  num_tiles, resized size, the sha256 of the uint8 levels behind the real tiles (recovered from
  pixel_values exactly, order [tile][channel][y][x]) and the sha256 of the float32 pixel_values;
- `samples.npz`: for each, 2048 flat positions of pixel_values `[4, 3, T, T]` and their values.
"""
import hashlib
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
import PIL.Image
import transformers
from transformers.models.mllama.image_processing_pil_mllama import (
    MllamaImageProcessorPil,
    get_image_size_fit_to_canvas,
    get_optimal_tiled_canvas,
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MAX_TILES = 4
TILES = [560, 56]
N_SAMPLES = 2048


def pattern(width, height):
    """uint8 [H, W, 4]: smooth, blocky and high-frequency content, and every alpha level.
    R = x*255 // (W-1), G = ((x//7)*37 + (y//5)*91) % 256, B = (x*x + 3*y*y + x*y) % 256,
    A = (3x + 5y) % 256."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    r = x * 255 // max(width - 1, 1)
    g = ((x // 7) * 37 + (y // 5) * 91) % 256
    b = (x * x + 3 * y * y + x * y) % 256
    a = (3 * x + 5 * y) % 256
    return np.stack([r, g, b, a], -1).astype(np.uint8)


def png_bytes(width, height, bit_depth, color_type, rows, extra_chunks=()):
    """A minimal PNG (filter 0 on every row), for modes Pillow cannot write."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    body = chunk(b"IHDR", header)
    for kind, data in extra_chunks:
        body += chunk(kind, data)
    body += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def reopen(image, fmt, **save_args):
    buf = io.BytesIO()
    image.save(buf, fmt, **save_args)
    return PIL.Image.open(io.BytesIO(buf.getvalue()))


def make_inputs(out_dir):
    """(name, PIL image as the processor receives it, description)."""
    cases = []
    for w, h in [(1500, 300), (200, 900), (3000, 500), (300, 2600), (45, 31)]:
        rgb = pattern(w, h)[..., :3]
        cases.append((f"rgb_{w}x{h}", PIL.Image.fromarray(rgb, "RGB"), "pattern RGB"))

    rgba = pattern(300, 200)
    cases.append(
        ("rgba_300x200", reopen(PIL.Image.fromarray(rgba, "RGBA"), "PNG"), "pattern RGBA PNG")
    )

    # Greyscale JPEG: the file is committed; Pillow's decode is kept as a lossless PNG.
    y, x = np.mgrid[0:250, 0:333]
    grey = (((x * x + y * y) // 13) % 256).astype(np.uint8)
    jpeg_path = out_dir / "grey_333x250.jpg"
    PIL.Image.fromarray(grey, "L").save(jpeg_path, "JPEG", quality=90)
    jpeg = PIL.Image.open(jpeg_path)
    assert jpeg.mode == "L", jpeg.mode
    PIL.Image.fromarray(np.array(jpeg), "L").save(out_dir / "grey_333x250_pil_decoded.png")
    cases.append(("grey_333x250_jpg", jpeg, "greyscale JPEG file"))

    # 16-bit RGBA PNG: Pillow keeps the high byte of each sample, then composites onto white.
    p = pattern(64, 48).astype(np.uint16)
    rgba16 = (p * 257 + (p * 7) % 256).astype(">u2")  # low bytes vary too
    data = png_bytes(64, 48, 16, 6, [row.tobytes() for row in rgba16])
    (out_dir / "rgba16_64x48.png").write_bytes(data)
    cases.append(("rgba16_64x48_png", PIL.Image.open(out_dir / "rgba16_64x48.png"), "16-bit RGBA PNG"))

    # Palette PNG with a tRNS chunk (partial transparency per palette entry).
    palette = bytes((i * 5 % 256, 255 - i * 3 % 256, i * 11 % 256)[c] for i in range(64) for c in range(3))
    trns = bytes((i * 4) % 256 for i in range(64))
    yy, xx = np.mgrid[0:70, 0:90]
    indices = ((xx // 3 + yy // 2 * 5) % 64).astype(np.uint8)
    data = png_bytes(
        90, 70, 8, 3, [row.tobytes() for row in indices], [(b"PLTE", palette), (b"tRNS", trns)]
    )
    (out_dir / "palette_trns_90x70.png").write_bytes(data)
    im = PIL.Image.open(out_dir / "palette_trns_90x70.png")
    assert im.mode == "P" and "transparency" in im.info
    cases.append(("palette_trns_90x70_png", im, "palette PNG with tRNS"))

    # Lossless RGBA WebP (partial transparency).
    webp = PIL.Image.fromarray(pattern(80, 60), "RGBA")
    webp.save(out_dir / "rgba_lossless_80x60.webp", "WEBP", lossless=True, exact=True)
    im = PIL.Image.open(out_dir / "rgba_lossless_80x60.webp")
    assert im.mode == "RGBA"
    assert (np.array(im) == pattern(80, 60)).all()
    cases.append(("rgba_lossless_80x60_webp", im, "lossless RGBA WebP"))

    # Two-frame GIF with a transparent palette index: only the first frame counts.
    frames = []
    for shift in (0, 17):
        idx = ((xx[:50, :70] // 4 + yy[:50, :70] // 3 * 7 + shift) % 64).astype(np.uint8)
        frame = PIL.Image.fromarray(idx, "P")
        frame.putpalette(palette)
        frames.append(frame)
    frames[0].save(
        out_dir / "two_frames_70x50.gif", save_all=True, append_images=frames[1:],
        transparency=5, duration=100, disposal=2,
    )
    im = PIL.Image.open(out_dir / "two_frames_70x50.gif")
    assert im.mode == "P" and im.info.get("transparency") == 5 and im.n_frames == 2
    cases.append(("two_frames_70x50_gif", im, "two-frame GIF with a transparent index"))
    return cases


def recovered_levels(pixel_values, num_tiles, tile):
    """The uint8 levels behind the real tiles (exact: one level is ~15 units of pixel_values)."""
    mean = np.array(CLIP_MEAN, np.float64)[None, :, None, None]
    std = np.array(CLIP_STD, np.float64)[None, :, None, None]
    real = pixel_values[:num_tiles].astype(np.float64)
    levels = np.round((real * std + mean) * 255.0)
    assert levels.min() >= 0 and levels.max() <= 255
    back = ((levels / 255.0).astype(np.float32) - np.float32(mean)) / np.float32(std)
    assert np.abs(back - real).max() < 1e-5, "levels do not round-trip"
    return levels.astype(np.uint8)


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/mllama_preprocess")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261127)
    index = {
        "generator": "tools/scripts/mllama_preprocess_refs.py",
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
        "class": "MllamaImageProcessorPil",
        "pattern": pattern.__doc__.split("\n", 1)[1].strip(),
        "max_tiles": MAX_TILES,
        "mean": CLIP_MEAN,
        "std": CLIP_STD,
        "n_samples": N_SAMPLES,
        "cases": [],
    }
    samples = {}
    for name, image, description in make_inputs(out_dir):
        entry = {"name": name, "input": description, "width": image.width, "height": image.height,
                 "pil_mode": image.mode, "tiles": []}
        if name == "grey_333x250_jpg":
            entry["pil_decoded_sha256"] = hashlib.sha256(np.array(image).tobytes()).hexdigest()
        for tile in TILES:
            processor = MllamaImageProcessorPil(
                size={"height": tile, "width": tile},
                max_image_tiles=MAX_TILES,
                image_mean=CLIP_MEAN,
                image_std=CLIP_STD,
                do_convert_rgb=True,
            )
            out = processor(images=[[image]], return_tensors="np")
            pv = out["pixel_values"][0, 0]
            assert pv.dtype == np.float32 and pv.shape == (MAX_TILES, 3, tile, tile)
            num_tiles = int(out["num_tiles"][0][0])
            canvas = get_optimal_tiled_canvas(image.height, image.width, MAX_TILES, tile)
            resized = get_image_size_fit_to_canvas(image.height, image.width, *canvas, tile)
            levels = recovered_levels(pv, num_tiles, tile)
            flat = pv.reshape(-1)
            idx = np.sort(rng.choice(flat.size, N_SAMPLES, replace=False)).astype(np.int64)
            key = f"{name}_t{tile}"
            samples[key + "_idx"] = idx
            samples[key + "_val"] = flat[idx]
            entry["tiles"].append({
                "tile": tile,
                "grid_rows_cols": [int(canvas[0]) // tile, int(canvas[1]) // tile],
                "resized_hw": [int(resized[0]), int(resized[1])],
                "aspect_ratio_id": int(out["aspect_ratio_ids"][0, 0]),
                "aspect_ratio_mask": [int(v) for v in out["aspect_ratio_mask"][0, 0]],
                "num_tiles": num_tiles,
                "levels_sha256": hashlib.sha256(levels.tobytes()).hexdigest(),
                "pixel_values_sha256": hashlib.sha256(pv.astype("<f4").tobytes()).hexdigest(),
                "samples": key,
            })
        index["cases"].append(entry)
        print(name, [(t["tile"], t["grid_rows_cols"], t["resized_hw"]) for t in entry["tiles"]])
    np.savez_compressed(out_dir / "samples.npz", **samples)
    (out_dir / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
