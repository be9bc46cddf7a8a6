//! The correlation state machine: joins carrier reports to dispatch events by sequence triple and decides each message's final status.
//!
//! It knows nothing of Kafka. The consumer feeds it records with their
//! source position, writes what it returns, and commits the offsets it calls
//! safe: an offset never passes a record whose effect is still only in
//! memory (a dispatch event awaiting reports, a report applied to an
//! unfinished message, a report held for a dispatch event not seen yet). So
//! after a crash, replaying from the committed offsets rebuilds exactly the
//! state that was lost; messages already final are recognised by the
//! memory of final ids, rebuilt from `sms.status`, and are not decided twice.

use std::collections::{btree_map, hash_map, BTreeMap, BTreeSet, HashMap, VecDeque};

use sms_core::carrier::failure_category;
use sms_core::events::{
    within_seven_seconds, CarrierReport, DispatchEvent, DispatchOutcome, FailureCategory,
    FinalState, FinalStatus, Millis, RefusalReason, ReportState, SequenceTriple,
};
use sms_core::ids::{message_key, MessageRef};
use uuid::Uuid;

/// A record's place in Kafka: topic, partition, offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What the correlator asks the consumer to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A message's one final status.
    Final(FinalStatus),
    /// A report that matched no dispatch event within the hold time.
    Unmatched { report: CarrierReport, at: Position },
    /// A report for a message that is already final (a late or resent report).
    AfterFinal {
        report: CarrierReport,
        message_id: String,
    },
}

/// Tunables, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A message with no final report this long after acceptance is UNKNOWN.
    pub validity_ms: Millis,
    /// A report whose dispatch event has not arrived is held this long.
    pub orphan_hold_ms: Millis,
    /// Final message ids are remembered this long (must exceed validity).
    pub finalized_memory_ms: Millis,
    /// Submit sequences of the most recently final messages remembered, to
    /// tell a late or resent report of a final message from an unmatched one.
    pub final_sequences: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            validity_ms: 72 * 3600 * 1000,
            orphan_hold_ms: 10 * 60 * 1000,
            finalized_memory_ms: 96 * 3600 * 1000,
            final_sequences: 500_000,
        }
    }
}

#[derive(Debug, Clone)]
struct SegmentReport {
    state: ReportState,
    error_code: i32,
    received_at: Millis,
    at: Position,
}

#[derive(Debug)]
struct Pending {
    event: DispatchEvent,
    at: Position,
    reports: Vec<Option<SegmentReport>>,
}

#[derive(Debug)]
struct Orphan {
    report: CarrierReport,
    at: Position,
    held_since: Millis,
}

/// The offsets of the records whose effect is still only in memory, per
/// topic and partition, counted (one offset may be held twice: a report
/// resent under the same sequence), so that the earliest of a partition is
/// at hand without a pass over everything held.
#[derive(Debug, Default)]
struct HeldOffsets(HashMap<String, HashMap<i32, BTreeMap<i64, u32>>>);

impl HeldOffsets {
    fn hold(&mut self, at: &Position) {
        let partitions = match self.0.get_mut(at.topic.as_str()) {
            Some(partitions) => partitions,
            None => self.0.entry(at.topic.clone()).or_default(),
        };
        *partitions
            .entry(at.partition)
            .or_default()
            .entry(at.offset)
            .or_default() += 1;
    }

    fn release(&mut self, at: &Position) {
        let Some(offsets) = self
            .0
            .get_mut(at.topic.as_str())
            .and_then(|partitions| partitions.get_mut(&at.partition))
        else {
            return;
        };
        if let btree_map::Entry::Occupied(mut held) = offsets.entry(at.offset) {
            *held.get_mut() -= 1;
            if *held.get() == 0 {
                held.remove();
            }
        }
    }

    /// The earliest held offset of a partition, if it holds any.
    fn earliest(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0
            .get(topic)?
            .get(&partition)?
            .first_key_value()
            .map(|(offset, _)| *offset)
    }
}

/// Ids past their memory are dropped in one pass over the final ids, at
/// most this often.
const SWEEP_INTERVAL_MS: Millis = 60_000;

/// What is remembered of the messages already final.
///
/// Every final id of the memory window is kept (a replayed dispatch event of
/// a final message must be recognised, however old, or the message would be
/// decided twice), as a 16-byte key with the second it was decided: about
/// 30 bytes a message with the table's spare room. Ids past the window are
/// dropped by a pass over the table once a minute. The submit sequences,
/// which only tell a late report's message, are kept for the most recent
/// `Limits::final_sequences` messages' segments.
#[derive(Debug, Default)]
struct FinalMemory {
    /// Keys of final message ids, with the second each was decided (rounded
    /// up, so an id is never forgotten early).
    ids: HashMap<Uuid, u32>,
    next_sweep: Millis,
    sequences: HashMap<SequenceTriple, MessageRef>,
    /// The remembered sequences, oldest first, with their decision time.
    sequence_order: VecDeque<(Millis, SequenceTriple)>,
}

impl FinalMemory {
    /// Remembers a final message by its key; false when it was final already.
    fn insert(&mut self, key: Uuid, decided_at: Millis) -> bool {
        let second = u32::try_from(decided_at.div_euclid(1000) + 1).unwrap_or(0);
        match self.ids.entry(key) {
            hash_map::Entry::Occupied(_) => false,
            hash_map::Entry::Vacant(slot) => {
                slot.insert(second);
                true
            }
        }
    }

    /// Remembers the submit sequences of a message just final, keeping the
    /// most recent `max` sequences.
    fn insert_sequences(
        &mut self,
        message_id: &str,
        decided_at: Millis,
        sequences: &[SequenceTriple],
        max: usize,
    ) {
        if sequences.is_empty() || max == 0 {
            return;
        }
        let id = MessageRef::from(message_id);
        for sequence in sequences {
            self.sequences.insert(*sequence, id.clone());
            self.sequence_order.push_back((decided_at, *sequence));
        }
        while self.sequence_order.len() > max {
            self.forget_oldest_sequence();
        }
    }

    fn contains(&self, message_id: &str) -> bool {
        self.ids.contains_key(&message_key(message_id))
    }

    fn forget_oldest_sequence(&mut self) {
        if let Some((_, sequence)) = self.sequence_order.pop_front() {
            self.sequences.remove(&sequence);
        }
    }

    /// Forgets what was decided more than `memory_ms` before `now`.
    fn expire(&mut self, now: Millis, memory_ms: Millis) {
        while self
            .sequence_order
            .front()
            .is_some_and(|(decided_at, _)| now - decided_at > memory_ms)
        {
            self.forget_oldest_sequence();
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL_MS;
            self.ids
                .retain(|_, second| now - i64::from(*second) * 1000 <= memory_ms);
        }
    }
}

/// The correlation state of the partitions one consumer holds.
#[derive(Debug, Default)]
pub struct Correlator {
    limits: Limits,
    pending: HashMap<String, Pending>,
    /// The pending messages by acceptance time, oldest first: what expires
    /// next and the age metric, without a pass over every pending message.
    by_acceptance: BTreeSet<(Millis, String)>,
    /// Where every pending message, applied report and held orphan was read.
    held: HeldOffsets,
    by_sequence: HashMap<SequenceTriple, (String, usize)>,
    orphans: HashMap<SequenceTriple, Vec<Orphan>>,
    finals: FinalMemory,
    /// The next offset to read, per (topic, partition), for what was fed.
    next_offsets: BTreeMap<(String, i32), i64>,
}

impl Correlator {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Messages waiting for reports.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Reports held for a dispatch event not seen yet.
    pub fn orphans(&self) -> usize {
        self.orphans.values().map(Vec::len).sum()
    }

    /// The acceptance time of the oldest pending message, for the age metric.
    pub fn oldest_pending_accepted_at(&self) -> Option<Millis> {
        self.by_acceptance.first().map(|(at, _)| *at)
    }

    /// Final message ids remembered.
    pub fn finalized(&self) -> usize {
        self.finals.ids.len()
    }

    /// Remembers a message that already has its final status (from
    /// `sms.status`), by its [`message_key`].
    pub fn mark_finalized(&mut self, key: Uuid, decided_at: Millis) {
        self.finals.insert(key, decided_at);
    }

    fn remember_final(
        &mut self,
        message_id: &str,
        decided_at: Millis,
        sequences: &[SequenceTriple],
    ) {
        if self.finals.insert(message_key(message_id), decided_at) {
            let max = self.limits.final_sequences;
            self.finals
                .insert_sequences(message_id, decided_at, sequences, max);
        }
    }

    /// Whether a message already has its final status.
    pub fn is_finalized(&self, message_id: &str) -> bool {
        self.finals.contains(message_id)
    }

    fn advance(&mut self, at: &Position) {
        let next = self
            .next_offsets
            .entry((at.topic.clone(), at.partition))
            .or_insert(0);
        *next = (*next).max(at.offset + 1);
    }

    /// Notes a record that leaves no state behind (it went to the dead-letter topic).
    pub fn on_skipped(&mut self, at: &Position) {
        self.advance(at);
    }

    /// Feeds one dispatch event.
    pub fn on_dispatch(
        &mut self,
        event: DispatchEvent,
        at: Position,
        now: Millis,
    ) -> Vec<Decision> {
        self.advance(&at);
        if self.is_finalized(&event.message_id) {
            return Vec::new();
        }
        match event.outcome {
            // A later attempt follows on the retry topic; nothing is final yet.
            DispatchOutcome::Retrying => Vec::new(),
            // A copy of a request already handled (redelivered after a
            // rebalance, or sent again by the platform): the outcome is the
            // original's, decided by its own events.
            DispatchOutcome::Refused if event.reason == Some(RefusalReason::Duplicate) => {
                Vec::new()
            }
            DispatchOutcome::Refused => {
                let reason = event.reason.unwrap_or(RefusalReason::InvalidRequest);
                let status = if reason == RefusalReason::Expired {
                    FinalState::Expired
                } else {
                    FinalState::Rejected
                };
                let category = (status == FinalState::Expired).then_some(FailureCategory::Expired);
                vec![self.finish(final_from_dispatch(
                    &event,
                    status,
                    category,
                    Some(reason),
                    now,
                ))]
            }
            DispatchOutcome::Failed => {
                let code = event.gateway_result;
                let category = match code {
                    Some(code) => match failure_category(u8::try_from(code).unwrap_or(u8::MAX)) {
                        FailureCategory::Other => FailureCategory::GatewayRefused,
                        category => category,
                    },
                    None => FailureCategory::GatewayRefused,
                };
                let mut status = final_from_dispatch(
                    &event,
                    FinalState::Failed,
                    Some(category),
                    event.reason,
                    now,
                );
                status.error_code = code;
                vec![self.finish(status)]
            }
            DispatchOutcome::Submitted => self.track(event, at, now),
        }
    }

    fn track(&mut self, event: DispatchEvent, at: Position, now: Millis) -> Vec<Decision> {
        if event.segments.is_empty() {
            let mut status = final_from_dispatch(&event, FinalState::Unknown, None, None, now);
            status.within_seven_seconds = false;
            return vec![self.finish(status)];
        }
        let id = event.message_id.clone();
        for (i, segment) in event.segments.iter().enumerate() {
            self.by_sequence.insert(segment.sequence, (id.clone(), i));
        }
        let reports = vec![None; event.segments.len()];
        let sequences: Vec<SequenceTriple> = event.segments.iter().map(|s| s.sequence).collect();
        let (held_at, accepted_at) = (at.clone(), event.accepted_at);
        if let Some(replaced) = self
            .pending
            .insert(id.clone(), Pending { event, at, reports })
        {
            // The same message fed twice before it was final: the first
            // copy's records are no longer held by anything.
            self.release(&replaced);
        }
        self.held.hold(&held_at);
        self.by_acceptance.insert((accepted_at, id.clone()));

        // Reports that arrived before the dispatch event apply now.
        let mut decisions = Vec::new();
        for sequence in sequences {
            for orphan in self.orphans.remove(&sequence).unwrap_or_default() {
                self.held.release(&orphan.at);
                decisions.extend(self.apply(orphan.report, orphan.at, now));
            }
        }
        decisions
    }

    /// Feeds one carrier report.
    pub fn on_report(&mut self, report: CarrierReport, at: Position, now: Millis) -> Vec<Decision> {
        self.advance(&at);
        self.apply(report, at, now)
    }

    fn apply(&mut self, report: CarrierReport, at: Position, now: Millis) -> Vec<Decision> {
        if let Some(id) = self.finals.sequences.get(&report.submit_sequence) {
            return vec![Decision::AfterFinal {
                message_id: id.to_string(),
                report,
            }];
        }
        let Some((id, index)) = self.by_sequence.get(&report.submit_sequence).cloned() else {
            self.held.hold(&at);
            self.orphans
                .entry(report.submit_sequence)
                .or_default()
                .push(Orphan {
                    report,
                    at,
                    held_since: now,
                });
            return Vec::new();
        };
        let Some(pending) = self.pending.get_mut(&id) else {
            // The index outlived its message: it is final already.
            return vec![Decision::AfterFinal {
                report,
                message_id: id,
            }];
        };
        // WAITING is not final; a later report settles the segment.
        if report.state == ReportState::Waiting {
            return Vec::new();
        }
        let slot = &mut pending.reports[index];
        if slot
            .as_ref()
            .is_some_and(|r| r.received_at <= report.received_at)
        {
            // A resent report for a settled segment changes nothing.
            return Vec::new();
        }
        self.held.hold(&at);
        let earlier = slot.replace(SegmentReport {
            state: report.state,
            error_code: report.error_code,
            received_at: report.received_at,
            at,
        });
        if let Some(earlier) = earlier {
            self.held.release(&earlier.at);
        }
        if pending.reports.iter().all(Option::is_some) {
            return self.settle(&id, now).into_iter().collect();
        }
        Vec::new()
    }

    /// Forgets what a pending message held: its offsets, its place in the
    /// acceptance order.
    fn release(&mut self, pending: &Pending) {
        self.held.release(&pending.at);
        for report in pending.reports.iter().flatten() {
            self.held.release(&report.at);
        }
        self.by_acceptance
            .remove(&(pending.event.accepted_at, pending.event.message_id.clone()));
    }

    fn settle(&mut self, id: &str, now: Millis) -> Option<Decision> {
        let pending = self.pending.remove(id)?;
        self.release(&pending);
        for segment in &pending.event.segments {
            self.by_sequence.remove(&segment.sequence);
        }
        let reports: Vec<&SegmentReport> = pending.reports.iter().flatten().collect();
        let delivered = reports
            .iter()
            .filter(|r| r.state == ReportState::Delivered)
            .count();
        let failed = reports.iter().find(|r| r.state == ReportState::Failed);
        let report_at = reports.iter().map(|r| r.received_at).max();
        let mut status =
            final_from_dispatch(&pending.event, FinalState::Delivered, None, None, now);
        status.segments_delivered = delivered as i32;
        status.report_at = report_at;
        status.within_seven_seconds =
            report_at.is_some_and(|at| within_seven_seconds(pending.event.accepted_at, at));
        if let Some(failed) = failed {
            status.status = FinalState::Failed;
            status.error_code = Some(failed.error_code);
            status.failure_category = Some(failure_category(
                u8::try_from(failed.error_code).unwrap_or(u8::MAX),
            ));
        }
        Some(self.finish_submitted(status, &pending.event))
    }

    fn finish(&mut self, status: FinalStatus) -> Decision {
        self.remember_final(&status.message_id, status.decided_at, &[]);
        Decision::Final(status)
    }

    fn finish_submitted(&mut self, status: FinalStatus, event: &DispatchEvent) -> Decision {
        let sequences: Vec<SequenceTriple> = event.segments.iter().map(|s| s.sequence).collect();
        self.remember_final(&status.message_id, status.decided_at, &sequences);
        Decision::Final(status)
    }

    /// Times out what waited too long: messages past their validity become
    /// UNKNOWN, reports held past the hold time are given up as unmatched,
    /// and finalized ids past their memory are forgotten.
    pub fn expire(&mut self, now: Millis) -> Vec<Decision> {
        let validity = self.limits.validity_ms;
        let overdue: Vec<String> = self
            .by_acceptance
            .iter()
            .take_while(|(accepted_at, _)| now - accepted_at > validity)
            .map(|(_, id)| id.clone())
            .collect();
        let mut decisions = Vec::new();
        for id in overdue {
            if let Some(pending) = self.pending.remove(&id) {
                self.release(&pending);
                for segment in &pending.event.segments {
                    self.by_sequence.remove(&segment.sequence);
                }
                let mut status =
                    final_from_dispatch(&pending.event, FinalState::Unknown, None, None, now);
                status.segments_delivered = pending
                    .reports
                    .iter()
                    .flatten()
                    .filter(|r| r.state == ReportState::Delivered)
                    .count() as i32;
                status.within_seven_seconds = false;
                decisions.push(self.finish_submitted(status, &pending.event));
            }
        }

        let hold = self.limits.orphan_hold_ms;
        let mut released = Vec::new();
        let offsets = &mut self.held;
        self.orphans.retain(|_, held| {
            held.retain(|o| {
                let keep = now - o.held_since <= hold;
                if !keep {
                    offsets.release(&o.at);
                    released.push(Decision::Unmatched {
                        report: o.report.clone(),
                        at: o.at.clone(),
                    });
                }
                keep
            });
            !held.is_empty()
        });
        decisions.extend(released);

        self.finals.expire(now, self.limits.finalized_memory_ms);
        decisions
    }

    /// The offset that may be committed for each (topic, partition) fed so
    /// far: the next offset to read, held back to the earliest record whose
    /// effect is still only in memory.
    pub fn safe_offsets(&self) -> BTreeMap<(String, i32), i64> {
        let mut safe = self.next_offsets.clone();
        for ((topic, partition), next) in safe.iter_mut() {
            if let Some(held) = self.held.earliest(topic, *partition) {
                *next = (*next).min(held);
            }
        }
        safe
    }
}

fn final_from_dispatch(
    event: &DispatchEvent,
    status: FinalState,
    failure_category: Option<FailureCategory>,
    refusal_reason: Option<RefusalReason>,
    now: Millis,
) -> FinalStatus {
    let submitted_at = event.segments.iter().map(|s| s.submitted_at).min();
    let gateway_response_at = event.segments.iter().filter_map(|s| s.response_at).max();
    FinalStatus {
        message_id: event.message_id.clone(),
        request_id: event.request_id.clone(),
        phone: event.phone.clone(),
        kind: event.kind,
        status,
        failure_category,
        error_code: None,
        refusal_reason,
        billed_segments: event.billed_segments,
        segments_delivered: 0,
        accepted_at: event.accepted_at,
        submitted_at,
        gateway_response_at,
        report_at: None,
        decided_at: now,
        // A refusal is the status returned to the platform: timely if decided in time.
        within_seven_seconds: within_seven_seconds(event.accepted_at, event.dispatched_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sms_core::events::{MessageKind, SubmittedSegment};

    const T0: Millis = 1_764_720_000_000;

    fn at(topic: &str, offset: i64) -> Position {
        Position {
            topic: topic.into(),
            partition: 0,
            offset,
        }
    }

    fn seq(counter: u32) -> SequenceTriple {
        SequenceTriple::new(3_075_512_345, 1_203_190_405, counter)
    }

    fn submitted(id: &str, counters: &[u32]) -> DispatchEvent {
        DispatchEvent {
            message_id: id.into(),
            request_id: format!("r-{id}"),
            phone: "8613012345678".into(),
            kind: MessageKind::Notice,
            outcome: DispatchOutcome::Submitted,
            reason: None,
            detail: None,
            gateway_result: None,
            segments: counters
                .iter()
                .enumerate()
                .map(|(i, c)| SubmittedSegment {
                    index: i as i32 + 1,
                    sequence: seq(*c),
                    submitted_at: T0 + 100,
                    response_at: Some(T0 + 110),
                    result: 0,
                })
                .collect(),
            billed_segments: counters.len() as i32,
            attempt: 0,
            accepted_at: T0,
            dispatched_at: T0 + 110,
            not_before: None,
        }
    }

    fn report(counter: u32, state: ReportState, code: i32, received_at: Millis) -> CarrierReport {
        CarrierReport {
            submit_sequence: seq(counter),
            report_sequence: SequenceTriple::new(107_551, 1_203_190_406, counter),
            phone: "8613012345678".into(),
            report_type: 0,
            state,
            error_code: code,
            received_at,
        }
    }

    fn finals(decisions: Vec<Decision>) -> Vec<FinalStatus> {
        decisions
            .into_iter()
            .filter_map(|d| match d {
                Decision::Final(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn delivered_when_every_segment_is_delivered_with_the_timings() {
        let mut c = Correlator::new(Limits::default());
        assert!(c
            .on_dispatch(submitted("m1", &[1, 2]), at("d", 0), T0 + 120)
            .is_empty());
        assert!(c
            .on_report(
                report(1, ReportState::Delivered, 0, T0 + 2_000),
                at("r", 0),
                T0
            )
            .is_empty());
        // Not final while a segment is missing: the offsets hold back.
        assert_eq!(c.safe_offsets()[&("d".to_string(), 0)], 0);
        assert_eq!(c.safe_offsets()[&("r".to_string(), 0)], 0);
        let out = finals(c.on_report(
            report(2, ReportState::Delivered, 0, T0 + 6_000),
            at("r", 1),
            T0,
        ));
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!(s.status, FinalState::Delivered);
        assert_eq!(s.segments_delivered, 2);
        assert_eq!(s.submitted_at, Some(T0 + 100));
        assert_eq!(s.gateway_response_at, Some(T0 + 110));
        assert_eq!(s.report_at, Some(T0 + 6_000));
        assert!(s.within_seven_seconds);
        assert_eq!(c.safe_offsets()[&("d".to_string(), 0)], 1);
        assert_eq!(c.safe_offsets()[&("r".to_string(), 0)], 2);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn failed_with_the_carrier_code_and_category_and_late_is_not_timely() {
        let mut c = Correlator::new(Limits::default());
        c.on_dispatch(submitted("m1", &[1]), at("d", 0), T0);
        let out = finals(c.on_report(
            report(1, ReportState::Failed, 25, T0 + 7_001),
            at("r", 0),
            T0,
        ));
        assert_eq!(out[0].status, FinalState::Failed);
        assert_eq!(out[0].error_code, Some(25));
        assert_eq!(out[0].failure_category, Some(FailureCategory::PoweredOff));
        assert!(!out[0].within_seven_seconds);
    }

    #[test]
    fn waiting_is_not_final_and_resent_reports_change_nothing() {
        let mut c = Correlator::new(Limits::default());
        c.on_dispatch(submitted("m1", &[1]), at("d", 0), T0);
        assert!(c
            .on_report(report(1, ReportState::Waiting, 0, T0 + 500), at("r", 0), T0)
            .is_empty());
        assert_eq!(
            finals(c.on_report(
                report(1, ReportState::Delivered, 0, T0 + 900),
                at("r", 1),
                T0
            ))
            .len(),
            1
        );
        // The same report again: already final, reported as such, not decided twice.
        let again = c.on_report(
            report(1, ReportState::Delivered, 0, T0 + 900),
            at("r", 2),
            T0,
        );
        assert!(
            matches!(again.as_slice(), [Decision::AfterFinal { message_id, .. }] if message_id == "m1")
        );
        assert_eq!(c.orphans(), 0);
    }

    #[test]
    fn reports_before_their_dispatch_event_are_held_then_applied() {
        let mut c = Correlator::new(Limits::default());
        assert!(c
            .on_report(
                report(7, ReportState::Delivered, 0, T0 + 300),
                at("r", 0),
                T0
            )
            .is_empty());
        assert_eq!(c.orphans(), 1);
        assert_eq!(
            c.safe_offsets()[&("r".to_string(), 0)],
            0,
            "a held report is not committed past"
        );
        let out = finals(c.on_dispatch(submitted("m7", &[7]), at("d", 0), T0 + 400));
        assert_eq!(out[0].status, FinalState::Delivered);
        assert_eq!(c.orphans(), 0);
        assert_eq!(c.safe_offsets()[&("r".to_string(), 0)], 1);
    }

    #[test]
    fn unmatched_reports_are_given_up_after_the_hold() {
        let limits = Limits {
            orphan_hold_ms: 1_000,
            ..Limits::default()
        };
        let mut c = Correlator::new(limits);
        c.on_report(report(9, ReportState::Delivered, 0, T0), at("r", 5), T0);
        assert!(c.expire(T0 + 500).is_empty());
        let out = c.expire(T0 + 1_001);
        assert!(matches!(out.as_slice(), [Decision::Unmatched { .. }]));
        assert_eq!(c.safe_offsets()[&("r".to_string(), 0)], 6);
    }

    #[test]
    fn a_duplicate_refusal_leaves_the_original_to_decide() {
        let mut c = Correlator::new(Limits::default());
        let original = submitted("m1", &[7]);
        assert!(c.on_dispatch(original, at("d", 0), T0).is_empty());
        let mut copy = submitted("m1", &[]);
        copy.outcome = DispatchOutcome::Refused;
        copy.reason = Some(RefusalReason::Duplicate);
        assert!(c.on_dispatch(copy, at("d", 1), T0 + 10).is_empty());
        let out = finals(c.on_report(
            report(7, ReportState::Delivered, 0, T0 + 100),
            at("r", 0),
            T0 + 100,
        ));
        assert_eq!(out[0].status, FinalState::Delivered);
    }

    #[test]
    fn refusals_and_gateway_failures_are_final_at_once() {
        let mut c = Correlator::new(Limits::default());
        let mut refused = submitted("m1", &[]);
        refused.outcome = DispatchOutcome::Refused;
        refused.reason = Some(RefusalReason::NotSubscribed);
        let out = finals(c.on_dispatch(refused, at("d", 0), T0 + 50));
        assert_eq!(out[0].status, FinalState::Rejected);
        assert_eq!(out[0].refusal_reason, Some(RefusalReason::NotSubscribed));
        assert_eq!(out[0].billed_segments, 0);

        let mut expired = submitted("m2", &[]);
        expired.outcome = DispatchOutcome::Refused;
        expired.reason = Some(RefusalReason::Expired);
        assert_eq!(
            finals(c.on_dispatch(expired, at("d", 1), T0))[0].status,
            FinalState::Expired
        );

        let mut failed = submitted("m3", &[1]);
        failed.outcome = DispatchOutcome::Failed;
        failed.reason = Some(RefusalReason::GatewayRefused);
        failed.gateway_result = Some(6);
        let out = finals(c.on_dispatch(failed, at("d", 2), T0));
        assert_eq!(out[0].status, FinalState::Failed);
        assert_eq!(out[0].error_code, Some(6));
        assert_eq!(out[0].failure_category, Some(FailureCategory::NoSuchNumber));

        let mut retrying = submitted("m4", &[2]);
        retrying.outcome = DispatchOutcome::Retrying;
        assert!(c.on_dispatch(retrying, at("d", 3), T0).is_empty());
        assert_eq!(c.safe_offsets()[&("d".to_string(), 0)], 4);
    }

    #[test]
    fn no_report_within_validity_is_unknown() {
        let limits = Limits {
            validity_ms: 10_000,
            ..Limits::default()
        };
        let mut c = Correlator::new(limits);
        c.on_dispatch(submitted("m1", &[1]), at("d", 0), T0);
        assert!(c.expire(T0 + 9_000).is_empty());
        let out = finals(c.expire(T0 + 10_001));
        assert_eq!(out[0].status, FinalState::Unknown);
        assert!(!out[0].within_seven_seconds);
        // A report after the verdict does not reopen it.
        let late = c.on_report(
            report(1, ReportState::Delivered, 0, T0 + 11_000),
            at("r", 0),
            T0,
        );
        assert!(matches!(late.as_slice(), [Decision::AfterFinal { .. }]));
    }

    #[test]
    fn a_replayed_dispatch_event_of_a_final_message_is_skipped() {
        let mut c = Correlator::new(Limits::default());
        c.mark_finalized(message_key("m1"), T0);
        assert!(c
            .on_dispatch(submitted("m1", &[1]), at("d", 0), T0)
            .is_empty());
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn final_ids_are_remembered_for_the_memory_and_no_longer() {
        let limits = Limits {
            finalized_memory_ms: 3_600_000,
            ..Limits::default()
        };
        let mut c = Correlator::new(limits);
        let id = "6d1c5f0e-2b7a-4c8e-9a51-121231100000";
        c.on_dispatch(submitted(id, &[1]), at("d", 0), T0);
        c.on_report(
            report(1, ReportState::Delivered, 0, T0 + 900),
            at("r", 0),
            T0 + 1_000,
        );
        assert!(c.is_finalized(id));
        c.expire(T0 + 1_000 + 3_600_000);
        assert!(c.is_finalized(id), "kept for the whole memory");
        // The next pass over the ids, a minute later, forgets it.
        c.expire(T0 + 1_000 + 3_600_000 + SWEEP_INTERVAL_MS + 1_000);
        assert!(!c.is_finalized(id));
        assert_eq!(c.finalized(), 0);
        // A replay of its dispatch event now starts it over.
        c.on_dispatch(submitted(id, &[1]), at("d", 0), T0 + 7_300_000);
        assert_eq!(c.pending(), 1);
    }

    #[test]
    fn late_reports_are_told_by_the_most_recent_sequences_only() {
        let limits = Limits {
            final_sequences: 2,
            orphan_hold_ms: 1_000,
            ..Limits::default()
        };
        let mut c = Correlator::new(limits);
        for (n, id) in ["m1", "m2", "m3"].into_iter().enumerate() {
            let counter = n as u32 + 1;
            let offset = n as i64;
            c.on_dispatch(submitted(id, &[counter]), at("d", offset), T0);
            c.on_report(
                report(counter, ReportState::Delivered, 0, T0 + 500),
                at("r", offset),
                T0,
            );
        }
        // m3's and m2's sequences are remembered: a resent report is after-final.
        let resent = c.on_report(
            report(3, ReportState::Delivered, 0, T0 + 900),
            at("r", 3),
            T0,
        );
        assert!(
            matches!(resent.as_slice(), [Decision::AfterFinal { message_id, .. }] if message_id == "m3")
        );
        // m1's sequence was forgotten: its late report is held, then given up
        // as unmatched; m1 stays final and is not decided again.
        assert!(c
            .on_report(
                report(1, ReportState::Delivered, 0, T0 + 900),
                at("r", 4),
                T0
            )
            .is_empty());
        let given_up = c.expire(T0 + 1_001);
        assert!(matches!(given_up.as_slice(), [Decision::Unmatched { .. }]));
        assert!(c.is_finalized("m1"));
    }

    /// The committable offsets found by a pass over everything held: what
    /// the index must agree with.
    fn scanned_safe_offsets(c: &Correlator) -> BTreeMap<(String, i32), i64> {
        let mut safe = c.next_offsets.clone();
        let held = c
            .pending
            .values()
            .flat_map(|p| std::iter::once(&p.at).chain(p.reports.iter().flatten().map(|r| &r.at)))
            .chain(c.orphans.values().flatten().map(|o| &o.at));
        for at in held {
            if let Some(next) = safe.get_mut(&(at.topic.clone(), at.partition)) {
                *next = (*next).min(at.offset);
            }
        }
        safe
    }

    #[derive(Debug, Clone)]
    enum Step {
        Dispatch(u32),
        Report {
            message: u32,
            segment: u32,
            waiting: bool,
            earlier_ms: i64,
        },
        Tick(i64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..30).prop_map(Step::Dispatch),
            (0u32..30, 0u32..3, prop::bool::weighted(0.1), 0i64..50).prop_map(
                |(message, segment, waiting, earlier_ms)| Step::Report {
                    message,
                    segment,
                    waiting,
                    earlier_ms,
                }
            ),
            (1i64..100).prop_map(Step::Tick),
        ]
    }

    proptest::proptest! {
        /// Messages of one to three segments dispatched (some twice),
        /// reports in any order (before their dispatch event, resent,
        /// WAITING, earlier than the one kept), and time passing far enough
        /// for messages and held reports to expire: after every step the
        /// committable offsets and the oldest pending message are those a
        /// pass over everything held gives.
        #[test]
        fn the_indexes_agree_with_a_pass_over_everything_held(
            steps in proptest::collection::vec(step(), 1..300)
        ) {
            let limits = Limits {
                validity_ms: 400,
                orphan_hold_ms: 150,
                finalized_memory_ms: 1_000,
                final_sequences: 8,
            };
            let mut c = Correlator::new(limits);
            let mut now = T0;
            let mut offsets: HashMap<(&str, i32), i64> = HashMap::new();
            let mut next = |topic: &'static str, partition: i32| {
                let offset = offsets.entry((topic, partition)).or_insert(0);
                *offset += 1;
                Position {
                    topic: topic.into(),
                    partition,
                    offset: *offset - 1,
                }
            };
            for step in steps {
                match step {
                    Step::Dispatch(m) => {
                        let counters = [m * 4, m * 4 + 1, m * 4 + 2];
                        let mut event =
                            submitted(&format!("m{m}"), &counters[..(m % 3 + 1) as usize]);
                        event.accepted_at = now;
                        c.on_dispatch(event, next("d", (m % 2) as i32), now);
                    }
                    Step::Report { message, segment, waiting, earlier_ms } => {
                        let state = if waiting {
                            ReportState::Waiting
                        } else {
                            ReportState::Delivered
                        };
                        let counter = message * 4 + segment % (message % 3 + 1);
                        c.on_report(
                            report(counter, state, 0, now - earlier_ms),
                            next("r", (message % 3) as i32),
                            now,
                        );
                    }
                    Step::Tick(ms) => {
                        now += ms;
                        c.expire(now);
                    }
                }
                proptest::prop_assert_eq!(c.safe_offsets(), scanned_safe_offsets(&c));
                proptest::prop_assert_eq!(c.by_acceptance.len(), c.pending.len());
                proptest::prop_assert_eq!(
                    c.oldest_pending_accepted_at(),
                    c.pending.values().map(|p| p.event.accepted_at).min()
                );
            }
        }
    }
}
