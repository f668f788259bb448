//! A persistent thread pool for the kernels: the same workers run every
//! matrix product of a forward pass, so a call costs a wake-up, not a spawn.
//!
//! A forward pass makes over a hundred calls per token, a few tens of
//! microseconds apart, so between calls the threads spin for a moment
//! (yielding the core to anyone who wants it) before they sleep: a futex
//! wake-up per call would cost more than some of the products it starts.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::scratch::SyncPtr;

/// How long a thread polls for the next job (or for the others to finish)
/// before it sleeps.
const SPIN: Duration = Duration::from_micros(300);
/// How long of that it polls without giving its core away: yielding is a
/// system call, and the gaps between a token's products are mostly shorter.
const SPIN_HOT: Duration = Duration::from_micros(50);

/// A job borrowed for the duration of one [`ThreadPool::run`] call.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync`, and `run` keeps it alive until every worker
// has finished calling it, so sending the pointer to the workers is sound.
unsafe impl Send for Job {}

struct Shared {
    /// The current job; written by `run` before `generation` is bumped.
    job: Mutex<Option<Job>>,
    /// Bumped for every job so a worker runs each one exactly once.
    generation: AtomicU64,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Threads asleep (or about to be) on `start` or `done`; a wake-up
    /// with none skips the lock and the system call.
    sleepers: AtomicUsize,
    /// Held to sleep on `start` or `done`, and to notify them.
    sleep: Mutex<()>,
    start: Condvar,
    done: Condvar,
}

/// Polls `ready` for up to [`SPIN`], then sleeps on `cv` until it holds.
fn wait_until(shared: &Shared, cv: &Condvar, ready: impl Fn() -> bool) {
    let t0 = Instant::now();
    let mut spins = 0u32;
    while !ready() {
        spins += 1;
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let waited = t0.elapsed();
        if waited > SPIN {
            let mut g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `wake`: either the waker sees this
            // sleeper, or this thread sees the condition it set.
            std::sync::atomic::fence(Ordering::SeqCst);
            while !ready() {
                g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if waited > SPIN_HOT {
            // Give the core away if anyone else wants it (more threads than cores).
            std::thread::yield_now();
        }
    }
}

/// Wakes whoever sleeps on `cv`, once the caller has set the condition they
/// wait for. A sleeper counts itself before its last check of the condition,
/// and the notification is sent under the lock it holds until it waits, so
/// the wake-up cannot be lost.
fn wake(shared: &Shared, cv: &Condvar) {
    std::sync::atomic::fence(Ordering::SeqCst);
    if shared.sleepers.load(Ordering::SeqCst) == 0 {
        return;
    }
    let _g = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
    cv.notify_all();
}

/// `n_threads` threads (the caller's included) that run a closure together.
pub struct ThreadPool {
    n_threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises `run` calls from different threads sharing one pool.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` (at least 1); `n_threads - 1` workers are spawned.
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            start: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|idx| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("mori-worker-{idx}"))
                    .spawn(move || worker(idx, &shared))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool {
            n_threads,
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `f(i, chunk)` for every `chunk_len`-element chunk `i` of `data`
    /// (the last may be shorter), the chunks shared out in contiguous runs,
    /// one per thread: element-wise work on a whole batch at once.
    pub fn for_chunks_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: F,
    ) {
        let chunk_len = chunk_len.max(1);
        let n_chunks = data.len().div_ceil(chunk_len);
        if self.n_threads == 1 || n_chunks < 2 {
            data.chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
            return;
        }
        // One contiguous run of `per` chunks per thread.
        let per = n_chunks.div_ceil(self.n_threads);
        let (len, base) = (data.len(), SyncPtr::new(data));
        self.run(|tid| {
            let start = (tid * per * chunk_len).min(len);
            let end = ((tid + 1) * per * chunk_len).min(len);
            if start == end {
                return;
            }
            // SAFETY: the threads' ranges are disjoint and inside `data`,
            // which `run` outlives.
            let run = unsafe { base.slice(start, end - start) };
            for (i, c) in run.chunks_mut(chunk_len).enumerate() {
                f(tid * per + i, c);
            }
        });
    }

    /// Calls `f(thread_idx)` once on each of the pool's threads, the calling
    /// thread being index 0, and returns when all calls have returned. A panic
    /// in any call is re-raised here.
    pub fn run<F: Fn(usize) + Sync>(&self, f: F) {
        if self.n_threads == 1 {
            f(0);
            return;
        }
        let _guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let job: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: the lifetime is erased only for the time the workers use the
        // pointer: this function waits below until `remaining` is zero, i.e.
        // until no worker can touch `f` any more, before `f` is dropped.
        let job: Job = Job(unsafe {
            std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(job)
        });
        let sh = &*self.shared;
        *sh.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        sh.panicked.store(false, Ordering::Relaxed);
        sh.remaining.store(self.n_threads - 1, Ordering::Relaxed);
        // Release: a worker that sees the new generation sees the job too.
        sh.generation.fetch_add(1, Ordering::Release);
        wake(sh, &sh.start);
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        wait_until(sh, &sh.done, || sh.remaining.load(Ordering::Acquire) == 0);
        *sh.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if sh.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread panicked while running a kernel");
        }
    }
}

fn worker(idx: usize, shared: &Shared) {
    let mut seen = 0u64;
    loop {
        wait_until(shared, &shared.start, || {
            shared.generation.load(Ordering::Acquire) != seen
                || shared.shutdown.load(Ordering::Acquire)
        });
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = shared.generation.load(Ordering::Acquire);
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        let ok = match job {
            // SAFETY: `run` keeps the closure alive until `remaining` reaches zero,
            // which happens only after this call returns.
            Some(Job(ptr)) => catch_unwind(AssertUnwindSafe(|| unsafe { (*ptr)(idx) })).is_ok(),
            None => true,
        };
        if !ok {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        // Release: the caller that sees zero sees this thread's writes.
        if shared.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            wake(shared, &shared.done);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        wake(&self.shared, &self.shared.start);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_chunk_is_visited_once_with_its_index() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for (len, chunk) in [(0, 4), (3, 4), (17, 4), (64, 8), (65, 1)] {
                let mut v = vec![0usize; len];
                pool.for_chunks_mut(&mut v, chunk, |i, c| {
                    c.iter_mut().for_each(|x| *x += i + 1);
                });
                let want: Vec<usize> = (0..len).map(|e| e / chunk + 1).collect();
                assert_eq!(v, want, "{threads} threads, {len} by {chunk}");
            }
        }
    }

    #[test]
    fn every_thread_runs_once_per_call() {
        for n in 1..=4 {
            let pool = ThreadPool::new(n);
            for _ in 0..100 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(|i| assert!(i != 1, "boom"))));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
