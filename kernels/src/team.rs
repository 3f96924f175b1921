//! A hot team for decode: the rayon pool's other workers kept spinning between parallel regions.
//!
//! One decoded token runs ~5 parallel regions per layer (150 for SmolLM2's 30 layers), each a
//! few microseconds of work. Under plain rayon the idle workers go to sleep between regions and
//! are woken for the next: `perf` put 21.5% of SmolLM2 decode in the scheduler and rayon's
//! sleep/wake (BENCHMARKS.md). Inside [`hot`], every other worker of the pool runs one helper
//! job that spins on an atomic word and takes its share of the tasks of whatever region the
//! calling thread publishes with [`for_each`] / [`map`]: a token costs one wake-up instead of
//! 150, as with llama.cpp's spinning threadpool. The price: while a forward runs, the helpers
//! spin through the caller's serial work, so a pool with more workers than cores would take
//! time from the caller (not measured; they yield every [`SPINS_BEFORE_YIELD`] idle spins).
//!
//! Outside [`hot`] (prefill, the vision encoder), [`for_each`] and [`map`] are plain rayon.
//!
//! Protocol. The state word packs (epoch, shares, next share). The caller stores a pointer to
//! a stack record of the region and then a fresh epoch; a region is cut into one share per
//! team member (the caller's, share 0, sized by [`Team::lead`], is taken at publication), and
//! caller or helper takes each other share by a compare-and-swap on the whole word. A helper that read an old epoch can never take
//! a share of a newer region, and it dereferences the record only after a successful take, while
//! the caller waits for every share before returning: the record outlives every reader. A
//! helper that is late (descheduled) does not stall the caller, who takes its share. A take per
//! share, not per task: a compare-and-swap per task (32 a region, on one line both cores
//! write) measured slower than plain rayon on SmolLM2 decode.

use rayon::prelude::*;
use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Spins of an idle helper before each `yield_now`: the gaps between regions are microseconds,
/// but a helper must not starve the caller when the machine has fewer cores than workers.
const SPINS_BEFORE_YIELD: u32 = 1 << 16;

/// Team members the state word's 16-bit share fields hold: larger pools run plain rayon.
const MAX_MEMBERS: usize = u16::MAX as usize;

/// One published region: the task body, how it is cut into shares, and how many shares are done.
struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    /// Share 0, the caller's: tasks `0..lead_tasks`; the other shares split the rest evenly.
    lead_tasks: usize,
    shares: usize,
    done: AtomicUsize,
    /// The first panic of a task, re-raised by the caller after the region.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Runs share `k` of the region at `job`, keeping a panic for the caller.
///
/// # Safety
/// `job` is live until this share is counted done. The count is the last access: the caller
/// may free the record as soon as it sees it (so no `&Job` may outlive it, as a `&self` would).
unsafe fn run_share(job: *const Job<'_>, k: usize) {
    {
        let job = &*job;
        let (lead, others) = (job.lead_tasks, job.shares - 1);
        let rest = job.tasks - lead;
        let (first, end) = match k {
            0 => (0, lead),
            k => (lead + rest * (k - 1) / others, lead + rest * k / others),
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (first..end).for_each(job.run))) {
            job.panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(payload);
        }
    }
    (*ptr::addr_of!((*job).done)).fetch_add(1, Ordering::Release);
}

/// State shared by the caller and its helpers for the length of one [`hot`] call.
struct Team {
    /// epoch << 32 | shares << 16 | next share.
    state: AtomicU64,
    /// The current epoch's record (type-erased lifetime; see the protocol above).
    job: AtomicPtr<Job<'static>>,
    stop: AtomicBool,
    members: usize,
    /// The caller's fraction of each region's tasks (f32 bits; only the caller touches it),
    /// steered so that the caller and the helpers finish together: measured on this VM, a
    /// helper ran the same share 5-25% slower than the caller (its start latency, and vCPUs
    /// that differ), and an even split left the caller waiting for 15-30% of each region.
    lead: AtomicU32,
}

/// Step of the caller's fraction after each region: up when the caller had to wait for a
/// helper, down when the helpers were done first.
const LEAD_STEP: f32 = 1.0 / 128.0;

impl Team {
    /// Takes one share of the current region and runs it; false when none is left.
    fn take_one(&self) -> bool {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            let (shares, next) = ((word >> 16) & 0xffff, word & 0xffff);
            if next >= shares {
                return false;
            }
            match self.state.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(w) => word = w,
            }
        }
        // SAFETY: the take succeeded under this epoch, whose record was stored before the
        // epoch was, and the caller holds the record until all of its shares are done.
        unsafe { run_share(self.job.load(Ordering::Acquire), (word & 0xffff) as usize) };
        true
    }

    /// A helper worker's loop: take shares as regions are published until the team stops.
    fn help(&self) {
        let mut idle = 0u32;
        loop {
            if self.take_one() {
                idle = 0;
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            idle += 1;
            if idle.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Publishes `run` over `tasks` tasks, takes shares with the helpers, and returns when all
    /// are done.
    fn run(&self, tasks: usize, run: &(dyn Fn(usize) + Sync)) {
        let fraction = f32::from_bits(self.lead.load(Ordering::Relaxed));
        let shares = self.members;
        let job = Job {
            run,
            tasks,
            lead_tasks: ((tasks as f32 * fraction).round() as usize).min(tasks),
            shares,
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        // SAFETY: the record is dereferenced only after a take of this epoch, and this
        // function does not return before every share is done.
        let erased: *const Job<'static> = (&job as *const Job<'_>).cast();
        self.job.store(erased.cast_mut(), Ordering::Release);
        // Published with share 0 already taken: it is the caller's, sized by `lead`.
        let epoch = ((self.state.load(Ordering::Relaxed) >> 32) + 1) & 0xffff_ffff;
        let word = epoch << 32 | (shares as u64) << 16 | 1;
        self.state.store(word, Ordering::Release);
        // SAFETY: `job` lives on this frame until every share is done.
        unsafe { run_share(&job, 0) };
        while self.take_one() {}
        let waited = job.done.load(Ordering::Acquire) < shares;
        let mut spins = 0u32;
        while job.done.load(Ordering::Acquire) < shares {
            // A helper descheduled mid-share (more workers than cores) needs this core.
            spins += 1;
            if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let step = if waited { LEAD_STEP } else { -LEAD_STEP };
        let fraction = (fraction + step).clamp(0.0, 1.0);
        self.lead.store(fraction.to_bits(), Ordering::Relaxed);
        if let Some(payload) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            std::panic::resume_unwind(payload);
        }
    }
}

thread_local! {
    /// The team this thread leads, while inside [`hot`] and not inside one of its tasks.
    static LEADING: Cell<*const Team> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with the current rayon pool's other workers spinning as a team: the regions `f`
/// starts through [`for_each`] / [`map`] on this thread cost no wake-ups. Meant for one decode
/// step (microsecond regions); a long `f` keeps the other cores busy spinning, and rayon work
/// that `f` starts directly (not through this module) finds no free worker.
pub fn hot<R>(f: impl FnOnce() -> R) -> R {
    let workers = rayon::current_num_threads();
    // A caller outside the pool could not run the rayon jobs `f` starts while every worker
    // spins for it: they would wait for a free worker forever. Only a worker leads.
    if !(2..=MAX_MEMBERS).contains(&workers)
        || rayon::current_thread_index().is_none()
        || !LEADING.get().is_null()
    {
        return f();
    }
    let team = Team {
        state: AtomicU64::new(0),
        job: AtomicPtr::new(ptr::null_mut()),
        stop: AtomicBool::new(false),
        members: workers,
        lead: AtomicU32::new((1.0 / workers as f32).to_bits()),
    };
    /// Stops the helpers and forgets the team even when `f` unwinds.
    struct Lead<'a>(&'a Team);
    impl Drop for Lead<'_> {
        fn drop(&mut self) {
            LEADING.set(ptr::null());
            self.0.stop.store(true, Ordering::Release);
        }
    }
    rayon::in_place_scope(|s| {
        for _ in 1..workers {
            s.spawn(|_| team.help());
        }
        LEADING.set(&team);
        let _lead = Lead(&team);
        f()
    })
}

/// Task slots that each index is taken from exactly once (shares do not overlap, and each
/// share is taken once).
struct Slots<T>(Vec<UnsafeCell<Option<T>>>);
// SAFETY: each slot is touched by the one thread whose share holds its index.
unsafe impl<T: Send> Sync for Slots<T> {}

/// Restores the thread's team after a task, even when the task unwinds.
struct RestoreLeading(*const Team);
impl Drop for RestoreLeading {
    fn drop(&mut self) {
        LEADING.set(self.0);
    }
}

/// Runs `f` on every task, in parallel: on the hot team when this thread leads one, else rayon.
pub fn for_each<T: Send>(tasks: Vec<T>, f: impl Fn(T) + Sync) {
    let team = LEADING.get();
    if team.is_null() {
        return tasks.into_par_iter().for_each(&f);
    }
    if tasks.len() == 1 {
        return tasks.into_iter().for_each(f);
    }
    let n = tasks.len();
    let slots = Slots(
        tasks
            .into_iter()
            .map(|t| UnsafeCell::new(Some(t)))
            .collect(),
    );
    let slots = &slots; // the closure must capture the Sync wrapper, not its Vec
    let run = |i: usize| {
        // SAFETY: index `i` is in one share only (Slots).
        if let Some(t) = unsafe { (*slots.0[i].get()).take() } {
            // A region that a task starts goes to plain rayon (or a team of its own), whose
            // jobs this thread runs itself: the helpers are busy with this region.
            let _restore = RestoreLeading(LEADING.replace(ptr::null()));
            f(t);
        }
    };
    // SAFETY: the team outlives `hot`'s closure, which is the only place LEADING is set.
    unsafe { &*team }.run(n, &run);
}

/// [`for_each`] that collects each task's result, in task order.
pub fn map<T: Send, R: Send>(tasks: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if LEADING.get().is_null() {
        return tasks.into_par_iter().map(&f).collect();
    }
    let out = Slots((0..tasks.len()).map(|_| UnsafeCell::new(None)).collect());
    let slots = &out; // the closure must capture the Sync wrapper, not its Vec
    for_each(tasks.into_iter().enumerate().collect(), |(i, t)| {
        // SAFETY: task `i` is the only writer of slot `i`.
        unsafe { *slots.0[i].get() = Some(f(t)) };
    });
    out.0
        .into_iter()
        .map(|s| s.into_inner().expect("every task ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    #[test]
    fn every_task_runs_once_on_the_team_and_results_keep_their_order() {
        pool(3).install(|| {
            let (leader, helped) = hot(|| {
                let mut helped = false;
                let leader = std::thread::current().id();
                // Until a helper has taken part (other tests may hold the cores for a while).
                let start = std::time::Instant::now();
                for round in 0usize.. {
                    if round >= 2000 && (helped || start.elapsed().as_secs() >= 20) {
                        break;
                    }
                    let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
                    let who = map((0..37).collect(), |i: usize| {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                        // Work long enough that a helper gets a share.
                        std::hint::black_box((0..200).fold(round, |a, b| a.wrapping_add(b)));
                        (i, std::thread::current().id())
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    assert!(who.iter().enumerate().all(|(i, w)| w.0 == i));
                    helped |= who.iter().any(|w| w.1 != leader);
                }
                (leader, helped)
            });
            assert_eq!(leader, std::thread::current().id());
            assert!(helped, "no task ran on a helper: the team never formed");
        });
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_region_and_the_team_recovers() {
        pool(2).install(|| {
            hot(|| {
                for bad in [0, 7, 15] {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        for_each((0..16).collect(), |i: usize| assert!(i != bad, "task {i}"));
                    }));
                    // The task's own panic comes back, whichever share it was in.
                    let payload = r.expect_err("the region panicked");
                    let message = payload.downcast_ref::<String>().unwrap();
                    assert_eq!(message, &format!("task {bad}"));
                }
                let sum = AtomicUsize::new(0);
                for_each((0..16).collect(), |i: usize| {
                    sum.fetch_add(i, Ordering::Relaxed);
                });
                assert_eq!(sum.load(Ordering::Relaxed), 120);
                // Fewer tasks than members, and none.
                let hits = AtomicUsize::new(0);
                for n in [0, 1, 2, 3] {
                    for_each((0..n).collect(), |_: usize| {
                        hits.fetch_add(1, Ordering::Relaxed);
                    });
                }
                assert_eq!(hits.load(Ordering::Relaxed), 6);
            });
        });
    }

    #[test]
    fn callers_outside_the_pool_start_rayon_work_inside_hot_without_deadlock() {
        let callers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..2000 {
                        hot(|| {
                            let sum: usize = (0..1000usize).into_par_iter().sum();
                            assert_eq!(sum, 499_500);
                            for_each((0..4).collect(), |_: usize| {});
                        });
                    }
                })
            })
            .collect();
        callers.into_iter().for_each(|c| c.join().unwrap());
    }

    #[test]
    fn regions_and_teams_started_inside_a_task_complete() {
        pool(2).install(|| {
            hot(|| {
                let total = AtomicUsize::new(0);
                for_each((0..8).collect(), |_: usize| {
                    hot(|| {
                        for_each((0..8).collect(), |_: usize| {
                            total.fetch_add(1, Ordering::Relaxed);
                        })
                    })
                });
                assert_eq!(total.load(Ordering::Relaxed), 64);
            });
        });
    }
}
