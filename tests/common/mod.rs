//! Helpers shared by the integration tests: reference locations, the test model, npy arrays.
#![allow(dead_code)]

pub mod measured;
pub mod tiny_gguf;

use std::path::{Path, PathBuf};

/// `../shared` next to the project root (where CI lays it out too).
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn refs_dir() -> PathBuf {
    shared_dir().join("refs")
}

/// The real SmolLM2-135M-Instruct Q4_1 GGUF: `$LUMEN_TEST_MODEL`, else the model cache
/// (`$LUMEN_HOME`), fetching it there on first use exactly as `lumen run` does.
pub fn smollm2_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LUMEN_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let registry = lumen::registry::Registry::builtin();
    fetch(registry.get("smollm2-135m-instruct").expect("registered"))
}

/// A registered model by id, from the cache (`$LUMEN_HOME`), fetched there on first use.
pub fn model_path(id: &str) -> PathBuf {
    let registry = lumen::registry::Registry::builtin();
    fetch(registry.get(id).unwrap_or_else(|e| panic!("{e}")))
}

/// A registered non-model file (models.toml `[[asset]]`), fetched like a model.
pub fn asset_path(id: &str) -> PathBuf {
    let registry = lumen::registry::Registry::builtin();
    fetch(registry.asset(id).unwrap_or_else(|e| panic!("{e}")))
}

fn fetch(entry: &lumen::registry::ModelEntry) -> PathBuf {
    entry
        .ensure(&lumen::registry::cache_dir(), &mut |_| {})
        .unwrap_or_else(|e| panic!("cannot fetch '{}': {e}", entry.id))
}

/// A little-endian float32 or float64 `.npy` array, returned as f32 with its shape.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not an npy file",
        path.display()
    );
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[header_start..header_start + header_len]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data = &bytes[header_start + header_len..];
    let values = if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else if header.contains("'<f8'") {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect()
    } else {
        panic!("{}: unsupported dtype in {header}", path.display())
    };
    (shape, values)
}

pub fn rel_l2(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let diff: f64 = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = reference.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

pub fn argmax(x: &[f32]) -> usize {
    x.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > x[best] { i } else { best })
}

/// A little-endian `.npy` array held in memory (e.g. a member of an `.npz` zip), any of the
/// float, signed/unsigned integer or bool dtypes, returned as f64 (exact for f32 and for
/// integers below 2^53) with its shape. `name` labels panics.
pub fn read_npy_bytes(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f64>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{name}: not an npy file");
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[header_start..header_start + header_len]).unwrap();
    assert!(
        header.contains("'fortran_order': False"),
        "{name}: {header}"
    );
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("{name}: no shape in {header}"))
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let descr = header
        .split("'descr': '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or_else(|| panic!("{name}: no descr in {header}"));
    let data = &bytes[header_start + header_len..];
    fn convert<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap()))
            .collect()
    }
    let values = match descr {
        "<f4" => convert(data, |b| f32::from_le_bytes(b) as f64),
        "<f8" => convert(data, f64::from_le_bytes),
        "<i8" => convert(data, |b| i64::from_le_bytes(b) as f64),
        "<i4" => convert(data, |b| i32::from_le_bytes(b) as f64),
        "<u2" => convert(data, |b| u16::from_le_bytes(b) as f64),
        "|u1" | "|b1" => convert(data, |b: [u8; 1]| b[0] as f64),
        "|i1" => convert(data, |b: [u8; 1]| b[0] as i8 as f64),
        other => panic!("{name}: unsupported dtype {other}"),
    };
    let count: usize = shape.iter().product();
    assert_eq!(values.len(), count, "{name}: {header}");
    (shape, values)
}
