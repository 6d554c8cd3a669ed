//! Compute threads: plain threads, never tokio's workers, each taking one job
//! at a time from a shared queue and running it to the end on itself. The
//! local backend has two such pools: `inference.local.threads` threads named
//! `castwork-infer-N` for generations, and one, `castwork-embed-0`, for
//! embedding batches. The threads end once the backend is dropped and their
//! queue is empty.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

/// A job: runs on a compute thread.
pub(super) type Job = Box<dyn FnOnce(&LocalCompute) + Send>;

/// What the compute threads are doing. Cheap to clone (one `Arc`): the pool
/// above reads it to size itself and for its metrics.
#[derive(Debug, Clone)]
pub struct LocalCompute {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    threads: usize,
    busy: AtomicUsize,
    queued: AtomicUsize,
    cancelled: AtomicU64,
    panicked: AtomicU64,
}

impl LocalCompute {
    /// Compute threads: jobs that run at once.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.inner.busy.load(Ordering::Relaxed)
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Generations stopped because their receiver went away (stream dropped,
    /// client gone, request timed out), before or while decoding.
    pub fn cancelled_total(&self) -> u64 {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// Jobs that panicked (the thread survives; the request gets an error).
    pub fn panicked_total(&self) -> u64 {
        self.inner.panicked.load(Ordering::Relaxed)
    }

    pub(super) fn count_cancelled(&self) {
        self.inner.cancelled.fetch_add(1, Ordering::Relaxed);
    }
}

/// The queue in front of the compute threads.
pub(super) struct ComputePool {
    jobs: Sender<Job>,
    compute: LocalCompute,
}

impl ComputePool {
    /// Starts `threads` compute threads named `castwork-{name}-N`.
    pub(super) fn start(name: &str, threads: usize) -> Result<Self, String> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let compute = LocalCompute { inner: Arc::new(Counters { threads, ..Counters::default() }) };
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            let compute = compute.clone();
            std::thread::Builder::new()
                .name(format!("castwork-{name}-{n}"))
                .spawn(move || work(&queue, &compute))
                .map_err(|e| format!("failed to start compute thread {n}: {e}"))?;
        }
        Ok(Self { jobs, compute })
    }

    /// Queues a job; false when no thread is left to run it.
    pub(super) fn submit(&self, job: Job) -> bool {
        self.compute.inner.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.compute.inner.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(super) fn compute(&self) -> &LocalCompute {
        &self.compute
    }
}

/// A compute thread: jobs until the queue's sender is gone.
fn work(queue: &Mutex<Receiver<Job>>, compute: &LocalCompute) {
    loop {
        // the lock is held only while waiting for a job; the queue has no
        // invariant a panicking holder could break
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        let counters = &compute.inner;
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        counters.busy.fetch_add(1, Ordering::Relaxed);
        // a job reports its own failures; this keeps the thread alive if it panics
        if catch_unwind(AssertUnwindSafe(|| job(compute))).is_err() {
            counters.panicked.fetch_add(1, Ordering::Relaxed);
            tracing::error!("a local inference job panicked");
        }
        counters.busy.fetch_sub(1, Ordering::Relaxed);
    }
}
