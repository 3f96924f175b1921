//! `GET /metrics`: the server's counters in Prometheus' text format (version 0.0.4), the
//! figures llama-server's `/metrics` has (`llamacpp:` there, `lumen_` here) plus a
//! time-to-first-token histogram.
//!
//! Times are taken in the HTTP handler: from the job's submission to the engine (after the
//! template and the tokenizer) to its first text — queueing and prompt evaluation, the
//! "prompt" time — and from there to its end ("generation"). Busy slots are inferred: requests
//! holding a place, at most the slot count (a request being prepared counts).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::engine::{Engine, Event};

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets (then `+Inf`).
const TTFT_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counters shared by the request handlers.
#[derive(Default)]
pub struct Metrics {
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    prompt_nanos: AtomicU64,
    generation_nanos: AtomicU64,
    ttft_buckets: [AtomicU64; TTFT_BUCKETS.len()],
    ttft_count: AtomicU64,
    ttft_nanos: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl Metrics {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn first_token(&self, after: Duration) {
        let s = after.as_secs_f64();
        for (bucket, &le) in self.ttft_buckets.iter().zip(&TTFT_BUCKETS) {
            if s <= le {
                Self::add(bucket, 1);
            }
        }
        Self::add(&self.ttft_count, 1);
        Self::add(&self.ttft_nanos, nanos(after));
    }

    /// The exposition text, with the engine's gauges read now.
    pub fn render(&self, engine: &Engine) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let secs = |c: &AtomicU64| get(c) as f64 / 1e9;
        let rate = |tokens: u64, c: &AtomicU64| match get(c) {
            0 => 0.0,
            n => tokens as f64 / (n as f64 / 1e9),
        };
        let in_flight = engine.in_flight() as u64;
        let busy = in_flight.min(engine.n_slots as u64);
        let (prompt, cached) = (get(&self.prompt_tokens), get(&self.cached_tokens));
        let (generated, ok, failed) = (
            get(&self.generated_tokens),
            get(&self.requests_ok),
            get(&self.requests_failed),
        );
        let c = "counter";
        let g = "gauge";
        // (name after `lumen_`, type, help, value): one line each, as the exposition lists them.
        #[rustfmt::skip]
        let table: [(&str, &str, &str, String); 13] = [
            ("requests_total", c, "Requests answered in full.", ok.to_string()),
            ("requests_failed_total", c, "Admitted requests that ended in an error or were cut short.", failed.to_string()),
            ("prompt_tokens_total", c, "Prompt tokens of answered requests.", prompt.to_string()),
            ("prompt_tokens_cached_total", c, "Prompt tokens reused from a slot's cache.", cached.to_string()),
            ("tokens_generated_total", c, "Tokens generated.", generated.to_string()),
            ("prompt_seconds_total", c, "Time from submission to the first token, summed.", secs(&self.prompt_nanos).to_string()),
            ("generation_seconds_total", c, "Time from the first token to the end, summed.", secs(&self.generation_nanos).to_string()),
            ("prompt_tokens_per_second", g, "Evaluated (uncached) prompt tokens over prompt time (queueing included), since start.", rate(prompt.saturating_sub(cached), &self.prompt_nanos).to_string()),
            ("generation_tokens_per_second", g, "Generated tokens over generation time, since start.", rate(generated, &self.generation_nanos).to_string()),
            ("requests_in_flight", g, "Requests holding a slot or a queue place.", in_flight.to_string()),
            ("queue_depth", g, "Requests waiting for a slot.", (in_flight - busy).to_string()),
            ("slots", g, "Decoding slots.", engine.n_slots.to_string()),
            ("slots_busy", g, "Slots taken: requests holding a place, at most the slot count.", busy.to_string()),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in table {
            let _ = write!(
                out,
                "# HELP lumen_{name} {help}\n# TYPE lumen_{name} {kind}\nlumen_{name} {value}\n"
            );
        }
        let _ = write!(
            out,
            "# HELP lumen_time_to_first_token_seconds Time from submission to the first token.\n\
             # TYPE lumen_time_to_first_token_seconds histogram\n"
        );
        for (bucket, le) in self.ttft_buckets.iter().zip(TTFT_BUCKETS) {
            let _ = writeln!(
                out,
                "lumen_time_to_first_token_seconds_bucket{{le=\"{le}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.ttft_count);
        let _ = write!(
            out,
            "lumen_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             lumen_time_to_first_token_seconds_sum {}\n\
             lumen_time_to_first_token_seconds_count {count}\n",
            secs(&self.ttft_nanos)
        );
        out
    }
}

/// A request's event stream, counted on the way to the client.
pub struct Observed {
    rx: mpsc::UnboundedReceiver<Event>,
    metrics: Arc<Metrics>,
    admitted: Instant,
    first: Option<Instant>,
    ended: bool,
}

impl Observed {
    pub fn new(
        rx: mpsc::UnboundedReceiver<Event>,
        metrics: Arc<Metrics>,
        admitted: Instant,
    ) -> Self {
        Self {
            rx,
            metrics,
            admitted,
            first: None,
            ended: false,
        }
    }

    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        let m = &*self.metrics;
        let now = Instant::now();
        match &event {
            Some(Event::Text(_)) if self.first.is_none() => {
                self.first = Some(now);
                m.first_token(now - self.admitted);
            }
            Some(Event::Text(_)) => {}
            Some(Event::Done {
                prompt_tokens,
                cached_tokens,
                completion_tokens,
                ..
            }) => {
                // An answer with no text (stopped at once) gets its first token at the end.
                let first = *self.first.get_or_insert_with(|| {
                    m.first_token(now - self.admitted);
                    now
                });
                Metrics::add(&m.requests_ok, 1);
                Metrics::add(&m.prompt_tokens, *prompt_tokens as u64);
                Metrics::add(&m.cached_tokens, *cached_tokens as u64);
                Metrics::add(&m.generated_tokens, *completion_tokens as u64);
                Metrics::add(&m.prompt_nanos, nanos(first - self.admitted));
                Metrics::add(&m.generation_nanos, nanos(now - first));
                self.ended = true;
            }
            Some(Event::Error(_) | Event::Cancelled) | None if !self.ended => {
                Metrics::add(&m.requests_failed, 1);
                self.ended = true;
            }
            _ => {}
        }
        event
    }
}

impl Drop for Observed {
    /// A client that went away before the end (a dropped stream) counts as cut short.
    fn drop(&mut self) {
        if !self.ended {
            Metrics::add(&self.metrics.requests_failed, 1);
        }
    }
}
