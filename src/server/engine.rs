//! The inference engine behind the server: one worker thread owns the model and `n_slots` KV
//! caches. Requests wait in a bounded queue; the worker takes one into each free slot,
//! evaluates its prompt in one forward pass, then advances every active slot by one token per
//! round, sending text back over each request's channel. A request whose receiver is gone (the
//! client hung up) frees its slot at the next round.
//!
//! Shutting down is two calls: [`Engine::stop_admitting`] refuses new requests while the
//! admitted ones go on, and [`Engine::cancel_all`] ends whatever is still running or queued with
//! [`Event::Cancelled`] at the next round.
//!
//! The per-round model call is [`step`]: today one forward per active slot in turn; batched
//! decoding (one forward over all slots' next tokens) replaces that one function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::model::{Cache, Logits, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// One request for the engine: a tokenized prompt and how to generate after it.
pub struct Job {
    pub prompt: Vec<u32>,
    /// Encoded images the prompt refers to (vision models only).
    pub images: Vec<Vec<u8>>,
    /// Most tokens to generate (already capped so that prompt + this fits the context).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops before any of these texts, which are not returned.
    pub stop: Vec<String>,
    /// Never sample an end-of-generation token (llama.cpp's `ignore_eos`): the answer runs to
    /// `max_tokens` or a stop string.
    pub ignore_eos: bool,
    /// Whether the prompt may start from the prefix a slot's cache holds (llama.cpp's
    /// `cache_prompt`; off measures a cold prefill).
    pub cache_prompt: bool,
    pub events: mpsc::UnboundedSender<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine sends back for a job.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        /// Prompt tokens whose keys and values were reused from the slot's previous request.
        cached_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
    /// The server is shutting down and cut this request short (after any `Text` already sent).
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is busy: all {0} slots and queue places are taken, retry later")]
    Busy(usize),
    #[error("the engine has stopped")]
    Stopped,
    #[error("the server is shutting down and takes no new requests")]
    ShuttingDown,
}

/// A slot or queue place held by one request ([`Engine::reserve`]).
pub struct Place(OwnedSemaphorePermit);

/// The handle the HTTP side holds: submits jobs, refusing them when the queue is full.
pub struct Engine {
    jobs: std_mpsc::Sender<(Job, OwnedSemaphorePermit)>,
    /// Slots + queue places; a job holds one permit from submission until its slot is freed.
    places: Arc<Semaphore>,
    capacity: usize,
    pub n_slots: usize,
    pub n_ctx: usize,
    /// Whether the model takes images ([`Model::vision`]).
    pub accepts_images: bool,
    admitting: AtomicBool,
    /// Set by [`Engine::cancel_all`]; the worker reads it between rounds.
    cancel: Arc<AtomicBool>,
    /// Cleared when the worker thread died of a panic (`/health` then answers 503).
    alive: Arc<AtomicBool>,
}

impl Engine {
    /// Starts the worker thread. `run_in` wraps the worker's loop (to run it inside a rayon
    /// pool); `queue` is how many requests may wait beyond the `n_slots` being served.
    /// `on_death` runs on the worker thread if it dies of a panic that no request's recovery
    /// caught (`lumen serve` exits non-zero there, for a supervisor to restart it).
    pub fn start(
        model: Box<dyn Model>,
        tokenizer: Arc<Tokenizer>,
        n_slots: usize,
        n_ctx: usize,
        queue: usize,
        run_in: impl FnOnce(Box<dyn FnOnce() + Send>) + Send + 'static,
        on_death: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<(Engine, JoinHandle<()>)> {
        let (tx, rx) = std_mpsc::channel();
        let capacity = n_slots + queue;
        let accepts_images = model.vision().is_some();
        let cancel = Arc::new(AtomicBool::new(false));
        let worker_cancel = cancel.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let worker_alive = alive.clone();
        let handle = std::thread::Builder::new()
            .name("lumen-engine".into())
            .spawn(move || {
                watch(&worker_alive, on_death, || {
                    run_in(Box::new(move || {
                        Worker::new(model, tokenizer, n_slots, n_ctx, worker_cancel).run(rx)
                    }))
                })
            })?;
        let engine = Engine {
            jobs: tx,
            places: Arc::new(Semaphore::new(capacity)),
            capacity,
            n_slots,
            n_ctx,
            accepts_images,
            admitting: AtomicBool::new(true),
            cancel,
            alive,
        };
        Ok((engine, handle))
    }

    /// Takes a slot or queue place for a request about to be prepared, or refuses it at once
    /// when every one is taken. The place is held from before the request's preparation
    /// (image decoding, template rendering, tokenization) until its slot is freed, so at most
    /// slots + queue requests are ever being prepared or served; dropping it (a preparation
    /// error) frees it.
    pub fn reserve(&self) -> Result<Place, SubmitError> {
        if !self.admitting.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        self.places
            .clone()
            .try_acquire_owned()
            .map(Place)
            .map_err(|_| SubmitError::Busy(self.capacity))
    }

    /// Queues `job` in the place [`Engine::reserve`] gave.
    pub fn submit(&self, job: Job, place: Place) -> Result<(), SubmitError> {
        self.jobs
            .send((job, place.0))
            .map_err(|_| SubmitError::Stopped)
    }

    /// False once the worker thread died of a panic: no request will be answered again.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Requests admitted and not finished (running or queued).
    pub fn in_flight(&self) -> usize {
        self.capacity - self.places.available_permits()
    }

    /// Refuses every later [`Engine::submit`] with [`SubmitError::ShuttingDown`]; admitted
    /// requests go on.
    pub fn stop_admitting(&self) {
        self.admitting.store(false, Ordering::Release);
    }

    /// Ends every running and queued request with [`Event::Cancelled`] at the worker's next
    /// round (after the forward pass in progress, if any).
    pub fn cancel_all(&self) {
        self.stop_admitting();
        self.cancel.store(true, Ordering::Release);
    }
}

/// A request being served in a slot.
struct Active {
    job: Job,
    /// Released before the last event is sent, so that a client that has its answer can count
    /// on the place being free again.
    permit: Option<OwnedSemaphorePermit>,
    /// Tokens the next [`step`] feeds (the prompt, then each sampled token).
    pending: Vec<u32>,
    logits: Option<Result<Vec<f32>, String>>,
    sampler: Sampler,
    history: Vec<u32>,
    decoder: StreamDecoder,
    stops: StopMatcher,
    n_generated: usize,
    n_cached: usize,
}

pub struct Slot {
    cache: Cache,
    /// The tokens whose keys and values `cache` holds, for reuse by the next request.
    tokens: Vec<u32>,
    /// Images are attached to `cache`: nothing in it may be reused by a request without them.
    has_images: bool,
    active: Option<Active>,
}

struct Worker {
    model: Box<dyn Model>,
    tokenizer: Arc<Tokenizer>,
    slots: Vec<Slot>,
    cancel: Arc<AtomicBool>,
}

impl Worker {
    fn new(
        model: Box<dyn Model>,
        tokenizer: Arc<Tokenizer>,
        n_slots: usize,
        n_ctx: usize,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let slots = (0..n_slots)
            .map(|_| Slot {
                cache: model.new_cache(n_ctx),
                tokens: Vec::new(),
                has_images: false,
                active: None,
            })
            .collect();
        Self {
            model,
            tokenizer,
            slots,
            cancel,
        }
    }

    fn run(mut self, jobs: std_mpsc::Receiver<(Job, OwnedSemaphorePermit)>) {
        loop {
            if self.cancel.load(Ordering::Acquire) {
                self.cancel_everything(&jobs);
            }
            if !self.admit(&jobs) {
                return;
            }
            self.drop_abandoned();
            step(&*self.model, &mut self.slots);
            for i in 0..self.slots.len() {
                let events = self.slots[i].active.as_ref().map(|a| a.job.events.clone());
                if panicked(|| self.advance(i)) {
                    reset_after_panic(&mut self.slots[i], events);
                }
            }
        }
    }

    /// Moves queued jobs into free slots. Blocks while nothing is active; false once every
    /// sender is gone and no work is left.
    fn admit(&mut self, jobs: &std_mpsc::Receiver<(Job, OwnedSemaphorePermit)>) -> bool {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let busy = self.slots.iter().any(|s| s.active.is_some());
            let next = if busy {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(_) => return true,
                }
            } else {
                match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => return false,
                }
            };
            let (job, permit) = next;
            if job.events.is_closed() {
                continue;
            }
            let free = self.best_free_slot(&job);
            let events = job.events.clone();
            if panicked(|| self.start(free, job, permit)) {
                reset_after_panic(&mut self.slots[free], Some(events));
            }
        }
        true
    }

    /// The free slot whose cache shares the longest prefix with `job`'s prompt.
    fn best_free_slot(&self, job: &Job) -> usize {
        let free = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.is_none());
        free.max_by_key(|(_, s)| reusable_prefix(s, job))
            .map(|(i, _)| i)
            .expect("called with a free slot")
    }

    fn start(&mut self, index: usize, job: Job, permit: OwnedSemaphorePermit) {
        let slot = &mut self.slots[index];
        let keep = reusable_prefix(slot, &job);
        if keep == 0 {
            slot.cache.clear();
            slot.has_images = false;
        } else {
            slot.cache.truncate(keep);
        }
        slot.tokens.truncate(keep);
        if !job.images.is_empty() {
            slot.has_images = true;
            if let Err(e) = attach_images(&*self.model, &mut slot.cache, &job.images) {
                slot.tokens.clear();
                drop(permit);
                let _ = job.events.send(Event::Error(e));
                return;
            }
        }
        slot.active = Some(Active {
            pending: job.prompt[keep..].to_vec(),
            n_cached: keep,
            logits: None,
            sampler: Sampler::new(job.sampling.clone()),
            history: job.prompt.clone(),
            decoder: StreamDecoder::new(),
            stops: StopMatcher::new(job.stop.clone()),
            n_generated: 0,
            job,
            permit: Some(permit),
        });
    }

    /// Ends every active and queued request with [`Event::Cancelled`].
    fn cancel_everything(&mut self, jobs: &std_mpsc::Receiver<(Job, OwnedSemaphorePermit)>) {
        for slot in &mut self.slots {
            if let Some(a) = slot.active.take() {
                drop(a.permit);
                let _ = a.job.events.send(Event::Cancelled);
            }
        }
        while let Ok((job, permit)) = jobs.try_recv() {
            drop(permit);
            let _ = job.events.send(Event::Cancelled);
        }
    }

    /// Frees the slots of clients that hung up.
    fn drop_abandoned(&mut self) {
        for slot in &mut self.slots {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.job.events.is_closed())
            {
                slot.active = None;
            }
        }
    }

    /// Samples slot `index`'s next token from the logits [`step`] left, sends its text, and
    /// either queues the token for the next round or finishes the request.
    fn advance(&mut self, index: usize) {
        let Some(a) = self.slots[index].active.as_mut() else {
            return;
        };
        let mut logits = match a.logits.take() {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                a.permit = None;
                let _ = a.job.events.send(Event::Error(e));
                self.slots[index].active = None;
                return;
            }
            None => return,
        };
        if a.job.ignore_eos {
            for t in self.tokenizer.end_of_generation_tokens() {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let token = a.sampler.sample(&logits, &a.history);
        let finish = if self.tokenizer.is_end_of_generation(token) {
            Some(FinishReason::Stop)
        } else {
            a.n_generated += 1;
            a.history.push(token);
            let text = a.decoder.push(&self.tokenizer, token);
            let (out, stopped) = a.stops.push(&text);
            if !out.is_empty() {
                let _ = a.job.events.send(Event::Text(out));
            }
            if stopped {
                Some(FinishReason::Stop)
            } else if a.n_generated >= a.job.max_tokens {
                Some(FinishReason::Length)
            } else {
                a.pending = vec![token];
                None
            }
        };
        if let Some(finish) = finish {
            self.finish(index, finish);
        }
    }

    fn finish(&mut self, index: usize, finish: FinishReason) {
        let Some(mut a) = self.slots[index].active.take() else {
            return;
        };
        if !a.stops.stopped {
            let rest = a.decoder.flush();
            let (mut out, _) = a.stops.push(&rest);
            out.push_str(&a.stops.flush());
            if !out.is_empty() {
                let _ = a.job.events.send(Event::Text(out));
            }
        }
        a.permit = None;
        let _ = a.job.events.send(Event::Done {
            finish,
            prompt_tokens: a.job.prompt.len(),
            cached_tokens: a.n_cached,
            completion_tokens: a.n_generated,
        });
    }
}

/// Prompt tokens one slot evaluates per round (llama.cpp's default `n_ubatch`). A long prompt
/// is read over several rounds, and the decoding slots produce a token between its chunks
/// instead of waiting for all of it (a 10k-token prompt stalled every other slot for its whole
/// prefill).
pub const PREFILL_CHUNK: usize = 512;

/// One round of model evaluation: every active slot's pending tokens (the next chunk of a new
/// request's prompt, else its last sampled token) go through the model; a slot whose pending
/// tokens are all done is left its logits. Prompt chunks are evaluated one by one; the slots
/// that are decoding go through one batched forward, so the weights are read once per round
/// for all of them.
pub fn step(model: &dyn Model, slots: &mut [Slot]) {
    let mut decoding: Vec<&mut Slot> = Vec::new();
    for slot in slots.iter_mut() {
        let Some(a) = slot.active.as_mut() else {
            continue;
        };
        match a.pending.len() {
            0 => {}
            1 => decoding.push(slot),
            n => {
                let tokens: Vec<u32> = a.pending.drain(..n.min(PREFILL_CHUNK)).collect();
                let more = !a.pending.is_empty();
                let result = guarded(|| {
                    model
                        .forward(&tokens, &mut slot.cache, Logits::Last)
                        .map_err(|e| e.to_string())
                });
                if more && result.is_ok() {
                    // Not the prompt's end: no token is sampled yet.
                    slot.tokens.extend_from_slice(&tokens);
                } else {
                    finish_forward(slot, &tokens, result);
                }
            }
        }
    }
    if decoding.is_empty() {
        return;
    }
    let tokens: Vec<u32> = decoding
        .iter_mut()
        .map(|slot| std::mem::take(&mut slot.active.as_mut().unwrap().pending)[0])
        .collect();
    let result = {
        let mut caches: Vec<&mut Cache> = decoding.iter_mut().map(|s| &mut s.cache).collect();
        let n_vocab = model.info().n_vocab;
        guarded(|| {
            let logits = model
                .forward_batch(&tokens, &mut caches)
                .map_err(|e| e.to_string())?;
            Ok(logits
                .chunks_exact(n_vocab)
                .map(<[f32]>::to_vec)
                .collect::<Vec<_>>())
        })
    };
    match result {
        Ok(all) => {
            for ((slot, logits), &token) in decoding.into_iter().zip(all).zip(&tokens) {
                finish_forward(slot, &[token], Ok(logits));
            }
        }
        Err(e) => {
            for (slot, &token) in decoding.into_iter().zip(&tokens) {
                finish_forward(slot, &[token], Err(e.clone()));
            }
        }
    }
}

/// Whether `work` panicked. The worker runs each request's start (image attach) and each
/// sampling step (sampler, detokenizer, stop strings) through this: a panic there must cost
/// that request, not the engine every request needs.
fn panicked(work: impl FnOnce()) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err()
}

/// After a panic in a slot's work: its request ends with an error, and nothing of its cache is
/// trusted again.
fn reset_after_panic(slot: &mut Slot, events: Option<mpsc::UnboundedSender<Event>>) {
    // Dropping the request frees its place before the client hears of the end.
    slot.active = None;
    slot.cache.clear();
    slot.tokens.clear();
    slot.has_images = false;
    if let Some(events) = events {
        let _ = events.send(Event::Error(
            "internal error while serving the request".into(),
        ));
    }
}

/// Runs the worker's loop; if it dies of a panic, marks the engine dead and runs `on_death`.
fn watch(alive: &AtomicBool, on_death: impl FnOnce(), run: impl FnOnce()) {
    if panicked(run) {
        alive.store(false, Ordering::Release);
        on_death();
    }
}

/// A panic in the model must cost the requests of this round, not the engine every request
/// needs.
fn guarded<T>(forward: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(forward))
        .unwrap_or_else(|_| Err("internal error in the model's forward pass".into()))
}

fn finish_forward(slot: &mut Slot, tokens: &[u32], result: Result<Vec<f32>, String>) {
    if result.is_ok() {
        slot.tokens.extend_from_slice(tokens);
    } else {
        // The cache may hold part of the failed batch: trust none of it.
        slot.tokens.clear();
    }
    if let Some(a) = slot.active.as_mut() {
        a.logits = Some(result);
    }
}

/// How many leading prompt tokens of `job` the slot's cache already holds. At least one prompt
/// token is always evaluated again, for the logits to sample from; caches with images attached
/// (or for a job with images), and jobs with `cache_prompt` off, reuse nothing.
fn reusable_prefix(slot: &Slot, job: &Job) -> usize {
    if !job.cache_prompt || !slot.cache.keeps_prefix() || slot.has_images || !job.images.is_empty()
    {
        return 0;
    }
    let common = slot
        .tokens
        .iter()
        .zip(&job.prompt)
        .take_while(|(a, b)| a == b)
        .count();
    common.min(job.prompt.len().saturating_sub(1))
}

/// Decodes, preprocesses and encodes each image, attaching them in order (the prompt's image
/// tokens bind them in the same order).
fn attach_images(model: &dyn Model, cache: &mut Cache, images: &[Vec<u8>]) -> Result<(), String> {
    if images.is_empty() {
        return Ok(());
    }
    let Some(vision) = model.vision() else {
        return Err("this model does not accept images".into());
    };
    for (i, bytes) in images.iter().enumerate() {
        vision
            .attach_image(cache, bytes, &format!("image {}", i + 1))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Cuts generated text at the first stop string, holding back any tail that could be the start
/// of one until the following text decides.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
            stopped: false,
        }
    }

    /// Adds `text`; returns the text that is now safe to emit and whether a stop string was
    /// found (in which case nothing from it on is ever emitted).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.held.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.held.find(s)).min();
        if let Some(at) = first {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self.partial_tail_len();
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, false)
    }

    /// Whatever is held back, at the end of generation.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest tail of `held` that is a proper prefix of some stop string.
    fn partial_tail_len(&self) -> usize {
        let held = &self.held;
        let mut best = 0;
        for (start, _) in held.char_indices() {
            let tail = &held[start..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                best = tail.len();
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kv_cache::KvCache;

    fn slot_serving(events: mpsc::UnboundedSender<Event>) -> Slot {
        let shape = lumen_kernels::attention::AttentionShape {
            n_head: 1,
            n_head_kv: 1,
            head_dim: 4,
            n_ctx: 8,
        };
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let job = Job {
            prompt: vec![1, 2],
            images: Vec::new(),
            max_tokens: 4,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            cache_prompt: true,
            events,
        };
        let mut slot = Slot {
            cache: Cache::Text(KvCache::new(1, shape)),
            tokens: vec![1, 2],
            has_images: true,
            active: None,
        };
        slot.active = Some(Active {
            pending: Vec::new(),
            n_cached: 0,
            logits: None,
            sampler: Sampler::new(job.sampling.clone()),
            history: job.prompt.clone(),
            decoder: StreamDecoder::new(),
            stops: StopMatcher::new(Vec::new()),
            n_generated: 0,
            job,
            permit: Some(permit),
        });
        slot
    }

    /// The worker's recovery: a panic in a slot's work ends that request with an error event
    /// and empties the slot; the engine goes on (it used to die with the panic, for good).
    #[test]
    fn a_panic_in_a_slot_ends_its_request_and_frees_the_slot() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut slot = slot_serving(tx.clone());
        let places = slot
            .active
            .as_ref()
            .unwrap()
            .permit
            .as_ref()
            .unwrap()
            .semaphore()
            .clone();
        assert!(panicked(|| panic!("in the sampler")));
        reset_after_panic(&mut slot, Some(tx));
        assert!(slot.active.is_none() && slot.tokens.is_empty() && !slot.has_images);
        assert_eq!(
            places.available_permits(),
            1,
            "the request's place was not freed"
        );
        assert!(matches!(rx.try_recv(), Ok(Event::Error(_))));
        assert!(!panicked(|| ()));
    }

    /// A worker that dies anyway marks the engine dead (`/health` answers 503) and calls
    /// `on_death` (`lumen serve` exits non-zero); a worker that returns does neither.
    #[test]
    fn a_dead_worker_is_reported() {
        let alive = AtomicBool::new(true);
        let mut died = false;
        watch(&alive, || died = true, || panic!("outside any request"));
        assert!(died && !alive.load(Ordering::Acquire));
        let alive = AtomicBool::new(true);
        watch(&alive, || panic!("on_death ran for a clean exit"), || ());
        assert!(alive.load(Ordering::Acquire));
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (o, stopped) = m.push(p);
            out.push_str(&o);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_string_split_across_pieces_is_cut() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), true)
        );
    }

    #[test]
    fn partial_match_that_fails_is_released() {
        assert_eq!(
            run(&["END"], &["abc E", "NX", "y"]),
            ("abc ENXy".into(), false)
        );
        assert_eq!(run(&["END"], &["abc EN"]), ("abc EN".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_multibyte_text_is_safe() {
        assert_eq!(run(&["b", "é"], &["aéxb"]), ("a".into(), true));
        assert_eq!(run(&["éé"], &["xé", "y"]), ("xéy".into(), false));
    }
}
