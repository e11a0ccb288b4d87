//! Password hashing off the async threads, in a bounded pool.
//!
//! argon2id costs tens of milliseconds of CPU per hash by design. Running it
//! on the async runtime would stall every other request on that thread, so
//! hashes run on tokio's blocking threads; a semaphore bounds how many run
//! at once (one per core), so a burst of sign-ups queues instead of
//! oversubscribing the CPU.

use std::sync::Arc;

use roster_domain::{Password, PasswordHash};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The bounded hashing pool.
#[derive(Clone, Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A pool running at most `parallelism` hashes at once.
    pub fn new(parallelism: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(parallelism.max(1))),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("hashing pool closed"))?;
        let span = tracing::debug_span!("password_hash");
        Ok(tokio::task::spawn_blocking(move || span.in_scope(work)).await?)
    }

    /// Hashes a password.
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, ApiError> {
        self.run(move || password.hash()).await
    }

    /// Checks a candidate against a hash.
    pub async fn verify(&self, hash: PasswordHash, candidate: String) -> Result<bool, ApiError> {
        self.run(move || hash.verify(&candidate)).await
    }
}
