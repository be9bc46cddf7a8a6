//! The control endpoint: counts, faults, dropped connections and uplink messages over HTTP/JSON.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tracing::warn;

use crate::counts::Counts;
use crate::faults::Faults;
use crate::outbound::{queue_mo, MoRequest};
use crate::{SimError, State};

type Shared = AxumState<Arc<State>>;

/// Serves the control endpoint until the simulator stops.
pub(crate) async fn serve(state: Arc<State>, listener: TcpListener) {
    let mut stop = state.stop.clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/counts", get(counts))
        .route("/reset", post(reset))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/drop", post(drop_connections))
        .route("/mo", post(mo))
        .with_state(state);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(error = %e, "http endpoint failed");
    }
}

async fn counts(AxumState(state): Shared) -> Json<Counts> {
    Json(state.tally().snapshot())
}

async fn reset(AxumState(state): Shared) -> StatusCode {
    state.tally().reset();
    StatusCode::NO_CONTENT
}

async fn get_faults(AxumState(state): Shared) -> Json<Faults> {
    Json(state.faults())
}

async fn put_faults(AxumState(state): Shared, Json(faults): Json<Faults>) -> Json<Faults> {
    *state.faults.write().unwrap_or_else(|p| p.into_inner()) = faults.clone();
    Json(faults)
}

async fn drop_connections(AxumState(state): Shared) -> StatusCode {
    state.drop_all.send_modify(|g| *g += 1);
    StatusCode::NO_CONTENT
}

async fn mo(AxumState(state): Shared, Json(request): Json<MoRequest>) -> impl IntoResponse {
    match queue_mo(&state, request).await {
        Ok(sequences) => {
            let body: Vec<String> = sequences.iter().map(ToString::to_string).collect();
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "sequences": body })),
            )
                .into_response()
        }
        Err(e @ SimError::NoSpListener) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
