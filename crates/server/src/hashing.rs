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
