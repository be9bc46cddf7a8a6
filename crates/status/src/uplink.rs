//! Uplink handling: reads `sms.mo`, puts concatenated replies back together, cancels the subscription of users who reply with an unsubscribe keyword and sends them a confirmation.
//!
//! Delivery semantics: at least once with idempotent effects. The
//! cancellation is a compacted record keyed by the phone number (writing it
//! twice changes nothing) and the confirmation's message id is derived from
//! the uplink's id, so the dispatcher sends it once however often it is
//! written. Offsets are committed only after Kafka acknowledged the effects,
//! and never past a part of an unfinished concatenated reply.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use metrics::counter;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sms_core::avro::{AvroCodec, AvroRecord};
use sms_core::events::{
    now_millis, DeadLetter, DeadLetterError, MessageKind, Millis, RequestSource, SmsRequest,
    SubscriptionRecord, SubscriptionSource, SubscriptionState, UplinkMessage,
};
use sms_core::kafka::{KafkaSettings, Topics};
use sms_core::telemetry::mask_phone;
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn};

use crate::config::UplinkSettings;
use crate::error::StatusError;

const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a reply asks to stop the service, after normalising full-width
/// characters, spaces and case.
pub fn is_unsubscribe(text: &str, keywords: &[String]) -> bool {
    let reply = normalise(text);
    if reply.is_empty() {
        return false;
    }
    if keywords.iter().any(|k| normalise(k) == reply) {
        return true;
    }
    // "TD" followed by a service code.
    reply.strip_prefix("TD").is_some_and(|code| {
        (1..=10).contains(&code.len()) && code.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

fn normalise(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{3000}' => ' ',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase()
}

/// Parts of one concatenated reply, with where each came from.
struct Partial {
    parts: BTreeMap<u8, Vec<u8>>,
    total: u8,
    offsets: Vec<(i32, i64)>,
    first_seen: Millis,
}

struct Uplink {
    settings: UplinkSettings,
    topics: Topics,
    codec: AvroCodec,
    producer: FutureProducer,
    partials: HashMap<(String, String, u16), Partial>,
    held: BTreeMap<i32, BTreeSet<i64>>,
    next: BTreeMap<i32, i64>,
}

/// Runs the uplink handler until `shutdown` turns true, starting over after a failure.
pub async fn run(
    kafka: KafkaSettings,
    settings: UplinkSettings,
    codec: AvroCodec,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match session(&kafka, &settings, &codec, shutdown.clone()).await {
            Ok(()) => return,
            Err(e) => {
                counter!("status_uplink_restarts_total").increment(1);
                warn!(error = %e, "uplink session ended; starting over");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn session(
    kafka: &KafkaSettings,
    settings: &UplinkSettings,
    codec: &AvroCodec,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StatusError> {
    let topics = kafka.topics();
    let consumer: StreamConsumer = kafka
        .consumer_config("status-uplink", &settings.group_id)
        .create()
        .map_err(StatusError::kafka("creating the uplink consumer"))?;
    consumer
        .subscribe(&[&topics.mo])
        .map_err(StatusError::kafka("subscribing to uplinks"))?;
    let producer: FutureProducer = kafka
        .producer_config("status-uplink")
        .create()
        .map_err(StatusError::kafka("creating the uplink producer"))?;
    let mut uplink = Uplink {
        settings: settings.clone(),
        topics: topics.clone(),
        codec: codec.clone(),
        producer,
        partials: HashMap::new(),
        held: BTreeMap::new(),
        next: BTreeMap::new(),
    };
    info!("uplink handler started");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = consumer.recv() => {
                let message = message.map_err(StatusError::kafka("reading uplinks"))?;
                let partition = message.partition();
                let offset = message.offset();
                uplink.next.insert(partition, offset + 1);
                uplink.handle(partition, offset, message.key(), message.payload().unwrap_or_default()).await?;
                uplink.commit(&consumer, &topics.mo)?;
            }
            _ = tick.tick() => {
                uplink.expire(now_millis());
                uplink.commit(&consumer, &topics.mo)?;
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

impl Uplink {
    async fn handle(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), StatusError> {
        let message = match self.codec.decode::<UplinkMessage>(payload).await {
            Ok(m) => m,
            Err(e) => {
                counter!("status_undecodable_total", "topic" => self.topics.mo.clone())
                    .increment(1);
                warn!(partition, offset, error = %e, "undecodable uplink sent to the dead-letter topic");
                let letter = DeadLetter {
                    source_topic: self.topics.mo.clone(),
                    source_partition: partition,
                    source_offset: offset,
                    key: key.map(<[u8]>::to_vec),
                    payload: Some(payload.to_vec()),
                    error: DeadLetterError::Undecodable,
                    reason: e.to_string(),
                    service: "status-uplink".into(),
                    recorded_at: now_millis(),
                };
                let key = key
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                return self.write(&self.topics.dlq.clone(), &key, &letter).await;
            }
        };
        let span = info_span!("uplink", uplink_id = %message.uplink_id);
        let _enter = span.enter();
        if !message.udhi {
            return self.answer(&message, message.text.clone()).await;
        }
        let Some(part) = sgip::text::parse_concatenation(&message.content) else {
            counter!("status_uplink_malformed_total").increment(1);
            warn!(phone = %mask_phone(&message.phone), "uplink claims a user-data header but has none; kept in sms.mo only");
            return Ok(());
        };
        let key = (
            message.phone.clone(),
            message.sp_number.clone(),
            part.reference,
        );
        let partial = self.partials.entry(key.clone()).or_insert_with(|| Partial {
            parts: BTreeMap::new(),
            total: part.total,
            offsets: Vec::new(),
            first_seen: now_millis(),
        });
        partial
            .parts
            .insert(part.index, message.content[part.header_len..].to_vec());
        partial.offsets.push((partition, offset));
        self.held.entry(partition).or_default().insert(offset);
        if partial.parts.len() < usize::from(partial.total) {
            return Ok(());
        }
        let Some(done) = self.partials.remove(&key) else {
            return Ok(());
        };
        self.release(&done.offsets);
        let octets: Vec<u8> = done.parts.into_values().flatten().collect();
        let text = matches!(message.coding, 0 | 8 | 15)
            .then(|| sgip::text::decode(u8::try_from(message.coding).unwrap_or(0), &octets));
        self.answer(&message, text).await
    }

    async fn answer(
        &mut self,
        message: &UplinkMessage,
        text: Option<String>,
    ) -> Result<(), StatusError> {
        let Some(text) = text else {
            counter!("status_uplink_undecoded_total").increment(1);
            return Ok(());
        };
        if !is_unsubscribe(&text, &self.settings.unsubscribe_keywords) {
            counter!("status_uplink_replies_total").increment(1);
            debug!(phone = %mask_phone(&message.phone), "uplink reply recorded for the platform");
            return Ok(());
        }
        let now = now_millis();
        let cancellation = SubscriptionRecord {
            phone: message.phone.clone(),
            state: SubscriptionState::Cancelled,
            kinds: Vec::new(),
            source: SubscriptionSource::UplinkKeyword,
            moved_to: None,
            client_id: None,
            changed_at: now,
        };
        self.write(
            &self.topics.subscriptions.clone(),
            &message.phone,
            &cancellation,
        )
        .await?;
        let confirmation = SmsRequest {
            message_id: uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!("unsubscribe:{}", message.uplink_id).as_bytes(),
            )
            .to_string(),
            request_id: format!("unsubscribe-{}", message.uplink_id),
            client_id: "system".into(),
            phone: message.phone.clone(),
            kind: MessageKind::Notice,
            text: self.settings.confirmation_text.clone(),
            template_id: None,
            sp_extension: None,
            source: RequestSource::System,
            accepted_at: now,
            expires_at: Some(now + 24 * 3600 * 1000),
            scheduled_at: None,
            attempt: 0,
            not_before: None,
        };
        self.write(
            &self.topics.requests_notify.clone(),
            &message.phone,
            &confirmation,
        )
        .await?;
        counter!("status_unsubscribes_total").increment(1);
        info!(phone = %mask_phone(&message.phone), "unsubscribed by reply; confirmation queued");
        Ok(())
    }

    async fn write<T: AvroRecord>(
        &self,
        topic: &str,
        key: &str,
        record: &T,
    ) -> Result<(), StatusError> {
        let payload = self.codec.encode(record)?;
        self.producer
            .send(
                FutureRecord::to(topic).key(key).payload(&payload),
                PRODUCE_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| StatusError::Produce {
                topic: topic.to_string(),
                source: e,
            })?;
        Ok(())
    }

    fn release(&mut self, offsets: &[(i32, i64)]) {
        for (partition, offset) in offsets {
            if let Some(held) = self.held.get_mut(partition) {
                held.remove(offset);
            }
        }
    }

    fn expire(&mut self, now: Millis) {
        let expiry = self.settings.reassembly_expiry_ms as Millis;
        let stale: Vec<_> = self
            .partials
            .iter()
            .filter(|(_, p)| now - p.first_seen > expiry)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(partial) = self.partials.remove(&key) {
                counter!("status_uplink_incomplete_total").increment(1);
                warn!(phone = %mask_phone(&key.0), parts = partial.parts.len(), total = partial.total, "concatenated uplink never completed; its parts stay in sms.mo");
                self.release(&partial.offsets);
            }
        }
    }

    fn commit(&mut self, consumer: &StreamConsumer, topic: &str) -> Result<(), StatusError> {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &self.next {
            let safe = self
                .held
                .get(partition)
                .and_then(|h| h.first().copied())
                .unwrap_or(*next);
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(safe))
                .map_err(StatusError::kafka("listing offsets"))?;
        }
        if offsets.count() > 0 {
            consumer
                .commit(&offsets, CommitMode::Async)
                .map_err(StatusError::kafka("committing uplink offsets"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_unsubscribe;

    #[test]
    fn unsubscribe_keywords_match_after_normalising() {
        let keywords: Vec<String> = ["TD", "T", "0000", "00000", "QX", "退订", "取消"]
            .map(String::from)
            .to_vec();
        for reply in [
            "TD",
            "td",
            " Td ",
            "ＴＤ",
            "退订",
            "0000",
            "００００",
            "TD12123",
            "qx",
        ] {
            assert!(is_unsubscribe(reply, &keywords), "{reply}");
        }
        for reply in [
            "",
            "谢谢",
            "TDX!",
            "请问怎么退订",
            "00",
            "TD 谢谢",
            "TDTHISISTOOLONGFORACODE",
        ] {
            assert!(!is_unsubscribe(reply, &keywords), "{reply}");
        }
    }
}
