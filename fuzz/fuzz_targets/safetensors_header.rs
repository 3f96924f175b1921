//! Arbitrary bytes as a single-file safetensors checkpoint, through the converter's reader:
//! an error or a checkpoint whose every tensor range lies inside the file, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lumen_tools::convert::safetensors::{Checkpoint, SINGLE_FILE};

/// `Checkpoint::open` reads a directory: one scratch directory per fuzzing process.
fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lumen-fuzz-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    std::fs::write(dir.join(SINGLE_FILE), data).expect("writing the scratch file");
    let Ok(ckpt) = Checkpoint::open(dir) else {
        return;
    };
    for t in ckpt.tensors.values() {
        assert!(t.range.start <= t.range.end && t.range.end <= data.len());
        assert_eq!(ckpt.bytes(t).len(), t.range.len());
        if let Ok(dtype) = t.dtype {
            let n_bytes = t
                .shape
                .iter()
                .try_fold(dtype.size(), |n, &d| n.checked_mul(d));
            assert_eq!(
                n_bytes,
                Some(t.range.len()),
                "shape disagrees with the byte range"
            );
        }
    }
    let _ = ckpt.names().count();
});
