//! Arbitrary bytes as a GGUF file: opening must succeed or return an error, never panic, and
//! whatever opens must also survive building a tokenizer, a chat template and the model.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use lumen::chat::ChatTemplate;
use lumen::gguf::{GgufFile, OpenOptions};
use lumen::model::mllama::{is_mllama, Mllama};
use lumen::model::Llama;
use lumen::tokenizer::{Tokenizer, VocabSpec};

/// `GgufFile` only opens paths: one scratch file per fuzzing process, rewritten every input.
fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("lumen-fuzz-gguf-{}.gguf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_path();
    std::fs::write(path, data).expect("writing the scratch file");
    // The first byte's low bit picks the storage, so both the mapped and the owned copy run.
    let mmap = data.first().is_some_and(|b| b & 1 == 0);
    let Ok(file) = GgufFile::open_with(path, OpenOptions { mmap }) else {
        return;
    };
    exercise(Arc::new(file));
});

fn exercise(file: Arc<GgufFile>) {
    assert!(file.file_len() == std::fs::metadata(file.path()).unwrap().len() as usize);
    for info in file.tensors() {
        // Validated on open: every tensor's bytes lie inside the file.
        assert_eq!(file.tensor_bytes(info).len(), info.n_bytes);
        assert!(info.offset + info.n_bytes <= file.file_len());
    }
    let _ = file.n_params();
    let _ = file.type_mix();
    if let Ok(spec) = VocabSpec::from_gguf(file.metadata()) {
        if let Ok(tok) = Tokenizer::from_spec(spec) {
            if let Ok(ids) = tok.encode("Hello, world! <|im_start|>", false) {
                let _ = tok.decode(&ids);
            }
        }
    }
    let _ = ChatTemplate::from_gguf(&file, "<s>", "</s>");
    if is_mllama(&file) {
        let _ = Mllama::load(file);
    } else {
        let _ = Llama::load(file);
    }
}
