//! Logs and traces.
//!
//! Logs go to stderr, human-readable (coloured on a terminal) or JSON
//! (`--log-format json`), filtered by `ROSTER_LOG`. Traces are exported
//! with OTLP over gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by the
//! standard variables (`OTEL_SERVICE_NAME`, default `roster`;
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`;
//! `OTEL_RESOURCE_ATTRIBUTES`; `OTEL_SDK_DISABLED`), and off otherwise.
//! Each call's span continues the caller's W3C `traceparent`, and its
//! `trace_id` and `span_id` appear in JSON logs of that call.

use std::io::IsTerminal as _;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::LogFormat;

/// The installed tracing pipeline; [`Telemetry::shutdown`] flushes spans
/// not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the standard variables ask for trace export.
fn tracing_enabled() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v == "none");
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// What logs show: every event, and every span but the store's
/// (`store.*`, which carry no fields and time the database for traces).
/// A span a log shows is formatted when it opens, whether or not anything
/// is logged in it: without the store's, a call formats one. Decided once
/// per callsite, so that it costs nothing per span or event.
struct Logged;

impl Logged {
    fn shows(meta: &tracing::Metadata<'_>) -> bool {
        !(meta.is_span() && meta.name().starts_with("store."))
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for Logged {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        Self::shows(meta)
    }

    /// No bound of its own: without one, the filters' bound together
    /// would be none, and every `trace!` in the libraries below would be
    /// looked at.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if Self::shows(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}

/// Installs logging and, when configured, trace export. Call once, inside
/// the tokio runtime.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_env("ROSTER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .and(Logged);
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        // Every enclosing span's fields (the call's trace_id and span_id
        // among them) ride along in `spans`.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let provider = if tracing_enabled() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
            opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        );
        if !env_set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("roster");
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    } else {
        None
    };
    // Spans at info and above, from Roster's crates only, whatever the log
    // filter says.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("roster"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("roster") && *meta.level() <= tracing::Level::INFO
            }))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()?;
    if provider.is_some() {
        tracing::info!("exporting traces with OTLP");
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

/// Request headers, as the propagator reads them.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` continue the trace a `traceparent` header names, and
/// records the span's trace and span ids on it for the logs. Without trace
/// export this does nothing.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if span.set_parent(parent).is_err() {
        return;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}
