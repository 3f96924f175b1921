//! Token sampling with llama.cpp's default chain: repeat penalty, top-k, top-p, min-p,
//! temperature, then a draw. Temperature ≤ 0 is greedy (argmax of the penalised logits).

use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Picks the next token from `logits` given the tokens so far (`history`).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut logits = logits.to_vec();
        apply_repeat_penalty(&mut logits, history, p.repeat_penalty, p.repeat_last_n);
        if p.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        // Sorted by logit, highest first; ties by id so results do not depend on sort stability.
        cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 {
            cands.truncate(p.top_k);
        }
        let probs = softmax(&cands, 1.0);
        let keep_p = nucleus_len(&probs, p.top_p);
        let keep_min = min_p_len(&probs, p.min_p);
        cands.truncate(keep_p.min(keep_min).max(1));
        let probs = softmax(&cands, p.temperature);
        let r: f64 = self.rng.gen::<f64>();
        let mut acc = 0.0;
        for (c, &pr) in cands.iter().zip(&probs) {
            acc += pr;
            if r < acc {
                return c.0;
            }
        }
        cands.last().map_or(0, |c| c.0)
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// llama.cpp's penalty: positive logits are divided by `penalty`, negative ones multiplied,
/// once per distinct token among the last `last_n`.
fn apply_repeat_penalty(logits: &mut [f32], history: &[u32], penalty: f32, last_n: usize) {
    if penalty == 1.0 || last_n == 0 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for &t in history.iter().rev().take(last_n) {
        if seen.insert(t) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
}

/// Probabilities (f64) of sorted candidates at `temperature`.
fn softmax(cands: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cands.first().map_or(0.0, |c| c.1) as f64;
    let t = temperature as f64;
    let exps: Vec<f64> = cands
        .iter()
        .map(|c| ((c.1 as f64 - max) / t).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// How many of the sorted candidates top-p keeps: the smallest prefix whose mass reaches `p`.
fn nucleus_len(probs: &[f64], p: f32) -> usize {
    if p >= 1.0 {
        return probs.len();
    }
    let mut acc = 0.0;
    for (i, &pr) in probs.iter().enumerate() {
        acc += pr;
        if acc >= p as f64 {
            return i + 1;
        }
    }
    probs.len()
}

/// How many candidates min-p keeps: those with probability ≥ `min_p` × the top probability.
fn min_p_len(probs: &[f64], min_p: f32) -> usize {
    if min_p <= 0.0 || probs.is_empty() {
        return probs.len();
    }
    let threshold = probs[0] * min_p as f64;
    probs.iter().take_while(|&&pr| pr >= threshold).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9], &[]), 1);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let params = SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9], &[1]), 3);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9], &[]), 1);
        }
    }

    #[test]
    fn same_seed_same_draws_and_draws_follow_the_distribution() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let draw = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone());
            (0..4000)
                .map(|_| s.sample(&logits, &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(&params);
        assert_eq!(a, draw(&params));
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "frequency {ones}");
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let probs = [0.5, 0.3, 0.15, 0.05];
        assert_eq!(nucleus_len(&probs, 0.75), 2);
        assert_eq!(nucleus_len(&probs, 0.85), 3);
        assert_eq!(min_p_len(&probs, 0.2), 3);
    }
}
