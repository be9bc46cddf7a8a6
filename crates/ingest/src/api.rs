//! The HTTP API: routes, the authenticated-body extractor, and the JSON shapes of answers and errors.
//!
//! Every `/v1` route is authenticated ([`crate::auth`]) and rate-limited per
//! client; every failure is answered with its status and
//! `{"error": {"code": "...", "message": "..."}}`, plus `Retry-After` when a
//! retry can help. The routes are listed in `openapi.yaml` beside this crate,
//! and a test keeps the two in step.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sms_core::events::{now_millis, RequestSource};
use sms_core::telemetry::mask_phone;

use crate::auth::Authenticator;
use crate::error::IngestError;
use crate::publish::Publisher;
use crate::status::{StatusBoard, StatusView};
use crate::submit::{message_id, Instruction, Intake, Outcome};
use crate::subscriptions::{ChangeBody, KindsBody, RegisterBody, SubscriptionView, Subscriptions};
use crate::tail::CaughtUp;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub intake: Arc<Intake>,
    pub auth: Arc<Authenticator>,
    pub statuses: StatusBoard,
    pub subscriptions: Subscriptions,
    pub publisher: Publisher,
    pub metrics: Option<PrometheusHandle>,
    pub max_batch: usize,
    pub max_body_bytes: usize,
    pub ready: Vec<CaughtUp>,
}

/// The API's routes. The same list is in `openapi.yaml`.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/messages"),
    ("post", "/v1/messages/batch"),
    ("get", "/v1/messages/{message_id}"),
    ("get", "/v1/requests/{request_id}"),
    ("post", "/v1/subscriptions"),
    ("get", "/v1/subscriptions/{phone}"),
    ("post", "/v1/subscriptions/{phone}/subscribe"),
    ("post", "/v1/subscriptions/{phone}/cancel"),
    ("post", "/v1/subscriptions/{phone}/change"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/messages", post(submit_one))
        .route("/v1/messages/batch", post(submit_batch))
        .route("/v1/messages/{message_id}", get(status_by_message))
        .route("/v1/requests/{request_id}", get(status_by_request))
        .route("/v1/subscriptions", post(register))
        .route("/v1/subscriptions/{phone}", get(query_subscription))
        .route("/v1/subscriptions/{phone}/subscribe", post(subscribe))
        .route("/v1/subscriptions/{phone}/cancel", post(cancel))
        .route("/v1/subscriptions/{phone}/change", post(change))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

/// The JSON error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "error": ErrorBody { code: self.code().into(), message: self.to_string() }
        });
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// An authenticated request's client and body (read within the size limit).
pub struct Signed {
    pub client_id: String,
    pub body: Bytes,
}

impl FromRequest<AppState> for Signed {
    type Rejection = IngestError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, IngestError> {
        let (parts, body) = request.into_parts();
        let limit = state.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(IngestError::PayloadTooLarge { limit });
        }
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| IngestError::PayloadTooLarge { limit })?;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| parts.uri.path());
        let client_id =
            state
                .auth
                .authenticate(&parts.method, path, &parts.headers, &body, now_millis())?;
        Ok(Self { client_id, body })
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, IngestError> {
    if body.is_empty() {
        return Err(IngestError::MalformedJson("body is empty".into()));
    }
    serde_json::from_slice(body).map_err(|e| IngestError::from_json(&e))
}

/// The answer to one accepted instruction.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub message_id: String,
    pub request_id: String,
    /// True when this request id was accepted before and nothing new was written.
    pub duplicate: bool,
}

async fn submit_one(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Response, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let instruction: Instruction = parse(&signed.body)?;
    let request_id = instruction.request_id.trim().to_string();
    let outcome = state
        .intake
        .submit(&signed.client_id, RequestSource::Http, instruction)
        .await?;
    let status = match outcome {
        Outcome::Accepted(_) => StatusCode::ACCEPTED,
        Outcome::Duplicate(_) => StatusCode::OK,
    };
    let body = Accepted {
        message_id: outcome.message_id().to_string(),
        request_id,
        duplicate: matches!(outcome, Outcome::Duplicate(_)),
    };
    Ok((status, Json(body)).into_response())
}

/// One item of a batch answer: a message id, or an error.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchItem {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The answer to a batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub accepted: usize,
    pub refused: usize,
    pub results: Vec<BatchItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    messages: Vec<serde_json::Value>,
}

async fn submit_batch(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Response, IngestError> {
    let batch: BatchBody = parse(&signed.body)?;
    let count = batch.messages.len();
    if count == 0 {
        return Err(IngestError::InvalidRequest(
            "messages must not be empty".into(),
        ));
    }
    if count > state.max_batch {
        return Err(IngestError::BatchTooLarge {
            count,
            max: state.max_batch,
        });
    }
    state.auth.admit(&signed.client_id, count)?;

    let mut request_ids = Vec::with_capacity(count);
    let items: Vec<Result<Instruction, IngestError>> = batch
        .messages
        .into_iter()
        .map(|value| {
            request_ids.push(
                value
                    .get("request_id")
                    .and_then(|v| v.as_str())
                    .map(|s| s.trim().to_string()),
            );
            serde_json::from_value(value).map_err(|e| IngestError::from_json(&e))
        })
        .collect();
    let results = state
        .intake
        .submit_many(&signed.client_id, RequestSource::Http, items)
        .await;

    let mut accepted = 0;
    let mut unavailable = 0;
    let mut answer = Vec::with_capacity(count);
    for (index, (result, request_id)) in results.into_iter().zip(request_ids).enumerate() {
        let item = match result {
            Ok(outcome) => {
                accepted += 1;
                BatchItem {
                    index,
                    request_id,
                    message_id: Some(outcome.message_id().to_string()),
                    duplicate: matches!(outcome, Outcome::Duplicate(_)),
                    error: None,
                }
            }
            Err(e) => {
                if e.status() == StatusCode::SERVICE_UNAVAILABLE {
                    unavailable += 1;
                }
                BatchItem {
                    index,
                    request_id,
                    message_id: None,
                    duplicate: false,
                    error: Some(ErrorBody {
                        code: e.code().into(),
                        message: e.to_string(),
                    }),
                }
            }
        };
        answer.push(item);
    }
    // Nothing written and Kafka the reason: the whole call is retryable.
    if accepted == 0 && unavailable > 0 {
        return Err(IngestError::Unavailable { retry_after_s: 2 });
    }
    let body = BatchAnswer {
        accepted,
        refused: count - accepted,
        results: answer,
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

async fn status_by_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Json<StatusView>, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| IngestError::InvalidRequest("message_id is not a UUID".into()))?;
    let accepted = state.intake.accepted_recently(&id);
    Ok(Json(state.statuses.view(&id.to_string(), accepted)))
}

async fn status_by_request(
    State(state): State<AppState>,
    Path(request_id): Path<String>,
    signed: Signed,
) -> Result<Json<StatusView>, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let id = message_id(&signed.client_id, request_id.trim());
    let accepted = state.intake.accepted_recently(&id);
    Ok(Json(state.statuses.view(&id.to_string(), accepted)))
}

async fn register(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<(StatusCode, Json<SubscriptionView>), IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let body: RegisterBody = parse(&signed.body)?;
    let view = state
        .subscriptions
        .register(&signed.client_id, &body.phone, body.kinds.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn query_subscription(
    State(state): State<AppState>,
    Path(phone): Path<String>,
    signed: Signed,
) -> Result<Json<SubscriptionView>, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    Ok(Json(state.subscriptions.query(&phone)?))
}

async fn subscribe(
    State(state): State<AppState>,
    Path(phone): Path<String>,
    signed: Signed,
) -> Result<Json<SubscriptionView>, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let body: KindsBody = parse(&signed.body)?;
    let kinds = body
        .kinds
        .ok_or_else(|| IngestError::MissingField("missing field `kinds`".into()))?;
    let view = state
        .subscriptions
        .subscribe(&signed.client_id, &phone, &kinds)
        .await?;
    Ok(Json(view))
}

async fn cancel(
    State(state): State<AppState>,
    Path(phone): Path<String>,
    signed: Signed,
) -> Result<Json<SubscriptionView>, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let body: KindsBody = if signed.body.is_empty() {
        KindsBody::default()
    } else {
        parse(&signed.body)?
    };
    let view = state
        .subscriptions
        .cancel(&signed.client_id, &phone, body.kinds.as_deref())
        .await?;
    Ok(Json(view))
}

async fn change(
    State(state): State<AppState>,
    Path(phone): Path<String>,
    signed: Signed,
) -> Result<Json<SubscriptionView>, IngestError> {
    state.auth.admit(&signed.client_id, 1)?;
    let body: ChangeBody = parse(&signed.body)?;
    tracing::info!(phone = %mask_phone(&phone), "number change requested");
    let view = state
        .subscriptions
        .change(&signed.client_id, &phone, &body.new_phone)
        .await?;
    Ok(Json(view))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let kafka = state.publisher.reachable(Duration::from_secs(2)).await;
    let loaded = state.ready.iter().all(CaughtUp::get);
    let status = if kafka && loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "kafka": kafka, "state_loaded": loaded });
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found() -> IngestError {
    IngestError::NotFound("no such route".into())
}

async fn method_not_allowed() -> IngestError {
    IngestError::MethodNotAllowed
}

async fn count_requests(request: Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("ingest_http_requests_total", "status" => status).increment(1);
    metrics::histogram!("ingest_http_request_seconds").record(started.elapsed().as_secs_f64());
    response
}
