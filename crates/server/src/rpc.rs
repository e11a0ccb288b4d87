//! The layer every gRPC call passes first: its span, its metrics, and the
//! refusals that keep an overloaded or database-less server answering
//! quickly instead of queueing calls it cannot serve.
//!
//! A call is refused with UNAVAILABLE before it runs when
//! - the database is known to be down (`STORAGE_UNAVAILABLE`), or
//! - as many calls are in flight as the server allows
//!   (`SERVER_OVERLOADED`, with a RetryInfo delay).
//!
//! Health, reflection and JWKS calls are never refused: they need no
//! database, and probes must keep working under load.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use tracing::Instrument as _;

use crate::error::ERROR_DOMAIN;
use crate::health::Readiness;
use crate::metrics::{CallLabels, MethodLabels, Metrics, ShedLabels};

/// Paths of calls that are never refused.
const ALWAYS_SERVED: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/roster.v1.JwksService/",
];

/// The layer; see the module documentation.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// One permit per call allowed in flight.
    slots: Arc<Semaphore>,
    /// Services whose names label metrics; others are `unknown`, and so
    /// are methods that answer UNIMPLEMENTED, so junk paths cannot grow
    /// the label set.
    services: Vec<&'static str>,
}

impl RpcLayer {
    pub fn new(
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        max_in_flight: usize,
        services: Vec<&'static str>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                readiness,
                slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
                services,
            }),
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around the routes.
#[derive(Clone, Debug)]
pub struct Rpc<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The canonical name of a gRPC status code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `grpc-status` in headers or trailers, if any.
fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

/// Records a call when its response ends (or is dropped unfinished: the
/// client went away, CANCELLED).
#[derive(Debug)]
struct Finish {
    shared: Arc<Shared>,
    service: String,
    method: String,
    started: Instant,
    span: tracing::Span,
    code: Option<Code>,
    /// The call's place among those in flight, released with it.
    slot: Option<OwnedSemaphorePermit>,
}

impl Finish {
    fn new(shared: &Arc<Shared>, service: &str, method: &str, span: tracing::Span) -> Self {
        shared.metrics.in_flight.inc();
        Self {
            shared: shared.clone(),
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
            span,
            code: None,
            slot: None,
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        // A method the service does not have: one label for all of them,
        // so junk paths cannot grow the label set.
        if code == Code::Unimplemented {
            "unknown".clone_into(&mut self.method);
        }
        let metrics = &self.shared.metrics;
        metrics.in_flight.dec();
        metrics
            .calls
            .get_or_create(&CallLabels {
                service: self.service.clone(),
                method: self.method.clone(),
                code: code_name(code),
            })
            .inc();
        metrics
            .latency
            .get_or_create(&MethodLabels {
                service: std::mem::take(&mut self.service),
                method: std::mem::take(&mut self.method),
            })
            .observe(self.started.elapsed().as_secs_f64());
        self.span.record("rpc.grpc.status_code", code as i32);
        if code != Code::Ok {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

/// A response body that reports its call's status when it ends.
struct Observed {
    inner: Body,
    finish: Option<Finish>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                    && let Some(finish) = self.finish.as_mut()
                {
                    finish.code = Some(code);
                }
            }
            Poll::Ready(None) => {
                // Ended: record now rather than when hyper drops the body.
                self.finish.take();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A refusal before the call runs.
fn refusal(code: Code, reason: &str, message: &str, retry_after: Option<Duration>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    if retry_after.is_some() {
        details.set_retry_info(retry_after);
    }
    Status::with_error_details(code, message, details)
}

impl<S, B> tower::Service<http::Request<B>> for Rpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .filter(|(s, _)| self.shared.services.contains(s))
            .unwrap_or(("unknown", "unknown"));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, request.headers());
        let mut finish = Finish::new(&self.shared, service, method, span.clone());

        let always = ALWAYS_SERVED.iter().any(|p| path.starts_with(p));
        let refused = if always {
            None
        } else if !self.shared.readiness.database_up() {
            Some((
                "database_down",
                refusal(
                    Code::Unavailable,
                    "STORAGE_UNAVAILABLE",
                    "the database is unavailable; retry later",
                    None,
                ),
            ))
        } else {
            match self.shared.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    finish.slot = Some(slot);
                    None
                }
                Err(_) => Some((
                    "overloaded",
                    refusal(
                        Code::Unavailable,
                        "SERVER_OVERLOADED",
                        "the server is at its limit of calls in flight; retry shortly",
                        Some(Duration::from_millis(100)),
                    ),
                )),
            }
        };
        if let Some((reason, status)) = refused {
            self.shared
                .metrics
                .shed
                .get_or_create(&ShedLabels { reason })
                .inc();
            finish.code = Some(status.code());
            return Box::pin(async move { Ok(status.into_http()) });
        }

        // The clone that was made ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                let response = inner.call(request).await?;
                let (parts, body) = response.into_parts();
                // A call that fails before its first message answers with
                // its status in the headers.
                if let Some(code) = grpc_status(&parts.headers) {
                    finish.code = Some(code);
                }
                let body = Body::new(Observed {
                    inner: body,
                    finish: Some(finish),
                });
                Ok(http::Response::from_parts(parts, body))
            }
            .instrument(span),
        )
    }
}
