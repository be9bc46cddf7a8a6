//! The send instruction as the platform writes it, its validation into an `SmsRequest`, the message id, and the retry memory.
//!
//! Both entrances (HTTP and the raw topic) go through [`Intake`], so they
//! accept and refuse exactly the same things and write the same records.
//!
//! The message id is the UUID v5 of the client id and the request id
//! ([`message_id`]), so the same request always gets the same id. A bounded
//! memory of recent request ids ([`Limits::recent_requests`] entries, at most
//! [`Limits::recent_window_ms`] old) answers a retry with the id already
//! given and writes nothing; past that window, or after a restart, a retry is
//! written again with the same message id and the dispatcher's dedupe on
//! message id drops it.
//!
//! [`Limits::recent_requests`]: crate::config::Limits::recent_requests
//! [`Limits::recent_window_ms`]: crate::config::Limits::recent_window_ms

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sms_core::avro::AvroCodec;
use sms_core::events::{now_millis, MessageKind, Millis, RequestSource, SmsRequest};
use sms_core::kafka::Topics;
use sms_core::telemetry::mask_phone;
use sms_core::validate::{self, Validator};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::IngestError;
use crate::publish::{Outgoing, Publisher};
use crate::recent::RecentMap;

/// The namespace of message ids: `message_id = UUIDv5(NAMESPACE, client_id + "\n" + request_id)`.
pub const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_5f0e_2b7a_4c8e_9a51_1212_3110_0000);

/// The longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The message id of a client's request.
pub fn message_id(client_id: &str, request_id: &str) -> Uuid {
    let name = format!("{client_id}\n{request_id}");
    Uuid::new_v5(&MESSAGE_ID_NAMESPACE, name.as_bytes())
}

/// One send instruction, as the platform sends it (JSON).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Instruction {
    /// The platform's id for this request; the same id is the same message.
    pub request_id: String,
    /// The recipient: 11 digits, optionally after `+86`, `86` or `0086`.
    pub phone: String,
    /// `VERIFICATION_CODE`, `NOTICE` or `REMINDER` (any case).
    pub kind: String,
    /// The text; give this or `template_id`.
    #[serde(default)]
    pub text: Option<String>,
    /// A configured template; give this or `text`.
    #[serde(default)]
    pub template_id: Option<String>,
    /// Values for the template's `{name}` parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Digits appended to the access number 121231100.
    #[serde(default)]
    pub sp_extension: Option<String>,
    /// Unix milliseconds after which the message must not be sent.
    #[serde(default)]
    pub expires_at: Option<Millis>,
    /// Unix milliseconds before which the message must not be sent.
    #[serde(default)]
    pub scheduled_at: Option<Millis>,
}

/// What became of an accepted instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written now; Kafka acknowledged it.
    Accepted(Uuid),
    /// Written before (a retry): nothing new was written.
    Duplicate(Uuid),
}

impl Outcome {
    pub fn message_id(self) -> Uuid {
        match self {
            Self::Accepted(id) | Self::Duplicate(id) => id,
        }
    }
}

/// A validated instruction, ready to write.
struct Prepared {
    request: SmsRequest,
    id: Uuid,
    fingerprint: u64,
    outgoing: Outgoing,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Writing,
    Written,
}

#[derive(Debug, Clone, Copy)]
struct Remembered {
    fingerprint: u64,
    slot: Slot,
}

/// Validates instructions, gives them their ids and writes them.
pub struct Intake {
    validator: Validator,
    templates: BTreeMap<String, String>,
    topics: Topics,
    codec: AvroCodec,
    publisher: Publisher,
    recent: Mutex<RecentMap<Uuid, Remembered>>,
}

impl Intake {
    pub fn new(
        validator: Validator,
        templates: BTreeMap<String, String>,
        topics: Topics,
        publisher: Publisher,
        recent_requests: usize,
        recent_window_ms: u64,
    ) -> Self {
        Self {
            validator,
            templates,
            topics,
            codec: AvroCodec::single_object(),
            publisher,
            recent: Mutex::new(RecentMap::new(recent_requests, recent_window_ms)),
        }
    }

    /// The validator in force, for the subscription functions.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The writer, for the other records ingest writes.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Whether this instance accepted `id` within the retry window.
    pub fn accepted_recently(&self, id: &Uuid) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        matches!(
            recent.get(id, now_millis()),
            Some(Remembered {
                slot: Slot::Written,
                ..
            })
        )
    }

    /// Validates, writes and answers one instruction.
    pub async fn submit(
        &self,
        client_id: &str,
        source: RequestSource,
        instruction: Instruction,
    ) -> Result<Outcome, IngestError> {
        let mut results = self
            .submit_many(client_id, source, vec![Ok(instruction)])
            .await;
        results
            .pop()
            .unwrap_or(Err(IngestError::InvalidRequest("nothing to submit".into())))
    }

    /// Validates and writes many instructions together; one result per
    /// instruction, in order. Items already refused come in as `Err` and
    /// go out unchanged.
    pub async fn submit_many(
        &self,
        client_id: &str,
        source: RequestSource,
        items: Vec<Result<Instruction, IngestError>>,
    ) -> Vec<Result<Outcome, IngestError>> {
        let now = now_millis();
        let mut results: Vec<Result<Outcome, IngestError>> = Vec::with_capacity(items.len());
        let mut to_write: Vec<(usize, Prepared)> = Vec::new();
        let mut in_batch = HashSet::new();

        for (index, item) in items.into_iter().enumerate() {
            let prepared = item.and_then(|i| self.prepare(client_id, source, i, now));
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            if !in_batch.insert(prepared.id) {
                results.push(Err(IngestError::DuplicateInBatch));
                continue;
            }
            match self.claim(prepared.id, prepared.fingerprint, now) {
                Ok(None) => {
                    // A placeholder, replaced once the write is acknowledged.
                    results.push(Ok(Outcome::Accepted(prepared.id)));
                    to_write.push((index, prepared));
                }
                Ok(Some(done)) => {
                    tracing::debug!(message_id = %done.message_id(), "retried request answered from memory");
                    results.push(Ok(done));
                }
                Err(e) => results.push(Err(e)),
            }
        }

        let span = tracing::debug_span!("write", client_id, records = to_write.len());
        let outgoing = to_write.iter().map(|(_, p)| p.outgoing.clone()).collect();
        let written = self.publisher.write_all(outgoing).instrument(span).await;
        for ((index, prepared), result) in to_write.into_iter().zip(written) {
            self.settle(prepared.id, result.is_ok());
            let span = tracing::debug_span!("message", message_id = %prepared.id);
            let _entered = span.enter();
            match result {
                Ok(()) => {
                    metrics::counter!("ingest_accepted_total", "kind" => prepared.request.kind.as_str(), "source" => source_label(source)).increment(1);
                    tracing::debug!(
                        request_id = %prepared.request.request_id,
                        phone = %mask_phone(&prepared.request.phone),
                        kind = prepared.request.kind.as_str(),
                        topic = %prepared.outgoing.topic,
                        "accepted"
                    );
                }
                Err(e) => {
                    tracing::debug!(code = e.code(), error = %e, "not acknowledged by kafka");
                    results[index] = Err(e);
                }
            }
        }
        for result in &results {
            if let Err(e) = result {
                metrics::counter!("ingest_refused_total", "code" => e.code()).increment(1);
            }
        }
        results
    }

    /// Builds the request record of an instruction, or says why not.
    fn prepare(
        &self,
        client_id: &str,
        source: RequestSource,
        instruction: Instruction,
        now: Millis,
    ) -> Result<Prepared, IngestError> {
        let request_id = instruction.request_id.trim();
        if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_LEN {
            return Err(IngestError::InvalidRequest(format!(
                "request_id must hold 1 to {MAX_REQUEST_ID_LEN} characters"
            )));
        }
        let kind = validate::parse_kind(&instruction.kind)?;
        let phone = self.validator.phone(&instruction.phone)?;
        let raw_text = match (&instruction.text, &instruction.template_id) {
            (Some(text), None) => {
                if !instruction.params.is_empty() {
                    return Err(IngestError::InvalidRequest(
                        "params are only used with template_id".into(),
                    ));
                }
                text.clone()
            }
            (None, Some(template_id)) => self.render(template_id, &instruction.params)?,
            _ => {
                return Err(IngestError::InvalidRequest(
                    "give either text or template_id, not both and not neither".into(),
                ))
            }
        };
        let text = self.validator.text(&raw_text)?;
        if let Some(extension) = &instruction.sp_extension {
            validate::check_extension(extension)?;
        }
        validate::check_times(now, instruction.expires_at, instruction.scheduled_at)?;

        let id = message_id(client_id, request_id);
        let request = SmsRequest {
            message_id: id.to_string(),
            request_id: request_id.to_string(),
            client_id: client_id.to_string(),
            phone,
            kind,
            text,
            template_id: instruction.template_id.clone(),
            sp_extension: instruction.sp_extension.clone(),
            source,
            accepted_at: now,
            expires_at: instruction.expires_at,
            scheduled_at: instruction.scheduled_at,
            attempt: 0,
            not_before: instruction.scheduled_at,
        };
        let topic = match kind {
            MessageKind::VerificationCode => self.topics.requests_otp.clone(),
            MessageKind::Notice | MessageKind::Reminder => self.topics.requests_notify.clone(),
        };
        let payload = self.codec.encode(&request)?;
        let outgoing = Outgoing {
            topic,
            key: request.phone.clone(),
            payload,
        };
        Ok(Prepared {
            fingerprint: fingerprint(&request),
            id,
            request,
            outgoing,
        })
    }

    fn render(
        &self,
        template_id: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<String, IngestError> {
        let template = self
            .templates
            .get(template_id)
            .ok_or_else(|| IngestError::UnknownTemplate(template_id.chars().take(64).collect()))?;
        let mut out = String::with_capacity(template.len() + 32);
        let mut used = HashSet::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            let value = params
                .get(name)
                .ok_or_else(|| IngestError::MissingParameter(name.to_string()))?;
            out.push_str(value);
            used.insert(name);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        if let Some(unused) = params.keys().find(|k| !used.contains(k.as_str())) {
            return Err(IngestError::UnknownParameter(
                unused.chars().take(64).collect(),
            ));
        }
        Ok(out)
    }

    /// Reserves `id` for writing, or answers from memory.
    fn claim(
        &self,
        id: Uuid,
        fingerprint: u64,
        now: Millis,
    ) -> Result<Option<Outcome>, IngestError> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        match recent.get(&id, now).copied() {
            None => {
                recent.insert(
                    id,
                    Remembered {
                        fingerprint,
                        slot: Slot::Writing,
                    },
                    now,
                );
                Ok(None)
            }
            Some(seen) if seen.fingerprint != fingerprint => Err(IngestError::RequestIdReused),
            Some(Remembered {
                slot: Slot::Writing,
                ..
            }) => Err(IngestError::RequestInProgress),
            Some(Remembered {
                slot: Slot::Written,
                ..
            }) => Ok(Some(Outcome::Duplicate(id))),
        }
    }

    /// Marks a claimed id written, or frees it for a retry.
    fn settle(&self, id: Uuid, written: bool) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if written {
            if let Some(entry) = recent.get_mut(&id) {
                entry.slot = Slot::Written;
            }
        } else {
            recent.remove(&id);
        }
    }
}

/// What makes two instructions with one request id the same message: the
/// validated content, not its spelling or the time it arrived.
fn fingerprint(request: &SmsRequest) -> u64 {
    let mut hasher = DefaultHasher::new();
    request.phone.hash(&mut hasher);
    request.kind.hash(&mut hasher);
    request.text.hash(&mut hasher);
    request.template_id.hash(&mut hasher);
    request.sp_extension.hash(&mut hasher);
    request.expires_at.hash(&mut hasher);
    request.scheduled_at.hash(&mut hasher);
    hasher.finish()
}

fn source_label(source: RequestSource) -> &'static str {
    match source {
        RequestSource::Http => "http",
        RequestSource::Topic => "topic",
        RequestSource::System => "system",
    }
}

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_ids_are_deterministic_per_client() {
        assert_eq!(message_id("a", "r1"), message_id("a", "r1"));
        assert_ne!(message_id("a", "r1"), message_id("b", "r1"));
        assert_ne!(message_id("a", "r1"), message_id("a", "r2"));
        assert_eq!(message_id("a", "r1").get_version_num(), 5);
    }
}
