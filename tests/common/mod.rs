//! Helpers shared by the integration tests: reference locations, the test model, npy arrays.
#![allow(dead_code)]

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
    let entry = registry.get("smollm2-135m-instruct").expect("registered");
    entry
        .ensure(&lumen::registry::cache_dir(), &mut |_| {})
        .unwrap_or_else(|e| panic!("cannot fetch the test model: {e}"))
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
