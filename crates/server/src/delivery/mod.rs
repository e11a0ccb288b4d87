//! Delivering verification codes: one [`Deliver`] trait, chosen per channel
//! by configuration.
//!
//! - [`smtp::SmtpDelivery`]: mail through an SMTP relay, bodies from
//!   templates operators can override ([`templates`]).
//! - [`webhook::WebhookDelivery`]: a signed JSON POST (Standard Webhooks),
//!   to bridge any SMS or email provider.
//!
//! The Backend API may instead ask for the code in the response
//! (`return_code`). A message's code never reaches a log: [`CodeMessage`]'s
//! `Debug` redacts it, and delivery errors describe the transport only.

pub mod smtp;
pub mod templates;
pub mod webhook;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use roster_domain::{Channel, IdentificationId, Timestamp, UserId, VerificationCode};

/// A code to deliver.
#[derive(Clone)]
pub struct CodeMessage {
    pub channel: Channel,
    /// The email address or E.164 phone number.
    pub to: String,
    pub code: VerificationCode,
    /// The user's locale (BCP 47), when known.
    pub locale: Option<String>,
    /// The user, once there is one (a sign-up has none yet).
    pub user_id: Option<UserId>,
    pub identification_id: IdentificationId,
    /// When the code stops being accepted.
    pub expire_at: Timestamp,
    /// How long the code is valid, in whole minutes, for message text.
    pub valid_minutes: i64,
}

impl fmt::Debug for CodeMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeMessage")
            .field("channel", &self.channel)
            .field("user_id", &self.user_id)
            .field("identification_id", &self.identification_id)
            .finish_non_exhaustive()
    }
}

/// Why a code was not delivered. Its text never contains the code.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct DeliveryError {
    what: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DeliveryError {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }

    pub fn caused(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what: what.into(),
            source: Some(source.into()),
        }
    }
}

/// A way to send codes.
#[async_trait]
pub trait Deliver: Send + Sync + fmt::Debug {
    /// Sends the message; returns once the peer accepted it.
    async fn deliver(&self, message: &CodeMessage) -> Result<(), DeliveryError>;
}

/// The delivery configured for each channel; `None` where codes can only
/// be returned to a Backend API caller.
#[derive(Clone, Debug, Default)]
pub struct Deliveries {
    pub email: Option<Arc<dyn Deliver>>,
    pub sms: Option<Arc<dyn Deliver>>,
}

impl Deliveries {
    /// The delivery for a channel, if configured.
    pub fn for_channel(&self, channel: Channel) -> Option<&Arc<dyn Deliver>> {
        match channel {
            Channel::Email => self.email.as_ref(),
            Channel::Phone => self.sms.as_ref(),
        }
    }
}

/// Makes ring the process's TLS provider unless one is installed already;
/// the HTTP and SMTP clients need one.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
