//! Subscriptions (contract clause 2.9): register, subscribe, query, cancel and change number, kept on the compacted `sms.subscriptions` topic.
//!
//! Every change writes the phone number's whole [`SubscriptionRecord`]
//! (key = phone) and waits for Kafka's acknowledgement. Queries read the
//! topic materialised in memory by a tail from the beginning; a change made
//! here is also applied to memory at once, so a query right after a change
//! sees it. Changes are serialised within one instance; two instances
//! changing one number at the same moment resolve by the topic's order.
//!
//! Limitation: the whole subscription table is held in memory (one record
//! per registered number).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sms_core::avro::{decode_single_object, AvroCodec};
use sms_core::events::{
    now_millis, MessageKind, SubscriptionRecord, SubscriptionSource, SubscriptionState,
};
use sms_core::telemetry::mask_phone;
use sms_core::validate::{self, Validator};
use tokio::sync::Mutex;

use crate::error::IngestError;
use crate::publish::{Outgoing, Publisher};
use crate::tail::Tailed;

/// The subscription of one number, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionView {
    pub phone: String,
    /// `REGISTERED` or `CANCELLED`.
    pub state: SubscriptionState,
    pub kinds: Vec<MessageKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    pub changed_at: i64,
}

impl From<&SubscriptionRecord> for SubscriptionView {
    fn from(record: &SubscriptionRecord) -> Self {
        Self {
            phone: record.phone.clone(),
            state: record.state,
            kinds: record.kinds.clone(),
            moved_to: record.moved_to.clone(),
            changed_at: record.changed_at,
        }
    }
}

/// Body of register, subscribe and cancel: the kinds concerned.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KindsBody {
    /// Kinds to add or remove; for register, default all; for cancel,
    /// default all (the whole subscription is cancelled).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
}

/// Body of register: the number and the kinds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub phone: String,
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
}

/// Body of change: the new number.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    pub new_phone: String,
}

/// The subscription table and its writer.
#[derive(Clone)]
pub struct Subscriptions {
    book: Arc<RwLock<HashMap<String, SubscriptionRecord>>>,
    topic: String,
    publisher: Publisher,
    validator: Arc<Validator>,
    codec: AvroCodec,
    /// Serialises read-modify-write changes within this instance.
    changing: Arc<Mutex<()>>,
}

impl Subscriptions {
    pub fn new(topic: String, publisher: Publisher, validator: Arc<Validator>) -> Self {
        Self {
            book: Arc::default(),
            topic,
            publisher,
            validator,
            codec: AvroCodec::single_object(),
            changing: Arc::default(),
        }
    }

    /// Takes one record of the compacted topic; a tombstone removes the number.
    pub fn apply(&self, record: Tailed<'_>) {
        let mut book = self.book.write().unwrap_or_else(|p| p.into_inner());
        match (record.payload, record.key) {
            (None, Some(key)) => {
                book.remove(String::from_utf8_lossy(key).as_ref());
            }
            (Some(payload), _) => match decode_single_object::<SubscriptionRecord>(payload) {
                Ok(subscription) => {
                    book.insert(subscription.phone.clone(), subscription);
                }
                Err(e) => {
                    metrics::counter!("ingest_subscription_undecodable_total").increment(1);
                    tracing::warn!(
                        partition = record.partition,
                        offset = record.offset,
                        error = %e,
                        "subscription record does not decode; skipped"
                    );
                }
            },
            (None, None) => {}
        }
    }

    /// The subscription of `raw_phone`.
    pub fn query(&self, raw_phone: &str) -> Result<SubscriptionView, IngestError> {
        let phone = validate::normalise_phone(raw_phone)?;
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        book.get(&phone).map(SubscriptionView::from).ok_or_else(|| {
            IngestError::NotFound(format!("{} has no subscription", mask_phone(&phone)))
        })
    }

    /// Registers a number for `kinds` (default all); registering again
    /// replaces the kinds.
    pub async fn register(
        &self,
        client_id: &str,
        raw_phone: &str,
        kinds: Option<&[String]>,
    ) -> Result<SubscriptionView, IngestError> {
        let phone = self.validator.phone(raw_phone)?;
        let kinds = match kinds {
            Some(kinds) => parse_kinds(kinds)?,
            None => MessageKind::ALL.to_vec(),
        };
        let _changing = self.changing.lock().await;
        let record = record(&phone, SubscriptionState::Registered, kinds, client_id);
        self.write(vec![record]).await
    }

    /// Adds `kinds` to a registered number.
    pub async fn subscribe(
        &self,
        client_id: &str,
        raw_phone: &str,
        kinds: &[String],
    ) -> Result<SubscriptionView, IngestError> {
        let phone = self.validator.phone(raw_phone)?;
        let added = parse_kinds(kinds)?;
        let _changing = self.changing.lock().await;
        let current = self.registered(&phone)?;
        let mut kinds = current.kinds;
        kinds.extend(added);
        let record = record(&phone, SubscriptionState::Registered, kinds, client_id);
        self.write(vec![record]).await
    }

    /// Removes `kinds` from a number, or cancels it entirely when `kinds`
    /// is `None` or leaves nothing.
    pub async fn cancel(
        &self,
        client_id: &str,
        raw_phone: &str,
        kinds: Option<&[String]>,
    ) -> Result<SubscriptionView, IngestError> {
        let phone = validate::normalise_phone(raw_phone)?;
        let removed = match kinds {
            Some(kinds) => parse_kinds(kinds)?,
            None => MessageKind::ALL.to_vec(),
        };
        let _changing = self.changing.lock().await;
        let current = self.registered(&phone)?;
        let kinds: Vec<MessageKind> = current
            .kinds
            .into_iter()
            .filter(|k| !removed.contains(k))
            .collect();
        let state = if kinds.is_empty() {
            SubscriptionState::Cancelled
        } else {
            SubscriptionState::Registered
        };
        let record = record(&phone, state, kinds, client_id);
        self.write(vec![record]).await
    }

    /// Moves a registered number's subscription to a new number: the old
    /// one is cancelled with `moved_to`, the new one registered with the
    /// same kinds. Both records are written before the answer.
    pub async fn change(
        &self,
        client_id: &str,
        raw_phone: &str,
        raw_new_phone: &str,
    ) -> Result<SubscriptionView, IngestError> {
        let phone = validate::normalise_phone(raw_phone)?;
        let new_phone = self.validator.phone(raw_new_phone)?;
        if new_phone == phone {
            return Err(IngestError::InvalidRequest(
                "new_phone is the number already registered".into(),
            ));
        }
        let _changing = self.changing.lock().await;
        let current = self.registered(&phone)?;
        let mut old = record(&phone, SubscriptionState::Cancelled, Vec::new(), client_id);
        old.source = SubscriptionSource::NumberChange;
        old.moved_to = Some(new_phone.clone());
        let mut new = record(
            &new_phone,
            SubscriptionState::Registered,
            current.kinds,
            client_id,
        );
        new.source = SubscriptionSource::NumberChange;
        self.write(vec![old, new]).await
    }

    fn registered(&self, phone: &str) -> Result<SubscriptionRecord, IngestError> {
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        match book.get(phone) {
            Some(r) if r.state == SubscriptionState::Registered => Ok(r.clone()),
            _ => Err(IngestError::NotFound(format!(
                "{} is not registered",
                mask_phone(phone)
            ))),
        }
    }

    /// Writes the records, applies them to memory, and shows the last one.
    async fn write(
        &self,
        records: Vec<SubscriptionRecord>,
    ) -> Result<SubscriptionView, IngestError> {
        let mut outgoing = Vec::with_capacity(records.len());
        for record in &records {
            outgoing.push(Outgoing {
                topic: self.topic.clone(),
                key: record.phone.clone(),
                payload: self.codec.encode(record)?,
            });
        }
        for result in self.publisher.write_all(outgoing).await {
            result?;
        }
        let mut book = self.book.write().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        for record in records {
            tracing::info!(
                phone = %mask_phone(&record.phone),
                state = ?record.state,
                kinds = record.kinds.len(),
                "subscription changed"
            );
            last = Some(SubscriptionView::from(&record));
            book.insert(record.phone.clone(), record);
        }
        last.ok_or_else(|| IngestError::InvalidRequest("nothing to write".into()))
    }
}

fn record(
    phone: &str,
    state: SubscriptionState,
    mut kinds: Vec<MessageKind>,
    client_id: &str,
) -> SubscriptionRecord {
    kinds.sort();
    kinds.dedup();
    SubscriptionRecord {
        phone: phone.to_string(),
        state,
        kinds,
        source: SubscriptionSource::Api,
        moved_to: None,
        client_id: Some(client_id.to_string()),
        changed_at: now_millis(),
    }
}

fn parse_kinds(raw: &[String]) -> Result<Vec<MessageKind>, IngestError> {
    if raw.is_empty() {
        return Err(IngestError::InvalidRequest(
            "kinds must not be empty".into(),
        ));
    }
    raw.iter()
        .map(|k| validate::parse_kind(k).map_err(IngestError::from))
        .collect()
}
