//! Password hashing off the async threads, in a bounded pool.
//!
//! argon2id costs tens of milliseconds of CPU and 19 MiB of memory per hash
//! by design. Running it on the async runtime would stall every other
//! request on that thread, so hashes run on a few threads of their own (one
//! per core), and a burst of sign-ups queues instead of oversubscribing the
//! CPU. Dedicated threads rather than tokio's blocking pool also bound
//! memory: every thread that ever hashed keeps its allocator arena, and the
//! blocking pool grows to hundreds of threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use roster_domain::{Password, PasswordHash};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The bounded hashing pool.
#[derive(Clone, Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Jobs for the hashing threads, which end when the last sender goes.
    jobs: std::sync::mpsc::Sender<Job>,
    /// Hashes waiting for a slot or running, for metrics.
    queued: Arc<AtomicI64>,
    /// How many run at once.
    capacity: usize,
}

type Job = Box<dyn FnOnce() + Send>;

/// Decrements a gauge when dropped.
struct Queued<'a>(&'a AtomicI64);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hasher {
    /// A pool running at most `parallelism` hashes at once.
    pub fn new(parallelism: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..parallelism.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("roster-hash-{i}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking hash fails its call (the result
                        // channel drops), not the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a password hashing thread failed");
            }
        }
        Self {
            jobs,
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
            queued: Arc::default(),
            capacity: parallelism.max(1),
        }
    }

    /// Hashes waiting for a slot, and hashes running.
    pub fn queue(&self) -> (i64, i64) {
        // Permits are never added or forgotten, so the capacity is fixed.
        let running = self.capacity - self.permits.available_permits();
        let running = i64::try_from(running).unwrap_or(0);
        let total = self.queued.load(Ordering::Relaxed);
        ((total - running).max(0), running)
    }

    async fn run<T: Send + 'static>(
        &self,
        name: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.queued);
        let span = tracing::info_span!("password", otel.name = name);
        // The permit travels with the job, so a hash whose caller hung up
        // still holds its slot until it ends; a job whose caller is gone
        // before it starts is skipped.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("hashing pool closed"))?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _permit = permit;
                if !done.is_closed() {
                    let _ = done.send(span.in_scope(work));
                }
            }))
            .map_err(|_| ApiError::Internal("hashing threads stopped"))?;
        result
            .await
            .map_err(|_| ApiError::Internal("a password hash failed"))
    }

    /// Hashes a password.
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, ApiError> {
        self.run("password.hash", move || password.hash()).await
    }

    /// Checks a candidate against a hash.
    pub async fn verify(&self, hash: PasswordHash, candidate: String) -> Result<bool, ApiError> {
        self.run("password.verify", move || hash.verify(&candidate))
            .await
    }

    /// Checks a candidate against a hash that may be missing (no such user,
    /// or no password): then a stand-in hash is checked instead and the
    /// answer is `false`, so both cases cost the same time as a wrong
    /// password.
    pub async fn verify_maybe(
        &self,
        hash: Option<PasswordHash>,
        candidate: String,
    ) -> Result<bool, ApiError> {
        let real = hash.is_some();
        let hash = match hash {
            Some(hash) => hash,
            None => self.stand_in().await?,
        };
        Ok(self.verify(hash, candidate).await? && real)
    }

    async fn stand_in(&self) -> Result<PasswordHash, ApiError> {
        static STAND_IN: tokio::sync::OnceCell<PasswordHash> = tokio::sync::OnceCell::const_new();
        STAND_IN
            .get_or_try_init(|| async {
                // A random password nobody knows, hashed with the same
                // parameters as real ones.
                let mut bytes = [0u8; 24];
                getrandom::fill(&mut bytes)
                    .map_err(|_| ApiError::Internal("random source unavailable"))?;
                let password = Password::parse(&hex::encode(bytes))
                    .map_err(|_| ApiError::Internal("stand-in password invalid"))?;
                self.hash(password).await
            })
            .await
            .cloned()
    }
}
