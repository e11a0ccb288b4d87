//! Command-line flags; each also reads a `ROSTER_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::delivery::smtp::{SmtpConfig, SmtpDelivery, SmtpTls};
use crate::delivery::templates::TemplateSet;
use crate::delivery::webhook::{WebhookDelivery, WebhookSecret};
use crate::delivery::{Deliver, Deliveries};
use crate::tokens::{SigningAlgorithm, TokenSettings};

/// Roster: user management over gRPC.
#[derive(Debug, Parser)]
#[command(name = "roster", version, about = "Roster: user management over gRPC")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (migrating the database first).
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Add a new session-token signing key and exit. Restart the servers
    /// to sign with it; older keys stay published in the JWKS.
    RotateSigningKey(RotateArgs),
}

/// Flags of `roster rotate-signing-key`.
#[derive(Clone, Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Algorithm of the new key.
    #[arg(long, env = "ROSTER_TOKEN_ALGORITHM", value_enum, default_value_t = SigningAlgorithm::Rs256)]
    pub token_algorithm: SigningAlgorithm,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the data lives.
#[derive(Clone, Debug, Args)]
pub struct DatabaseArgs {
    /// Database URL: `postgres://user:pass@host/db` for PostgreSQL or
    /// `sqlite://path/roster.db` for SQLite. Default: SQLite in the data
    /// directory.
    #[arg(long, env = "ROSTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory for the default SQLite database.
    #[arg(long, env = "ROSTER_DATA_DIR", default_value = "roster-data")]
    pub data_dir: PathBuf,
    /// Most PostgreSQL connections this replica opens for calls: half for
    /// write transactions, half for single statements; searches open
    /// half as many again, and one more merges the search index. Size it
    /// so that every replica's connections fit the server's
    /// `max_connections`. Ignored on SQLite.
    #[arg(long, env = "ROSTER_DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub database_max_connections: u32,
}

impl DatabaseArgs {
    /// The URL to open: the one given, or SQLite in the data directory
    /// (created if missing).
    pub fn url(&self) -> std::io::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        Ok(format!(
            "sqlite://{}",
            self.data_dir.join("roster.db").display()
        ))
    }
}

/// Flags of `roster serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the gRPC API listens on.
    #[arg(long, env = "ROSTER_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Secret keys accepted on the Backend API (repeat the flag, or separate
    /// with commas in the variable). Several keys allow rotation. Without
    /// any, the Backend API is open and Roster refuses to listen beyond
    /// loopback.
    #[arg(
        long = "secret-key",
        env = "ROSTER_SECRET_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secret_keys: Vec<String>,
    /// File with one secret key per line (blank lines and `#` comments
    /// ignored), for keys mounted from a secret store.
    #[arg(long, env = "ROSTER_SECRET_KEYS_FILE")]
    pub secret_keys_file: Option<PathBuf>,
    /// Secret key verification codes are hashed under (at least 16 bytes).
    /// Replicas must share it. Without it, each process makes its own, and
    /// codes prepared by one process cannot be checked by another or after
    /// a restart.
    #[arg(long, env = "ROSTER_CODE_HASH_KEY", hide_env_values = true)]
    pub code_hash_key: Option<String>,
    /// Longest a call may run, e.g. `30s` or `500ms`.
    #[arg(long, env = "ROSTER_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Most calls in flight at once; more are refused with UNAVAILABLE
    /// (`SERVER_OVERLOADED`) instead of queueing.
    #[arg(long, env = "ROSTER_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// On SIGTERM, how long health reports NOT_SERVING while calls are still
    /// accepted, before the listener closes and in-flight calls drain.
    #[arg(long, env = "ROSTER_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Address of the plain-HTTP port (JWKS, profile images, avatars).
    #[arg(long, env = "ROSTER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// URL clients reach the HTTP port at; `image_url` values start with it.
    /// Default: `http://` and the HTTP port's address.
    #[arg(long, env = "ROSTER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where profile images are kept: a directory, or `s3://bucket/prefix`
    /// with endpoint, region and credentials from the standard `AWS_*`
    /// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`). Default: `images` in
    /// the data directory.
    #[arg(long, env = "ROSTER_IMAGE_STORE")]
    pub image_store: Option<String>,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub sessions: SessionArgs,
}

/// Flags of sessions and session tokens.
#[derive(Clone, Debug, Args)]
pub struct SessionArgs {
    /// Algorithm new session tokens are signed with. A key is made for it
    /// on first start and kept in the database.
    #[arg(long, env = "ROSTER_TOKEN_ALGORITHM", value_enum, default_value_t = SigningAlgorithm::Rs256)]
    pub token_algorithm: SigningAlgorithm,
    /// The `iss` claim of session tokens, usually the URL Roster is reached at.
    #[arg(long, env = "ROSTER_TOKEN_ISSUER", default_value = "roster")]
    pub token_issuer: String,
    /// Lifetime of a session token.
    #[arg(long, env = "ROSTER_TOKEN_LIFETIME", default_value = "60s", value_parser = parse_duration)]
    pub token_lifetime: Duration,
    /// How far `nbf` is set back, and the clock difference token checks allow.
    #[arg(long, env = "ROSTER_TOKEN_SKEW", default_value = "5s", value_parser = parse_duration)]
    pub token_skew: Duration,
    /// Lifetime of a session.
    #[arg(long, env = "ROSTER_SESSION_LIFETIME", default_value = "7d", value_parser = parse_duration)]
    pub session_lifetime: Duration,
    /// Failed sign-in attempts in a row that lock a user out.
    #[arg(long, env = "ROSTER_LOCKOUT_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub lockout_attempts: u32,
    /// How long a lockout lasts (`UnlockUser` ends it early).
    #[arg(long, env = "ROSTER_LOCKOUT_DURATION", default_value = "1h", value_parser = parse_duration)]
    pub lockout_duration: Duration,
    /// What a sign-up must gather before it completes: any of
    /// `email_address`, `phone_number`, `username`, `password`.
    #[arg(
        long,
        env = "ROSTER_SIGN_UP_REQUIRES",
        value_delimiter = ',',
        default_value = "email_address,password",
        value_parser = ["email_address", "phone_number", "username", "password"]
    )]
    pub sign_up_requires: Vec<String>,
    /// JSON file of JWT templates (`{"name": {"claims": {…}, "lifetime":
    /// 60}}`), added to the built-in `hasura` one.
    #[arg(long, env = "ROSTER_JWT_TEMPLATES")]
    pub jwt_templates: Option<PathBuf>,
    /// Whether signed-in users may delete their own accounts
    /// (`AccountService.DeleteAccount`).
    #[arg(long, env = "ROSTER_SELF_DELETE", default_value_t = true, action = clap::ArgAction::Set)]
    pub self_delete: bool,
    /// Header a trusted proxy in front of Roster puts the client's address
    /// in (e.g. `x-forwarded-for`). Without it, the peer address is used.
    #[arg(long, env = "ROSTER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
}

impl SessionArgs {
    /// The sign-up requirements these flags describe.
    pub fn sign_up(&self) -> roster_domain::SignUpRequirements {
        let has = |f: &str| self.sign_up_requires.iter().any(|r| r == f);
        roster_domain::SignUpRequirements {
            email_address: has("email_address"),
            phone_number: has("phone_number"),
            username: has("username"),
            password: has("password"),
        }
    }

    /// The lockout policy these flags describe.
    pub fn lockout(&self) -> roster_domain::LockoutPolicy {
        roster_domain::LockoutPolicy {
            max_attempts: self.lockout_attempts,
            duration_ms: i64::try_from(self.lockout_duration.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The token settings these flags describe.
    pub fn token_settings(&self) -> TokenSettings {
        TokenSettings {
            algorithm: self.token_algorithm,
            issuer: self.token_issuer.clone(),
            lifetime_s: i64::try_from(self.token_lifetime.as_secs())
                .unwrap_or(60)
                .max(1),
            skew_s: i64::try_from(self.token_skew.as_secs()).unwrap_or(5),
        }
    }
}

/// How email codes are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmailDelivery {
    /// Not delivered: only Backend API callers asking for `return_code`
    /// get codes.
    None,
    /// Mail through an SMTP relay (`--smtp-*`).
    Smtp,
    /// A signed POST to `--webhook-url`.
    Webhook,
}

/// How SMS codes are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SmsDelivery {
    /// Not delivered: only Backend API callers asking for `return_code`
    /// get codes.
    None,
    /// A signed POST to `--webhook-url`, for a bridge to an SMS provider.
    Webhook,
}

/// Flags of code delivery.
#[derive(Clone, Debug, Args)]
pub struct DeliveryArgs {
    /// How email verification codes are delivered.
    #[arg(long, env = "ROSTER_EMAIL_DELIVERY", value_enum, default_value_t = EmailDelivery::None)]
    pub email_delivery: EmailDelivery,
    /// How phone verification codes are delivered.
    #[arg(long, env = "ROSTER_SMS_DELIVERY", value_enum, default_value_t = SmsDelivery::None)]
    pub sms_delivery: SmsDelivery,
    /// SMTP relay host name.
    #[arg(long, env = "ROSTER_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP relay port. Default: 587 for starttls, 465 for tls, 25 for none.
    #[arg(long, env = "ROSTER_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// How the SMTP connection is secured.
    #[arg(long, env = "ROSTER_SMTP_TLS", value_enum, default_value_t = SmtpTls::Starttls)]
    pub smtp_tls: SmtpTls,
    /// SMTP user name, when the relay wants a login.
    #[arg(long, env = "ROSTER_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password.
    #[arg(long, env = "ROSTER_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Sender of code mails, e.g. `Example <no-reply@example.com>`.
    #[arg(long, env = "ROSTER_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Directory of mail templates overriding the built-in ones (see the
    /// README).
    #[arg(long, env = "ROSTER_EMAIL_TEMPLATES")]
    pub email_templates: Option<PathBuf>,
    /// Endpoint webhook deliveries are POSTed to.
    #[arg(long, env = "ROSTER_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// Secret webhooks are signed with: `whsec_` and the base64 of 24 to 64
    /// random bytes.
    #[arg(long, env = "ROSTER_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Longest one delivery (SMTP or webhook) may take.
    #[arg(long, env = "ROSTER_DELIVERY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,
}

impl DeliveryArgs {
    /// Builds the configured deliveries, refusing incomplete settings.
    pub fn deliveries(&self) -> Result<Deliveries, String> {
        let webhook = if self.email_delivery == EmailDelivery::Webhook
            || self.sms_delivery == SmsDelivery::Webhook
        {
            let url = self
                .webhook_url
                .as_deref()
                .ok_or("webhook delivery needs --webhook-url")?;
            let secret = self
                .webhook_secret
                .as_deref()
                .ok_or("webhook delivery needs --webhook-secret")?;
            let secret = WebhookSecret::parse(secret).map_err(|e| e.to_string())?;
            let webhook = WebhookDelivery::new(url, secret, self.delivery_timeout)
                .map_err(|e| e.to_string())?;
            Some(Arc::new(webhook) as Arc<dyn Deliver>)
        } else {
            None
        };
        let email = match self.email_delivery {
            EmailDelivery::None => None,
            EmailDelivery::Webhook => webhook.clone(),
            EmailDelivery::Smtp => Some(Arc::new(self.smtp()?) as Arc<dyn Deliver>),
        };
        let sms = match self.sms_delivery {
            SmsDelivery::None => None,
            SmsDelivery::Webhook => webhook,
        };
        Ok(Deliveries { email, sms })
    }

    fn smtp(&self) -> Result<SmtpDelivery, String> {
        let host = self
            .smtp_host
            .clone()
            .ok_or("SMTP delivery needs --smtp-host")?;
        let from = self
            .smtp_from
            .clone()
            .ok_or("SMTP delivery needs --smtp-from")?;
        let credentials = match (&self.smtp_username, &self.smtp_password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            _ => return Err("--smtp-username and --smtp-password go together".to_owned()),
        };
        let templates = match &self.email_templates {
            Some(dir) => TemplateSet::load(dir).map_err(|e| e.to_string())?,
            None => TemplateSet::default(),
        };
        SmtpDelivery::new(SmtpConfig {
            host,
            port: self.smtp_port.unwrap_or(self.smtp_tls.default_port()),
            tls: self.smtp_tls,
            credentials,
            from,
            templates,
            timeout: self.delivery_timeout,
        })
        .map_err(|e| e.to_string())
    }
}

impl ServeArgs {
    /// Every configured secret key, from flags, variable and file.
    pub fn all_secret_keys(&self) -> std::io::Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .secret_keys
            .iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if let Some(path) = &self.secret_keys_file {
            let text = std::fs::read_to_string(path)?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        Ok(keys)
    }
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (use e.g. 30s or 500ms)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        _ => Err(format!(
            "unknown duration unit in {text:?}: use ms, s, m, h or d"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn delivery(args: &[&str]) -> Result<Deliveries, String> {
        let cli = Cli::try_parse_from([&["roster", "serve"], args].concat()).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        serve.delivery.deliveries()
    }

    // The SMTP pool starts a task, so this needs a runtime.
    #[tokio::test]
    async fn delivery_settings_are_checked_at_start() {
        let none = delivery(&[]).unwrap();
        assert!(none.email.is_none() && none.sms.is_none());
        let smtp = ["--email-delivery", "smtp", "--smtp-host", "localhost"];
        assert!(delivery(&smtp).unwrap_err().contains("--smtp-from"));
        let with_from = [&smtp[..], &["--smtp-from", "no-reply@example.com"]].concat();
        let built = delivery(&with_from).unwrap();
        assert!(built.email.is_some() && built.sms.is_none());
        let half_login = [&with_from[..], &["--smtp-username", "u"]].concat();
        assert!(delivery(&half_login).unwrap_err().contains("go together"));
        let webhook = [
            "--sms-delivery",
            "webhook",
            "--webhook-url",
            "https://hooks.example.com/x",
        ];
        assert!(delivery(&webhook).unwrap_err().contains("--webhook-secret"));
        let signed = [
            &webhook[..],
            &["--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        ]
        .concat();
        let built = delivery(&signed).unwrap();
        assert!(built.email.is_none() && built.sms.is_some());
        let ftp = [
            "--email-delivery",
            "webhook",
            "--webhook-url",
            "ftp://example.com",
            "--webhook-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ];
        assert!(delivery(&ftp).unwrap_err().contains("http"));
    }

    #[test]
    fn database_connections_are_bounded() {
        let max = |args: &[&str]| {
            Cli::try_parse_from([&["roster", "serve"], args].concat()).map(|cli| {
                let Command::Serve(serve) = cli.command else {
                    panic!("not serve")
                };
                serve.database.database_max_connections
            })
        };
        assert_eq!(max(&[]).unwrap(), 16);
        assert_eq!(max(&["--database-max-connections", "4"]).unwrap(), 4);
        // One for writes and one for reads at the least.
        assert!(max(&["--database-max-connections", "1"]).is_err());
        assert!(max(&["--database-max-connections", "0"]).is_err());
        assert!(max(&["--database-max-connections", "many"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_mins(2));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_hours(168));
        assert!(parse_duration("soon").is_err());
    }
}
