//! Session tokens: short-lived JWTs that any service can verify with the
//! public keys Roster publishes (JWKS).
//!
//! Signing keys are made on first start and kept in the store, so every
//! replica signs with the same keys and a restart keeps them; the newest
//! key of the configured algorithm signs, and every stored key is
//! published, so a new key can be added without breaking tokens signed by
//! older ones. Private-key operations use ring (constant time); the `rsa`
//! crate only generates RSA keys. Verification (of Roster's own tokens, for
//! the Frontend API) pins the algorithm to the key named by `kid`, so
//! `alg: none` and algorithm confusion cannot get through.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use roster_domain::{SessionId, Timestamp, UserId};
use roster_storage::{SessionStore, StorageError, StoredKey};
use serde::{Deserialize, Serialize};

/// How tokens are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit key: what every JWT
    /// library verifies.
    Rs256,
    /// Ed25519: smaller, faster tokens, for verifiers that support it.
    Eddsa,
}

impl SigningAlgorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Eddsa => "EdDSA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Rs256, Self::Eddsa]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// A public key as published in the JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: &'static str,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub n: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub e: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub crv: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub x: String,
}

enum Signer {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

struct LoadedKey {
    kid: String,
    algorithm: SigningAlgorithm,
    signer: Signer,
    jwk: Jwk,
    decoding: DecodingKey,
}

/// Why keys could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key {kid} is invalid: {why}")]
    Invalid { kid: String, why: String },
    #[error("generating a signing key failed: {0}")]
    Generate(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a token was refused. The variants are for logs; callers answer
/// every one the same way.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Rejected(#[from] jsonwebtoken::errors::Error),
}

/// The claims of a session token Roster verifies.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionClaims {
    pub sub: String,
    pub sid: String,
    pub exp: i64,
    pub iat: i64,
}

/// Signs and verifies session tokens.
pub struct TokenIssuer {
    /// Every stored key, newest first: published, and accepted. Reloaded
    /// by [`TokenIssuer::refresh`], so keys other replicas made or a
    /// rotation added appear without a restart.
    keys: std::sync::RwLock<Vec<Arc<LoadedKey>>>,
    /// The key this process signs with, chosen at start.
    signing: Arc<LoadedKey>,
    /// The `iss` claim.
    pub issuer: String,
    /// Default token lifetime, seconds.
    pub lifetime_s: i64,
    /// How far `nbf` is set before `iat`, and how much clock difference
    /// verification allows, seconds.
    pub skew_s: i64,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("signing", &self.signing.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Token settings.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub algorithm: SigningAlgorithm,
    pub issuer: String,
    pub lifetime_s: i64,
    pub skew_s: i64,
}

impl Default for TokenSettings {
    /// RS256, 60-second tokens, 5 seconds of clock skew.
    fn default() -> Self {
        Self {
            algorithm: SigningAlgorithm::Rs256,
            issuer: "roster".to_owned(),
            lifetime_s: 60,
            skew_s: 5,
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn unpem(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

/// Makes a new private key, PKCS#8 DER.
fn generate(algorithm: SigningAlgorithm) -> Result<Vec<u8>, KeyError> {
    match algorithm {
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            Ok(key
                .to_pkcs8_der()
                .map_err(|e| KeyError::Generate(e.to_string()))?
                .as_bytes()
                .to_vec())
        }
        SigningAlgorithm::Eddsa => {
            let document = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            Ok(document.as_ref().to_vec())
        }
    }
}

fn load(stored: &StoredKey) -> Result<LoadedKey, KeyError> {
    let invalid = |why: &str| KeyError::Invalid {
        kid: stored.kid.clone(),
        why: why.to_owned(),
    };
    let algorithm = SigningAlgorithm::from_name(&stored.algorithm)
        .ok_or_else(|| invalid("unknown algorithm"))?;
    let der = unpem(&stored.private_key_pem).ok_or_else(|| invalid("not PEM"))?;
    let (signer, jwk, decoding) = match algorithm {
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs8::DecodePrivateKey as _;
            use rsa::traits::PublicKeyParts as _;
            let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| invalid(&e.to_string()))?;
            let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
                .map_err(|e| invalid(&e.to_string()))?
                .to_public_key();
            let (n, e) = (public.n().to_bytes_be(), public.e().to_bytes_be());
            let jwk = Jwk {
                kid: stored.kid.clone(),
                kty: "RSA",
                alg: "RS256",
                use_: "sig",
                n: URL_SAFE_NO_PAD.encode(&n),
                e: URL_SAFE_NO_PAD.encode(&e),
                crv: String::new(),
                x: String::new(),
            };
            (
                Signer::Rsa(pair),
                jwk,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        SigningAlgorithm::Eddsa => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| invalid(&e.to_string()))?;
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            let decoding =
                DecodingKey::from_ed_components(&x).map_err(|e| invalid(&e.to_string()))?;
            let jwk = Jwk {
                kid: stored.kid.clone(),
                kty: "OKP",
                alg: "EdDSA",
                use_: "sig",
                n: String::new(),
                e: String::new(),
                crv: "Ed25519".to_owned(),
                x,
            };
            (Signer::Ed25519(pair), jwk, decoding)
        }
    };
    Ok(LoadedKey {
        kid: stored.kid.clone(),
        algorithm,
        signer,
        jwk,
        decoding,
    })
}

fn new_kid(algorithm: SigningAlgorithm) -> String {
    let mut bytes = [0u8; 12];
    // Without a random source kids could collide; not recoverable.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("operating system random source unavailable");
    let prefix = match algorithm {
        SigningAlgorithm::Rs256 => "rs",
        SigningAlgorithm::Eddsa => "ed",
    };
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The claims Roster puts in a session token.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    sid: &'a str,
    iss: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    azp: Option<&'a str>,
}

impl TokenIssuer {
    /// Loads the stored keys, first making one of the configured algorithm
    /// if there is none. Replicas starting together may each make one;
    /// both are then published and both verify.
    pub async fn start(
        store: &dyn SessionStore,
        settings: TokenSettings,
        now: Timestamp,
    ) -> Result<Self, KeyError> {
        let mut stored = store.signing_keys().await?;
        if !stored
            .iter()
            .any(|k| k.algorithm == settings.algorithm.name())
        {
            let kid = Self::rotate(store, settings.algorithm, now).await?;
            tracing::info!(kid = %kid, algorithm = settings.algorithm.name(), "created a token signing key");
            stored = store.signing_keys().await?;
        }
        let keys = stored
            .iter()
            .map(|k| load(k).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let signing = keys
            .iter()
            .find(|k| k.algorithm == settings.algorithm)
            .cloned()
            .ok_or_else(|| KeyError::Generate("no key of the configured algorithm".into()))?;
        Ok(Self {
            keys: std::sync::RwLock::new(keys),
            signing,
            issuer: settings.issuer,
            lifetime_s: settings.lifetime_s,
            skew_s: settings.skew_s,
        })
    }

    /// Adds a new signing key of `algorithm`. Processes started afterwards
    /// sign with it; every older key stays published, so tokens they
    /// signed keep verifying. Returns the new key's id.
    pub async fn rotate(
        store: &dyn SessionStore,
        algorithm: SigningAlgorithm,
        now: Timestamp,
    ) -> Result<String, KeyError> {
        let der = tokio::task::spawn_blocking(move || generate(algorithm))
            .await
            .map_err(|e| KeyError::Generate(e.to_string()))??;
        let key = StoredKey {
            kid: new_kid(algorithm),
            algorithm: algorithm.name().to_owned(),
            private_key_pem: pem("PRIVATE KEY", &der),
            created_at: now,
        };
        store.insert_signing_key(&key).await?;
        Ok(key.kid)
    }

    /// Reloads the stored keys: those made since (by another replica, or
    /// `rotate-signing-key`) are published and accepted from now on. The
    /// signing key stays the one chosen at start.
    pub async fn refresh(&self, store: &dyn SessionStore) -> Result<(), KeyError> {
        let stored = store.signing_keys().await?;
        let current = self.current_keys();
        let mut keys = Vec::with_capacity(stored.len());
        for key in &stored {
            if let Some(known) = current.iter().find(|k| k.kid == key.kid) {
                keys.push(known.clone());
            } else {
                keys.push(Arc::new(load(key)?));
                tracing::info!(kid = %key.kid, "loaded a new token signing key");
            }
        }
        if !keys.iter().any(|k| k.kid == self.signing.kid) {
            keys.push(self.signing.clone());
        }
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        Ok(())
    }

    fn current_keys(&self) -> Vec<Arc<LoadedKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The public keys, newest first.
    pub fn jwks(&self) -> Vec<Jwk> {
        self.current_keys().iter().map(|k| k.jwk.clone()).collect()
    }

    /// Signs a session token for `session` of `user`, valid `lifetime_s`
    /// seconds from `now`.
    pub fn sign(
        &self,
        user: &UserId,
        session: &SessionId,
        now: Timestamp,
        lifetime_s: i64,
    ) -> Result<String, &'static str> {
        self.sign_with(user, session, now, lifetime_s, serde_json::Map::new(), None)
    }

    /// Signs a session token carrying `extra` claims (a JWT template's)
    /// besides Roster's own, which always win; `azp` is the origin the
    /// token was asked for from, when known.
    pub fn sign_with(
        &self,
        user: &UserId,
        session: &SessionId,
        now: Timestamp,
        lifetime_s: i64,
        extra: serde_json::Map<String, serde_json::Value>,
        azp: Option<&str>,
    ) -> Result<String, &'static str> {
        let iat = now.as_millis().div_euclid(1000);
        let claims = Claims {
            sub: user.as_str(),
            sid: session.as_str(),
            iss: &self.issuer,
            iat,
            nbf: iat - self.skew_s,
            exp: iat + lifetime_s,
            azp,
        };
        let serde_json::Value::Object(registered) =
            serde_json::to_value(&claims).map_err(|_| "claims do not serialize")?
        else {
            return Err("claims are not an object");
        };
        let mut all = extra;
        all.extend(registered);
        self.sign_claims(&all)
    }

    fn sign_claims(&self, claims: &impl Serialize) -> Result<String, &'static str> {
        let key = &self.signing;
        let header = serde_json::json!({"alg": key.algorithm.name(), "typ": "JWT", "kid": key.kid});
        let encode = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = serde_json::to_value(claims).map_err(|_| "claims do not serialize")?;
        let signing_input = format!("{}.{}", encode(&header), encode(&claims));
        let signature = match &key.signer {
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| "RSA signing failed")?;
                signature
            }
            Signer::Ed25519(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// Verifies a session token Roster signed: a known `kid`, that key's
    /// algorithm and signature, `iss`, and `exp`/`nbf` against `now` with
    /// the configured skew. Does not check that the session is still
    /// active; callers do.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<SessionClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self
            .current_keys()
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let algorithm = match key.algorithm {
            SigningAlgorithm::Rs256 => Algorithm::RS256,
            SigningAlgorithm::Eddsa => Algorithm::EdDSA,
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        // Time is checked below against the injected clock.
        validation.validate_nbf = false;
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<SessionClaimsWithNbf>(token, &key.decoding, &validation)?;
        let now_s = now.as_millis().div_euclid(1000);
        let claims = data.claims;
        if now_s >= claims.exp + self.skew_s || now_s + self.skew_s < claims.nbf {
            return Err(TokenError::Rejected(
                jsonwebtoken::errors::ErrorKind::ExpiredSignature.into(),
            ));
        }
        Ok(SessionClaims {
            sub: claims.sub,
            sid: claims.sid,
            exp: claims.exp,
            iat: claims.iat,
        })
    }
}

#[derive(Deserialize)]
struct SessionClaimsWithNbf {
    sub: String,
    sid: String,
    exp: i64,
    iat: i64,
    nbf: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn issuer(
        algorithm: SigningAlgorithm,
    ) -> (
        TokenIssuer,
        roster_storage_sqlite::SqliteStore,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = roster_storage_sqlite::SqliteStore::connect(&url)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let settings = TokenSettings {
            algorithm,
            ..TokenSettings::default()
        };
        let issuer = TokenIssuer::start(&store, settings.clone(), Timestamp::from_millis(0))
            .await
            .unwrap();
        // A second start reuses the stored key.
        let again = TokenIssuer::start(&store, settings, Timestamp::from_millis(0))
            .await
            .unwrap();
        assert_eq!(issuer.jwks(), again.jwks());
        (issuer, store, dir)
    }

    fn part(token: &str, i: usize) -> serde_json::Value {
        let text = token.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
    }

    fn with(token: &str, i: usize, value: &serde_json::Value) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[i] = URL_SAFE_NO_PAD.encode(value.to_string());
        parts.join(".")
    }

    #[tokio::test]
    async fn tokens_verify_only_as_signed_and_in_time() {
        for algorithm in [SigningAlgorithm::Rs256, SigningAlgorithm::Eddsa] {
            let (issuer, store, _dir) = issuer(algorithm).await;
            let now = Timestamp::from_millis(1_700_000_000_000);
            let (user, session) = (UserId::generate(now), SessionId::generate(now));
            let token = issuer.sign(&user, &session, now, 60).unwrap();
            assert_eq!(part(&token, 0)["alg"], algorithm.name());
            let claims = issuer.verify(&token, now).unwrap();
            assert_eq!(
                (claims.sub.as_str(), claims.sid.as_str()),
                (user.as_str(), session.as_str())
            );

            // Time: valid from nbf (iat - skew) to exp, give or take the skew.
            assert!(issuer.verify(&token, now.plus_millis(64_000)).is_ok());
            assert!(issuer.verify(&token, now.plus_millis(65_000)).is_err());
            assert!(issuer.verify(&token, now.plus_millis(-10_000)).is_ok());
            assert!(issuer.verify(&token, now.plus_millis(-10_001)).is_err());

            // Tampered claims, another algorithm, no algorithm, unknown key.
            let mut claims = part(&token, 1);
            claims["sub"] = "user_someoneelse".into();
            assert!(issuer.verify(&with(&token, 1, &claims), now).is_err());
            for alg in ["none", "HS256", "RS256", "EdDSA"] {
                let mut header = part(&token, 0);
                if header["alg"] == alg {
                    continue;
                }
                header["alg"] = alg.into();
                assert!(
                    issuer.verify(&with(&token, 0, &header), now).is_err(),
                    "{alg}"
                );
            }
            let unsigned = format!(
                "{}.{}.",
                token.split('.').next().unwrap(),
                token.split('.').nth(1).unwrap()
            );
            assert!(issuer.verify(&unsigned, now).is_err());
            let mut header = part(&token, 0);
            header["kid"] = "rs_unknown".into();
            assert!(matches!(
                issuer.verify(&with(&token, 0, &header), now),
                Err(TokenError::UnknownKey)
            ));
            assert!(matches!(
                issuer.verify("not a token", now),
                Err(TokenError::Malformed)
            ));

            // After a rotation the new key signs, and the old one still
            // verifies what it signed.
            let kid = TokenIssuer::rotate(&store, algorithm, now).await.unwrap();
            let rotated = TokenIssuer::start(
                &store,
                TokenSettings {
                    algorithm,
                    ..TokenSettings::default()
                },
                now,
            )
            .await
            .unwrap();
            assert_eq!(rotated.jwks().len(), 2);
            assert_eq!(rotated.jwks()[0].kid, kid);
            let new_token = rotated.sign(&user, &session, now, 60).unwrap();
            assert_eq!(part(&new_token, 0)["kid"], kid.as_str());
            assert!(rotated.verify(&token, now).is_ok());
            assert!(
                issuer.verify(&new_token, now).is_err(),
                "an old process lacks the new key"
            );

            // Another issuer's key (same algorithm) does not verify it.
            let (other, _other_store, _dir2) = self::issuer(algorithm).await;
            let mut header = part(&token, 0);
            header["kid"] = other.jwks()[0].kid.clone().into();
            assert!(other.verify(&token, now).is_err());
            assert!(other.verify(&with(&token, 0, &header), now).is_err());
        }
    }
}
