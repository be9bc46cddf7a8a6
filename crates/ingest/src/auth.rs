//! Who is calling: bearer tokens (stored as SHA-256 hashes) or HMAC-SHA256 signatures with timestamp and nonce; per-client rate limits.
//!
//! A signed request carries four headers:
//!
//! - `X-Client-Id`: the client's id;
//! - `X-Timestamp`: Unix milliseconds when the request was signed;
//! - `X-Nonce`: 1 to 128 printable ASCII characters, never reused;
//! - `X-Signature`: lower-case hex of HMAC-SHA256 with the client's secret
//!   over `METHOD \n PATH \n TIMESTAMP \n NONCE \n BODY`, where PATH is the
//!   request's path with its query string, if any.
//!
//! A timestamp further than the tolerance from the server's clock is
//! refused, and so is a nonce seen before (nonces are remembered for twice
//! the tolerance, up to a bounded count; the oldest are forgotten first). A
//! nonce is recorded only once the signature checks, so nobody can burn
//! another client's nonces. A bearer request carries `Authorization: Bearer
//! <token>`; its SHA-256 must be listed for a client.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use axum::http::{HeaderMap, Method};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sms_core::events::Millis;
use sms_core::Secret;

use crate::config::{AuthSettings, ClientSettings};
use crate::error::IngestError;
use crate::recent::RecentMap;

type HmacSha256 = Hmac<Sha256>;

/// The header names of a signed request.
pub const CLIENT_HEADER: &str = "x-client-id";
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
pub const NONCE_HEADER: &str = "x-nonce";
pub const SIGNATURE_HEADER: &str = "x-signature";

const MAX_NONCE_LEN: usize = 128;

/// The bytes a client signs.
pub fn signing_input(
    method: &str,
    path: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut input = Vec::with_capacity(method.len() + path.len() + 64 + body.len());
    for part in [method, path, timestamp, nonce] {
        input.extend_from_slice(part.as_bytes());
        input.push(b'\n');
    }
    input.extend_from_slice(body);
    input
}

/// The hex signature of a request, as a client computes it.
pub fn sign(
    secret: &[u8],
    method: &str,
    path: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    // HMAC takes keys of any length, so the key is never refused.
    match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(&signing_input(method, path, timestamp, nonce, body));
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The hex SHA-256 of a bearer token, as stored in the configuration.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Client {
    /// The HMAC key; printed as `***` if the struct is ever logged.
    secret: Option<Secret>,
    limiter: DefaultDirectRateLimiter,
}

/// Checks credentials and rate limits.
pub struct Authenticator {
    clients: HashMap<String, Client>,
    /// SHA-256 of a bearer token → client id.
    tokens: HashMap<[u8; 32], String>,
    nonces: Mutex<RecentMap<(String, String), ()>>,
    tolerance_ms: i64,
}

impl Authenticator {
    /// Reads each client's secret from its environment variable or file.
    pub fn new(clients: &[ClientSettings], settings: &AuthSettings) -> Result<Self, IngestError> {
        let mut by_id = HashMap::new();
        let mut tokens = HashMap::new();
        for (n, client) in clients.iter().enumerate() {
            let secret = read_secret(n, client)?;
            for hash in &client.bearer_sha256 {
                let mut key = [0u8; 32];
                hex::decode_to_slice(hash, &mut key).map_err(|_| IngestError::Config {
                    key: format!("clients[{n}].bearer_sha256"),
                    message: "must be 64 hex digits".into(),
                })?;
                tokens.insert(key, client.id.clone());
            }
            let rate = NonZeroU32::new(client.rate_per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(client.burst).unwrap_or(NonZeroU32::MIN);
            let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
            by_id.insert(client.id.clone(), Client { secret, limiter });
        }
        let tolerance_ms = i64::try_from(settings.timestamp_tolerance_ms).unwrap_or(i64::MAX);
        Ok(Self {
            clients: by_id,
            tokens,
            nonces: Mutex::new(RecentMap::new(
                settings.nonce_cache,
                settings.timestamp_tolerance_ms.saturating_mul(2),
            )),
            tolerance_ms,
        })
    }

    /// Whether `client_id` is a configured client.
    pub fn knows(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id)
    }

    /// The client a request comes from, or why it is refused.
    pub fn authenticate(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: Millis,
    ) -> Result<String, IngestError> {
        if let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) {
            let token = authorization
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or(IngestError::Unauthenticated)?;
            let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
            return self
                .tokens
                .get(&hash)
                .cloned()
                .ok_or(IngestError::UnknownClient);
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(client_id), Some(signature)) = (header(CLIENT_HEADER), header(SIGNATURE_HEADER))
        else {
            return Err(IngestError::Unauthenticated);
        };
        let client = self
            .clients
            .get(client_id)
            .ok_or(IngestError::UnknownClient)?;
        let secret = client
            .secret
            .as_ref()
            .map(|s| s.expose().as_bytes())
            .ok_or(IngestError::UnknownClient)?;

        let timestamp = header(TIMESTAMP_HEADER).ok_or(IngestError::StaleTimestamp)?;
        let signed_at: Millis = timestamp.parse().map_err(|_| IngestError::StaleTimestamp)?;
        if (now - signed_at).abs() > self.tolerance_ms {
            return Err(IngestError::StaleTimestamp);
        }
        let nonce = header(NONCE_HEADER).unwrap_or_default();
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(IngestError::InvalidRequest(format!(
                "{NONCE_HEADER} must hold 1 to {MAX_NONCE_LEN} characters"
            )));
        }

        let expected = hex::decode(signature).map_err(|_| IngestError::BadSignature)?;
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(secret).map_err(|_| IngestError::BadSignature)?;
        mac.update(&signing_input(
            method.as_str(),
            path,
            timestamp,
            nonce,
            body,
        ));
        mac.verify_slice(&expected)
            .map_err(|_| IngestError::BadSignature)?;

        let key = (client_id.to_string(), nonce.to_string());
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        if nonces.get(&key, now).is_some() {
            return Err(IngestError::ReplayedNonce);
        }
        nonces.insert(key, (), now);
        Ok(client_id.to_string())
    }

    /// Takes `cost` units (messages, or one per other call) from the
    /// client's rate limit, or says when to come back.
    pub fn admit(&self, client_id: &str, cost: usize) -> Result<(), IngestError> {
        let client = self
            .clients
            .get(client_id)
            .ok_or(IngestError::UnknownClient)?;
        let cost = NonZeroU32::new(u32::try_from(cost.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        match client.limiter.check_n(cost) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(IngestError::RateLimited {
                    retry_after_s: wait.as_secs() + 1,
                })
            }
            // More than the burst can ever hold: a smaller batch is needed.
            Err(_) => Err(IngestError::RateLimited { retry_after_s: 1 }),
        }
    }
}

fn read_secret(n: usize, client: &ClientSettings) -> Result<Option<Secret>, IngestError> {
    let to_config = |e: sms_core::CoreError| match e {
        sms_core::CoreError::Config { key, message } => IngestError::Config { key, message },
        other => IngestError::Config {
            key: format!("clients[{n}]"),
            message: other.to_string(),
        },
    };
    let secret = if let Some(var) = &client.secret_env {
        Some(Secret::from_env(&format!("clients[{n}].secret_env"), var).map_err(to_config)?)
    } else if let Some(path) = &client.secret_file {
        Some(Secret::from_file(&format!("clients[{n}].secret_file"), path).map_err(to_config)?)
    } else {
        None
    };
    match secret.map(|s| Secret::new(s.expose().trim())) {
        Some(s) if s.expose().len() < 16 => Err(IngestError::Config {
            key: format!("clients[{n}]"),
            message: format!(
                "the HMAC secret has {} characters; expected at least 16",
                s.expose().chars().count()
            ),
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "a-secret-of-some-length";

    fn authenticator() -> Authenticator {
        // One file per call: tests run side by side and must not see a
        // half-written file.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = std::env::temp_dir().join(format!("ingest-auth-{}-{n}", std::process::id()));
        std::fs::write(&file, SECRET).unwrap();
        let clients = vec![ClientSettings {
            id: "platform".into(),
            secret_env: None,
            secret_file: Some(file),
            bearer_sha256: vec![token_hash("token-1")],
            rate_per_second: 10,
            burst: 20,
        }];
        Authenticator::new(&clients, &AuthSettings::default()).unwrap()
    }

    fn signed(timestamp: Millis, nonce: &str, body: &[u8], secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let ts = timestamp.to_string();
        let signature = sign(secret.as_bytes(), "POST", "/v1/messages", &ts, nonce, body);
        headers.insert(CLIENT_HEADER, HeaderValue::from_static("platform"));
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from_str(&ts).unwrap());
        headers.insert(NONCE_HEADER, HeaderValue::from_str(nonce).unwrap());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&signature).unwrap());
        headers
    }

    #[test]
    fn signatures_timestamps_and_nonces() {
        let auth = authenticator();
        let now = 1_700_000_000_000;
        let body = b"{}";
        let ok = signed(now, "n1", body, SECRET);
        let check = |h: &HeaderMap, b: &[u8], at| {
            auth.authenticate(&Method::POST, "/v1/messages", h, b, at)
        };
        assert_eq!(check(&ok, body, now).unwrap(), "platform");
        assert_eq!(check(&ok, body, now).unwrap_err().code(), "replayed_nonce");
        let tampered = signed(now, "n2", body, SECRET);
        assert_eq!(
            check(&tampered, b"{ }", now).unwrap_err().code(),
            "bad_signature"
        );
        let wrong_key = signed(now, "n3", body, "another-secret-entirely");
        assert_eq!(
            check(&wrong_key, body, now).unwrap_err().code(),
            "bad_signature"
        );
        let stale = signed(now - 300_001, "n4", body, SECRET);
        assert_eq!(
            check(&stale, body, now).unwrap_err().code(),
            "stale_timestamp"
        );
        let future = signed(now + 300_001, "n5", body, SECRET);
        assert_eq!(
            check(&future, body, now).unwrap_err().code(),
            "stale_timestamp"
        );
        // The tampered request did not burn its nonce.
        let retry = signed(now, "n2", body, SECRET);
        assert!(check(&retry, body, now).is_ok());
        assert_eq!(
            check(&HeaderMap::new(), body, now).unwrap_err().code(),
            "unauthenticated"
        );
    }

    #[test]
    fn bearer_tokens_match_by_hash() {
        let auth = authenticator();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer token-1"));
        assert_eq!(
            auth.authenticate(&Method::GET, "/", &headers, b"", 0)
                .unwrap(),
            "platform"
        );
        headers.insert("authorization", HeaderValue::from_static("Bearer token-2"));
        assert_eq!(
            auth.authenticate(&Method::GET, "/", &headers, b"", 0)
                .unwrap_err()
                .code(),
            "unknown_client"
        );
    }

    #[test]
    fn rate_limit_refuses_beyond_the_burst() {
        let auth = authenticator();
        assert!(auth.admit("platform", 20).is_ok());
        let err = auth.admit("platform", 5).unwrap_err();
        assert_eq!(err.code(), "rate_limited");
        assert!(err.retry_after_s().is_some());
    }
}
