//! Decoding several sequences in one forward (`Llama::forward_batch`, what `lumen serve` does
//! for its parallel slots) must give each sequence what decoding it alone gives; the single
//! path is the one checked against Hugging Face in `smollm2_reference.rs`.

mod common;

use std::sync::Arc;

use lumen::gguf::GgufFile;
use lumen::model::{KvCache, Llama, Logits};
use lumen::sampling::argmax;

fn model() -> Llama {
    let file = Arc::new(GgufFile::open(common::smollm2_path()).unwrap());
    Llama::load(file).unwrap()
}

const PROMPTS: [&[u32]; 3] = [
    &[1, 504, 3575, 282, 4649, 314],
    &[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173],
    &[28, 29],
];

/// Greedy continuations of every prompt, `steps` tokens each, decoded one sequence at a time.
fn alone(m: &Llama, steps: usize) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let mut tokens = Vec::new();
    let mut last_logits = Vec::new();
    for p in PROMPTS {
        let mut cache = m.new_cache(64);
        let mut logits = m.forward(p, &mut cache, Logits::Last).unwrap();
        let mut out = Vec::new();
        for _ in 0..steps {
            let t = argmax(&logits);
            out.push(t);
            logits = m.forward(&[t], &mut cache, Logits::Last).unwrap();
        }
        tokens.push(out);
        last_logits.push(logits);
    }
    (tokens, last_logits)
}

#[test]
fn batched_decode_equals_decoding_each_sequence_alone() {
    let m = model();
    let steps = 12;
    let (expected_tokens, expected_logits) = alone(&m, steps);

    let mut caches: Vec<KvCache> = PROMPTS.iter().map(|_| m.new_cache(64)).collect();
    let mut logits: Vec<Vec<f32>> = PROMPTS
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, c)| m.forward(p, c, Logits::Last).unwrap())
        .collect();
    let mut tokens = vec![Vec::new(); PROMPTS.len()];
    for _ in 0..steps {
        let next: Vec<u32> = logits.iter().map(|l| argmax(l)).collect();
        for (out, &t) in tokens.iter_mut().zip(&next) {
            out.push(t);
        }
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let all = m.forward_batch(&next, &mut refs).unwrap();
        logits = all
            .chunks_exact(m.config.n_vocab)
            .map(<[f32]>::to_vec)
            .collect();
    }
    assert_eq!(tokens, expected_tokens);
    for (ours, alone) in logits.iter().zip(&expected_logits) {
        let rel = common::rel_l2(ours, alone);
        assert!(rel < 1e-4, "relative L2 {rel}");
    }
    for (c, p) in caches.iter().zip(PROMPTS) {
        assert_eq!(c.len(), p.len() + steps);
    }
}

#[test]
fn a_full_cache_in_the_batch_is_an_error() {
    let m = model();
    let mut a = m.new_cache(4);
    let mut b = m.new_cache(64);
    m.forward(&[1, 2, 3, 4], &mut a, Logits::Last).unwrap();
    m.forward(&[1], &mut b, Logits::Last).unwrap();
    let err = m.forward_batch(&[5, 5], &mut [&mut a, &mut b]).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
}
