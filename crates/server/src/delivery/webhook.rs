//! Codes by a signed HTTP POST, in the Standard Webhooks style
//! (<https://www.standardwebhooks.com>), for operators to bridge any SMS or
//! email provider.
//!
//! The body is one JSON object:
//! `{"kind":"email"|"sms","to","code","locale","user_id","identification_id","expire_at"}`
//! (`locale` may be null, and `user_id` is null for a sign-up, which has no
//! user yet; `expire_at` is Unix milliseconds). The headers
//! are `webhook-id` (unique per message), `webhook-timestamp` (Unix
//! seconds) and `webhook-signature`: `v1,` then the base64 of
//! HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the secret's
//! bytes (the secret is written `whsec_` + base64, as Standard Webhooks
//! libraries expect). Any 2xx answer is success; redirects are not
//! followed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use roster_domain::{Channel, UserId};
use sha2::Sha256;

use super::{CodeMessage, Deliver, DeliveryError};

/// The key messages are signed with.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; the key must be 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, DeliveryError> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or_else(|| DeliveryError::new("a webhook secret is written whsec_<base64>"))?;
        let key = BASE64
            .decode(encoded)
            .map_err(|e| DeliveryError::caused("the webhook secret is not base64", e))?;
        if !(24..=64).contains(&key.len()) {
            return Err(DeliveryError::new(
                "a webhook secret must decode to 24 to 64 bytes",
            ));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC accepts keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// The JSON body of a webhook.
#[derive(serde::Serialize)]
struct Payload<'a> {
    kind: &'static str,
    to: &'a str,
    code: &'a str,
    locale: Option<&'a str>,
    user_id: Option<&'a str>,
    identification_id: &'a str,
    expire_at: i64,
}

/// Sends codes to an HTTP endpoint.
#[derive(Debug)]
pub struct WebhookDelivery {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: WebhookSecret,
}

impl WebhookDelivery {
    pub fn new(url: &str, secret: WebhookSecret, timeout: Duration) -> Result<Self, DeliveryError> {
        super::ensure_crypto_provider();
        let url = reqwest::Url::parse(url)
            .map_err(|e| DeliveryError::caused("the webhook URL is invalid", e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DeliveryError::new("the webhook URL must be http or https"));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DeliveryError::caused("setting up the webhook client", e))?;
        Ok(Self {
            client,
            url,
            secret,
        })
    }
}

fn message_id() -> String {
    let mut bytes = [0u8; 16];
    // Without a random source ids could repeat; not recoverable.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("operating system random source unavailable");
    format!("msg_{}", hex::encode(bytes))
}

#[async_trait]
impl Deliver for WebhookDelivery {
    async fn deliver(&self, message: &CodeMessage) -> Result<(), DeliveryError> {
        let payload = Payload {
            kind: match message.channel {
                Channel::Email => "email",
                Channel::Phone => "sms",
            },
            to: &message.to,
            code: message.code.as_str(),
            locale: message.locale.as_deref(),
            user_id: message.user_id.as_ref().map(UserId::as_str),
            identification_id: message.identification_id.as_str(),
            expire_at: message.expire_at.as_millis(),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| DeliveryError::caused("encoding the webhook", e))?;
        let id = message_id();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = self.secret.sign(&id, timestamp, &body);
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            // Without the URL: it may carry credentials in its query.
            .map_err(|e| DeliveryError::caused("the webhook could not be sent", e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(DeliveryError::new(format!(
                "the webhook endpoint answered {status}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        assert!(
            !format!(
                "{:?}",
                WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
            )
            .contains("MfKQ")
        );
    }
}
