//! Backend API authentication: `authorization: Bearer <secret key>`.
//!
//! Several keys may be configured at once so keys can be rotated without
//! downtime. Keys are compared as SHA-256 digests in constant time, so
//! neither a key's bytes nor its length leak through timing.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::error::ApiError;

/// Checks the secret key of Backend API calls.
#[derive(Clone)]
pub struct SecretKeys {
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeys({} configured)", self.digests.len())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl SecretKeys {
    /// Accepts any of `keys`; with none, every call is let through (the
    /// server only allows that on loopback).
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        Self {
            digests: Arc::new(keys.iter().map(|k| digest(k.as_ref().as_bytes())).collect()),
        }
    }

    /// Whether the Backend API is open (no key configured).
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let header = request
            .metadata()
            .get("authorization")
            .ok_or(ApiError::Unauthenticated {
                reason: "AUTHORIZATION_MISSING",
                message: "missing authorization header: send 'authorization: Bearer <secret key>'"
                    .to_owned(),
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or_default();
        let presented = digest(token.as_bytes());
        let matched = self
            .digests
            .iter()
            .fold(0u8, |acc, d| acc | d.ct_eq(&presented).unwrap_u8());
        if matched == 1 {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated {
                reason: "SECRET_KEY_INVALID",
                message: "the secret key is not valid".to_owned(),
            })
        }
    }
}

impl tonic::service::Interceptor for SecretKeys {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request).map_err(Status::from)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    fn request(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn any_configured_key_is_accepted() {
        let mut keys = SecretKeys::new(&["sk_old", "sk_new"]);
        assert!(keys.call(request(Some("Bearer sk_old"))).is_ok());
        assert!(keys.call(request(Some("Bearer sk_new"))).is_ok());
        let err = keys.call(request(Some("Bearer sk_other"))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            keys.call(request(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(keys.call(request(Some("sk_old"))).is_err());
    }

    #[test]
    fn no_keys_means_open() {
        let mut keys = SecretKeys::new::<&str>(&[]);
        assert!(keys.is_open());
        assert!(keys.call(request(None)).is_ok());
    }
}
