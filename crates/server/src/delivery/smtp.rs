//! Codes by mail through an SMTP relay (lettre, pooled connections).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use roster_domain::Channel;

use super::templates::TemplateSet;
use super::{CodeMessage, Deliver, DeliveryError};

/// How the connection to the relay is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port
    /// 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

impl SmtpTls {
    /// The usual port of the mode.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// Where and how to send mail.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password, when the relay wants them.
    pub credentials: Option<(String, String)>,
    /// The sender, e.g. `Example <no-reply@example.com>`.
    pub from: String,
    pub templates: TemplateSet,
    /// Longest a send may take.
    pub timeout: Duration,
}

/// Sends codes by mail.
#[derive(Debug)]
pub struct SmtpDelivery {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    templates: TemplateSet,
}

impl SmtpDelivery {
    /// Prepares the transport; connects only when the first mail is sent.
    pub fn new(config: SmtpConfig) -> Result<Self, DeliveryError> {
        super::ensure_crypto_provider();
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| DeliveryError::caused("the SMTP from address is invalid", e))?;
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let parameters = TlsParameters::new(config.host.clone())
                    .map_err(|e| DeliveryError::caused("setting up SMTP TLS", e))?;
                if mode == SmtpTls::Tls {
                    Tls::Wrapper(parameters)
                } else {
                    Tls::Required(parameters)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some((user, password)) = config.credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            templates: config.templates,
        })
    }
}

#[async_trait]
impl Deliver for SmtpDelivery {
    async fn deliver(&self, message: &CodeMessage) -> Result<(), DeliveryError> {
        if message.channel != Channel::Email {
            return Err(DeliveryError::new("SMTP delivers only to email addresses"));
        }
        let to: Mailbox = message.to.parse().map_err(|e| {
            DeliveryError::caused("the address cannot be written in a mail header", e)
        })?;
        let mail = self.templates.render(
            message.locale.as_deref(),
            message.code.as_str(),
            message.valid_minutes,
            &message.to,
        );
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .multipart(MultiPart::alternative_plain_html(mail.text, mail.html))
            .map_err(|e| DeliveryError::caused("building the mail", e))?;
        self.transport
            .send(email)
            .await
            .map_err(|e| DeliveryError::caused("the SMTP relay did not accept the mail", e))?;
        Ok(())
    }
}
