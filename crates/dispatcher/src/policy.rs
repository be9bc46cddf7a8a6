//! The policy every request passes before the gateway, and the per-partition ledger it reads: duplicates, frequency caps, spend.
//!
//! The checks run in this order; the first that fails is the refusal:
//!
//! 1. **duplicate**: the message id already has a final dispatch event
//!    (SUBMITTED, REFUSED, FAILED) or an event for this attempt or a later
//!    one. It runs first, not fifth as a plain list of rules would put it,
//!    because a message already decided must not be decided again: an
//!    expired copy of a submitted message would otherwise get a second,
//!    contradicting event;
//! 2. **expired**: `expires_at` has passed;
//! 3. **not Unicom**: the number is outside China Unicom's ranges
//!    (NOT_UNICOM), or not a normalised mainland mobile number at all
//!    (INVALID_REQUEST);
//! 4. **not subscribed**: the recipient's subscription record does not allow
//!    the kind (skipped for source SYSTEM and when not required);
//! 5. **content**: forbidden words, forbidden patterns (advertising markers),
//!    missing signature (CONTENT_POLICY, the matched rule in `detail`), or
//!    empty or over-long text and a bad extension (INVALID_REQUEST);
//! 6. **frequency cap**: per recipient and kind, counted from SUBMITTED events;
//! 7. **budget**: the partition's share of the monthly and contract ceilings.
//!
//! A later attempt of a message (`attempt` > 0, from the retry topic) is
//! checked for rules 1 and 2 only: the others admitted it on its first
//! attempt, which may have reached the carrier without an answer.
//!
//! The [`Ledger`] of a partition is rebuilt from that partition of
//! `sms.dispatch` on each assignment and fed every event written since, so
//! duplicates, caps and spend survive restarts and rebalances. Spend is
//! split by partition (each may spend `1/P` of what is left), which keeps
//! instances independent; the price of that is that one partition can be
//! out of budget while another still has some.

use std::collections::HashMap;

use chrono::{Datelike, FixedOffset, TimeZone, Utc};
use regex::Regex;
use sgip::text::BillingRule;
use smallvec::SmallVec;
use sms_core::events::{
    DispatchEvent, DispatchOutcome, MessageKind, Millis, RefusalReason, RequestSource, SmsRequest,
};
use sms_core::ids::message_key;
use sms_core::validate::{check_extension, check_times, NumberRanges, Refusal, Validator};
use sms_core::CoreError;
use uuid::Uuid;

use crate::config::{FrequencyCap, PolicySettings};

/// Micro-yuan: money as an integer.
type Micros = u64;

fn micros(yuan: f64) -> Micros {
    (yuan * 1_000_000.0).round().max(0.0) as Micros
}

/// What the policy decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; it will bill `billed` segments costing `cost` micro-yuan.
    Submit { billed: u32, cost: u64 },
    /// Refuse it, with the reason code and the rule that matched.
    Refuse {
        reason: RefusalReason,
        detail: String,
    },
}

impl Verdict {
    fn refuse(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self::Refuse {
            reason,
            detail: detail.into(),
        }
    }
}

/// The configured rules, shared by every partition.
#[derive(Debug)]
pub struct Policy {
    validator: Validator,
    patterns: Vec<(String, Regex)>,
    settings: PolicySettings,
    price: Micros,
}

impl Policy {
    /// Builds the rules; fails on a bad range file, text rules or pattern.
    pub fn new(settings: &PolicySettings) -> Result<Self, CoreError> {
        let ranges = NumberRanges::from_path(settings.number_ranges.as_deref())?;
        let validator = Validator::new(ranges, settings.text.clone())?;
        let patterns = settings
            .forbidden_patterns
            .iter()
            .map(|p| {
                Regex::new(p)
                    .map(|r| (p.clone(), r))
                    .map_err(|e| CoreError::Config {
                        key: "policy.forbidden_patterns".into(),
                        message: format!("{p}: {e}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            validator,
            patterns,
            price: micros(settings.budget.price_yuan),
            settings: settings.clone(),
        })
    }

    /// The billing rule in force.
    pub fn billing(&self) -> &BillingRule {
        &self.settings.billing
    }

    /// The segments the carrier bills for `text`.
    pub fn billed_segments(&self, text: &str) -> u32 {
        self.settings.billing.billed_segments(text).segments
    }

    /// Decides one request of a partition out of `partitions`, at `now`.
    /// `subscribed` answers whether the recipient's record allows the kind.
    pub fn decide(
        &self,
        request: &SmsRequest,
        now: Millis,
        dispatched: &Dispatched,
        ledger: &Ledger,
        partitions: usize,
        subscribed: impl FnOnce(&str, MessageKind) -> bool,
    ) -> Verdict {
        if let Some(detail) = dispatched.duplicate(request) {
            return Verdict::refuse(RefusalReason::Duplicate, detail);
        }
        if check_times(now, request.expires_at, None) == Err(Refusal::Expired) {
            return Verdict::refuse(RefusalReason::Expired, Refusal::Expired.code());
        }
        let billed = self.billed_segments(&request.text);
        let cost = u64::from(billed) * self.price;
        // A later attempt was admitted by the rules below on its first one,
        // and that attempt may have reached the carrier unanswered: judging
        // it again (a cap filled meanwhile by another message, say) could
        // call a message refused that the recipient already has.
        if request.attempt > 0 {
            return Verdict::Submit { billed, cost };
        }
        match self.validator.phone(&request.phone) {
            Ok(phone) if phone == request.phone => {}
            Ok(_) => {
                return Verdict::refuse(RefusalReason::InvalidRequest, "number_not_normalised")
            }
            Err(refusal) => return Verdict::refuse(refusal.reason(), refusal.code()),
        }
        let checked = request.source == RequestSource::System
            || !self.settings.require_subscription
            || subscribed(&request.phone, request.kind);
        if !checked {
            return Verdict::refuse(RefusalReason::NotSubscribed, request.kind.as_str());
        }
        if let Some(refusal) = self.content(request) {
            return refusal;
        }
        if let Some(cap) = ledger.capped(request, now, self.settings.caps(request.kind)) {
            return Verdict::refuse(
                RefusalReason::FrequencyCap,
                format!("at most {} in {} ms", cap.max, cap.window_ms),
            );
        }
        if let Some(ceiling) = ledger.over_budget(now, cost, &self.settings, partitions) {
            return Verdict::refuse(RefusalReason::BudgetExhausted, ceiling);
        }
        Verdict::Submit { billed, cost }
    }

    fn content(&self, request: &SmsRequest) -> Option<Verdict> {
        let text = match self.validator.text(&request.text) {
            Ok(text) => text,
            Err(refusal) => {
                let detail = match &refusal {
                    Refusal::ForbiddenContent { word } => format!("forbidden_word: {word}"),
                    other => other.code().to_string(),
                };
                return Some(Verdict::refuse(refusal.reason(), detail));
            }
        };
        if text != request.text {
            return Some(Verdict::refuse(
                RefusalReason::ContentPolicy,
                "missing_signature",
            ));
        }
        if let Some((pattern, _)) = self.patterns.iter().find(|(_, r)| r.is_match(&text)) {
            return Some(Verdict::refuse(
                RefusalReason::ContentPolicy,
                format!("forbidden_pattern: {pattern}"),
            ));
        }
        if let Some(extension) = &request.sp_extension {
            if let Err(refusal) = check_extension(extension) {
                return Some(Verdict::refuse(refusal.reason(), refusal.code()));
            }
        }
        None
    }

    /// The price of one billed segment, in micro-yuan.
    pub fn price(&self) -> u64 {
        self.price
    }

    /// How much of its spending allowance a partition has used at `now`:
    /// this month's spend (with what is at the gateway) over the partition's
    /// part of the tighter ceiling, contract or monthly. 1.0 or more means
    /// the partition refuses with BUDGET_EXHAUSTED.
    pub fn budget_used(&self, ledger: &Ledger, now: Millis, partitions: usize) -> f64 {
        let partitions = partitions.max(1) as u64;
        let spend = ledger.month_spend(now) + ledger.reserved;
        let budget = &self.settings.budget;
        let mut allowance = micros(budget.contract_yuan - budget.contract_spent_yuan) / partitions;
        if budget.monthly_yuan > 0.0 {
            allowance = allowance.min(micros(budget.monthly_yuan) / partitions);
        }
        if allowance == 0 {
            return 1.0;
        }
        spend as f64 / allowance as f64
    }
}

/// What is known of one message id, in 8 bytes: the ledger holds every
/// message of the duplicate window.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The second of its latest event, rounded up (so that it is never
    /// forgotten early).
    second: u32,
    /// Its highest attempt (attempts past 255 count as 255).
    attempt: u8,
    terminal: bool,
}

impl Seen {
    fn second(at: Millis) -> u32 {
        u32::try_from(at.div_euclid(1000) + 1).unwrap_or(0)
    }

    /// Takes in a later (or replayed) event of the same message.
    fn absorb(&mut self, event: Seen) {
        self.attempt = self.attempt.max(event.attempt);
        self.terminal |= event.terminal;
        self.second = self.second.max(event.second);
    }

    fn attempt(attempt: i32) -> u8 {
        u8::try_from(attempt.max(0)).unwrap_or(u8::MAX)
    }
}

/// A recipient and a kind as one number: the phone's digits (E.164, at most
/// 15, so under 2^50), their count (a leading zero counts) and the kind, in
/// 56 bits. A phone that is not all digits
/// (never submitted: the policy refuses it first) is hashed into the keys
/// with the top bit set, apart from every numeric one.
fn recipient_key(phone: &str, kind: MessageKind) -> u64 {
    let kind = match kind {
        MessageKind::VerificationCode => 0,
        MessageKind::Notice => 1,
        MessageKind::Reminder => 2,
    };
    let digits =
        !phone.is_empty() && phone.len() <= 15 && phone.bytes().all(|b| b.is_ascii_digit());
    match phone.parse::<u64>() {
        Ok(number) if digits => number << 6 | (phone.len() as u64) << 2 | kind,
        _ => {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(phone, &mut hasher);
            (std::hash::Hasher::finish(&hasher) << 2 | kind) | 1 << 63
        }
    }
}

/// Every message id dispatched within the duplicate window, for the
/// duplicate check, by its 16-byte key: about 30 bytes a message with the
/// table's spare room.
///
/// One table serves every partition an instance holds (a message id belongs
/// to one partition, so nothing is confused): one table per partition would
/// each round its size up to a power of two on its own. Ids of a partition
/// taken away stay until they are older than the window; they are facts
/// read from `sms.dispatch`, and when the partition comes back its rebuild
/// only adds to them.
///
/// The table is split in [`Dispatched::SHARDS`] by a hash of the key, so
/// that it grows a sixteenth at a time: a table of millions of ids that
/// doubled in one piece would hold the old and the new copy at once (about
/// 100 MB more at 2 million ids) and stop the dispatcher while it moved
/// them.
#[derive(Debug)]
pub struct Dispatched {
    shards: Vec<HashMap<Uuid, Seen>>,
}

impl Default for Dispatched {
    fn default() -> Self {
        Self {
            shards: (0..Self::SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

impl Dispatched {
    const SHARD_BITS: u32 = 4;
    const SHARDS: usize = 1 << Self::SHARD_BITS;

    /// The shard of a key, from all of its bits (the leading bytes of a
    /// time-ordered UUID hardly vary).
    fn shard(key: &Uuid) -> usize {
        let bits = key.as_u128();
        let folded = (bits as u64) ^ ((bits >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::SHARD_BITS)) as usize
    }

    /// Notes an event written to (or read back from) `sms.dispatch`.
    pub fn record(&mut self, event: &DispatchEvent) {
        if event.reason == Some(RefusalReason::Duplicate) {
            return;
        }
        let terminal = event.outcome != DispatchOutcome::Retrying;
        self.note(
            message_key(&event.message_id),
            Seen {
                attempt: Seen::attempt(event.attempt),
                terminal,
                second: Seen::second(event.dispatched_at),
            },
        );
    }

    fn note(&mut self, key: Uuid, event: Seen) {
        self.shards[Self::shard(&key)]
            .entry(key)
            .or_insert(event)
            .absorb(event);
    }

    /// Takes in what a rebuild read.
    pub fn merge(&mut self, other: Dispatched) {
        for (mine, theirs) in self.shards.iter_mut().zip(other.shards) {
            if mine.is_empty() {
                *mine = theirs;
                continue;
            }
            for (key, event) in theirs {
                mine.entry(key).or_insert(event).absorb(event);
            }
        }
    }

    fn duplicate(&self, request: &SmsRequest) -> Option<String> {
        let key = message_key(&request.message_id);
        let seen = self.shards[Self::shard(&key)].get(&key)?;
        if seen.terminal {
            Some("already dispatched".into())
        } else if i32::from(seen.attempt) >= request.attempt {
            Some(format!("attempt {} already made", request.attempt))
        } else {
            None
        }
    }

    /// Forgets message ids older than `window_ms`.
    pub fn prune(&mut self, now: Millis, window_ms: i64) {
        let since = now - window_ms;
        for shard in &mut self.shards {
            shard.retain(|_, seen| i64::from(seen.second) * 1000 > since);
        }
    }

    /// Message ids remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }
}

/// The caps and spend of one request partition, rebuilt from `sms.dispatch`.
///
/// It holds the submit times of every recipient and kind within the window:
/// about 40 bytes a recipient and 8 a time with the table's spare room.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Submit times by [`recipient_key`], oldest first; most recipients get
    /// one or two messages a window, which are held in place.
    sent: HashMap<u64, SmallVec<[Millis; 2]>>,
    month_start: Millis,
    month_spend: Micros,
    /// Cost of messages decided and not yet answered.
    reserved: Micros,
}

/// The first millisecond of the calendar month of `now`, Beijing time.
pub fn month_start(now: Millis) -> Millis {
    let Some(beijing) = FixedOffset::east_opt(8 * 3600) else {
        return 0;
    };
    let local = Utc
        .timestamp_millis_opt(now)
        .single()
        .map(|t| t.with_timezone(&beijing));
    local
        .and_then(|t| {
            beijing
                .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                .single()
        })
        .map_or(0, |t| t.timestamp_millis())
}

impl Ledger {
    /// Notes an event written to (or read back from) `sms.dispatch`.
    pub fn record(&mut self, event: &DispatchEvent, price: u64) {
        if event.reason == Some(RefusalReason::Duplicate) {
            return;
        }
        if event.outcome == DispatchOutcome::Submitted {
            let times = self
                .sent
                .entry(recipient_key(&event.phone, event.kind))
                .or_default();
            // Events read back are in order; keep the times sorted anyway.
            let at = times.partition_point(|t| *t <= event.dispatched_at);
            times.insert(at, event.dispatched_at);
            self.roll_month(event.dispatched_at);
            if event.dispatched_at >= self.month_start {
                let billed = u64::try_from(event.billed_segments).unwrap_or(0);
                self.month_spend += billed * price;
            }
        }
    }

    fn roll_month(&mut self, now: Millis) {
        let start = month_start(now);
        if start > self.month_start {
            self.month_start = start;
            self.month_spend = 0;
        }
    }

    fn capped(
        &self,
        request: &SmsRequest,
        now: Millis,
        caps: &[FrequencyCap],
    ) -> Option<FrequencyCap> {
        let sent = self
            .sent
            .get(&recipient_key(&request.phone, request.kind))?;
        caps.iter().copied().find(|cap| {
            let since = now - cap.window_ms;
            let count = sent.iter().rev().take_while(|at| **at > since).count();
            count >= cap.max as usize
        })
    }

    fn over_budget(
        &self,
        now: Millis,
        cost: Micros,
        settings: &PolicySettings,
        partitions: usize,
    ) -> Option<String> {
        let partitions = partitions.max(1) as u64;
        let after = self.month_spend(now) + self.reserved + cost;
        let budget = &settings.budget;
        let contract_left = micros(budget.contract_yuan - budget.contract_spent_yuan);
        if after > contract_left / partitions {
            return Some("contract".into());
        }
        if budget.monthly_yuan > 0.0 && after > micros(budget.monthly_yuan) / partitions {
            return Some("monthly".into());
        }
        None
    }

    /// What this partition spent in the calendar month of `now`, in
    /// micro-yuan (nothing yet when `now` is in a month with no submission).
    pub fn month_spend(&self, now: Millis) -> u64 {
        if month_start(now) > self.month_start {
            0
        } else {
            self.month_spend
        }
    }

    /// Holds `cost` while a message is at the gateway.
    pub fn reserve(&mut self, cost: u64) {
        self.reserved += cost;
    }

    /// Releases what [`Ledger::reserve`] held.
    pub fn release(&mut self, cost: u64) {
        self.reserved = self.reserved.saturating_sub(cost);
    }

    /// Forgets submit times older than `window_ms`.
    pub fn prune(&mut self, now: Millis, window_ms: i64) {
        let since = now - window_ms;
        self.sent.retain(|_, times| {
            let old = times.partition_point(|at| *at <= since);
            if old > 0 {
                times.drain(..old);
            }
            !times.is_empty()
        });
    }

    /// Recipients with a submit in the window.
    pub fn recipients(&self) -> usize {
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicySettings;
    use sms_core::events::SequenceTriple;

    const NOW: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn request(id: &str, kind: MessageKind, text: &str) -> SmsRequest {
        SmsRequest {
            message_id: id.into(),
            request_id: format!("r-{id}"),
            client_id: "c".into(),
            phone: "8618612341234".into(),
            kind,
            text: text.into(),
            template_id: None,
            sp_extension: None,
            source: RequestSource::Http,
            accepted_at: NOW,
            expires_at: None,
            scheduled_at: None,
            attempt: 0,
            not_before: None,
        }
    }

    fn submitted(request: &SmsRequest, at: Millis) -> DispatchEvent {
        DispatchEvent {
            message_id: request.message_id.clone(),
            request_id: request.request_id.clone(),
            phone: request.phone.clone(),
            kind: request.kind,
            outcome: DispatchOutcome::Submitted,
            reason: None,
            detail: None,
            gateway_result: Some(0),
            segments: vec![sms_core::events::SubmittedSegment {
                index: 1,
                sequence: SequenceTriple::new(1, 2, 3),
                submitted_at: at,
                response_at: Some(at),
                result: 0,
            }],
            billed_segments: 1,
            attempt: request.attempt,
            accepted_at: request.accepted_at,
            dispatched_at: at,
            not_before: None,
        }
    }

    fn reason(verdict: Verdict) -> Option<RefusalReason> {
        match verdict {
            Verdict::Refuse { reason, .. } => Some(reason),
            Verdict::Submit { .. } => None,
        }
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let policy = Policy::new(&PolicySettings::default()).unwrap();
        let (dispatched, ledger) = (Dispatched::default(), Ledger::default());
        let yes = |_: &str, _: MessageKind| true;
        let ok = request(
            "a",
            MessageKind::Notice,
            "【交管12123】您的车辆年检即将到期",
        );
        assert!(matches!(
            policy.decide(&ok, NOW, &dispatched, &ledger, 1, yes),
            Verdict::Submit { billed: 1, .. }
        ));

        let mut expired = ok.clone();
        expired.expires_at = Some(NOW - 1);
        assert_eq!(
            reason(policy.decide(&expired, NOW, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::Expired)
        );

        let mut mobile = ok.clone();
        mobile.phone = "8613812341234".into();
        assert_eq!(
            reason(policy.decide(&mobile, NOW, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::NotUnicom)
        );
        mobile.phone = "12345".into();
        assert_eq!(
            reason(policy.decide(&mobile, NOW, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::InvalidRequest)
        );

        assert_eq!(
            reason(policy.decide(&ok, NOW, &dispatched, &ledger, 1, |_, _| false)),
            Some(RefusalReason::NotSubscribed)
        );
        let mut system = ok.clone();
        system.source = RequestSource::System;
        assert_eq!(
            reason(policy.decide(&system, NOW, &dispatched, &ledger, 1, |_, _| false)),
            None
        );

        let advert = request("b", MessageKind::Notice, "【交管12123】本店促销");
        match policy.decide(&advert, NOW, &dispatched, &ledger, 1, yes) {
            Verdict::Refuse { reason, detail } => {
                assert_eq!(reason, RefusalReason::ContentPolicy);
                assert_eq!(detail, "forbidden_word: 促销");
            }
            other => panic!("{other:?}"),
        }
        let marker = request("c", MessageKind::Notice, "【交管12123】新服务上线，回T退订");
        match policy.decide(&marker, NOW, &dispatched, &ledger, 1, yes) {
            Verdict::Refuse { reason, detail } => {
                assert_eq!(reason, RefusalReason::ContentPolicy);
                assert!(detail.starts_with("forbidden_pattern"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let unsigned = request("d", MessageKind::Notice, "没有签名");
        assert_eq!(
            reason(policy.decide(&unsigned, NOW, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::ContentPolicy)
        );
    }

    #[test]
    fn duplicates_caps_and_budget_come_from_the_ledger() {
        let policy = Policy::new(&PolicySettings::default()).unwrap();
        let (mut dispatched, mut ledger) = (Dispatched::default(), Ledger::default());
        let yes = |_: &str, _: MessageKind| true;
        let first = request(
            "otp-1",
            MessageKind::VerificationCode,
            "【交管12123】验证码 123456",
        );
        let event = submitted(&first, NOW);
        dispatched.record(&event);
        ledger.record(&event, policy.price());
        assert_eq!(
            reason(policy.decide(&first, NOW, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::Duplicate)
        );

        let second = request(
            "otp-2",
            MessageKind::VerificationCode,
            "【交管12123】验证码 654321",
        );
        assert_eq!(
            reason(policy.decide(&second, NOW + 30_000, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::FrequencyCap)
        );
        assert_eq!(
            reason(policy.decide(&second, NOW + 61_000, &dispatched, &ledger, 1, yes)),
            None
        );

        let mut retrying = submitted(&second, NOW);
        retrying.outcome = DispatchOutcome::Retrying;
        dispatched.record(&retrying);
        ledger.record(&retrying, policy.price());
        let mut again = second.clone();
        again.attempt = 1;
        assert_eq!(
            reason(policy.decide(&again, NOW + 61_000, &dispatched, &ledger, 1, yes)),
            None
        );
        assert_eq!(
            reason(policy.decide(&second, NOW + 61_000, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::Duplicate)
        );

        // A later attempt is not refused by a cap another message filled
        // since its first attempt (which may have reached the carrier), but
        // still by its expiry.
        let third = request(
            "otp-3",
            MessageKind::VerificationCode,
            "【交管12123】验证码 111111",
        );
        let event = submitted(&third, NOW + 62_000);
        dispatched.record(&event);
        ledger.record(&event, policy.price());
        assert_eq!(
            reason(policy.decide(&again, NOW + 63_000, &dispatched, &ledger, 1, yes)),
            None
        );
        let mut late = again.clone();
        late.expires_at = Some(NOW + 62_500);
        assert_eq!(
            reason(policy.decide(&late, NOW + 63_000, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::Expired)
        );

        let mut tight = PolicySettings::default();
        tight.budget.contract_yuan = 0.05;
        let poor = Policy::new(&tight).unwrap();
        let notice = request("n-1", MessageKind::Notice, "【交管12123】通知");
        assert_eq!(
            reason(poor.decide(
                &notice,
                NOW,
                &Dispatched::default(),
                &Ledger::default(),
                1,
                yes
            )),
            None
        );
        assert_eq!(
            reason(poor.decide(
                &notice,
                NOW,
                &Dispatched::default(),
                &Ledger::default(),
                2,
                yes
            )),
            Some(RefusalReason::BudgetExhausted)
        );
    }

    #[test]
    fn budget_used_is_the_partition_share_of_the_tighter_ceiling() {
        let mut settings = PolicySettings::default();
        settings.budget.contract_yuan = 1.0;
        let policy = Policy::new(&settings).unwrap();
        let (mut dispatched, mut ledger) = (Dispatched::default(), Ledger::default());
        let notice = request("n-2", MessageKind::Notice, "【交管12123】通知");
        let event = submitted(&notice, NOW);
        dispatched.record(&event);
        ledger.record(&event, policy.price());
        assert_eq!(ledger.month_spend(NOW), 41_000);

        // 0.041 of the 0.5 yuan each of two partitions may spend.
        let used = policy.budget_used(&ledger, NOW, 2);
        assert!((used - 0.082).abs() < 1e-9, "{used}");

        // A monthly ceiling of 0.1 yuan is tighter: 0.041 of 0.05.
        settings.budget.monthly_yuan = 0.1;
        let monthly = Policy::new(&settings).unwrap();
        let used = monthly.budget_used(&ledger, NOW, 2);
        assert!((used - 0.82).abs() < 1e-9, "{used}");

        // A new month starts from nothing; no allowance at all is used up.
        let next_month = NOW + 32 * 86_400_000;
        assert_eq!(monthly.budget_used(&ledger, next_month, 2), 0.0);
        settings.budget.contract_spent_yuan = 1.0;
        let spent = Policy::new(&settings).unwrap();
        assert_eq!(spent.budget_used(&Ledger::default(), NOW, 2), 1.0);
    }

    #[test]
    fn recipients_and_kinds_have_keys_of_their_own() {
        let phones = [
            "8618612341234",
            "08618612341234",
            "18612341234",
            "186123412340",
            "+8618612341234",
            "1234567890123456",
            "",
        ];
        let mut keys = std::collections::HashSet::new();
        for phone in phones {
            for kind in MessageKind::ALL {
                assert!(keys.insert(recipient_key(phone, kind)), "{phone} {kind:?}");
            }
        }
    }

    #[test]
    fn ids_and_submit_times_are_forgotten_past_the_window_only() {
        let policy = Policy::new(&PolicySettings::default()).unwrap();
        let (mut dispatched, mut ledger) = (Dispatched::default(), Ledger::default());
        let yes = |_: &str, _: MessageKind| true;
        let first = request(
            "6d1c5f0e-2b7a-4c8e-9a51-121231100000",
            MessageKind::VerificationCode,
            "【交管12123】验证码 123456",
        );
        let event = submitted(&first, NOW);
        dispatched.record(&event);
        ledger.record(&event, policy.price());
        let second = request(
            "otp-2",
            MessageKind::VerificationCode,
            "【交管12123】验证码 654321",
        );
        // The 60-second cap counts to the millisecond.
        assert_eq!(
            reason(policy.decide(&second, NOW + 59_999, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::FrequencyCap)
        );
        assert_eq!(
            reason(policy.decide(&second, NOW + 60_000, &dispatched, &ledger, 1, yes)),
            None
        );

        ledger.prune(NOW + 2_000, 2_000);
        dispatched.prune(NOW + 2_000, 2_000);
        assert_eq!(dispatched.len(), 1);
        assert_eq!(
            reason(policy.decide(&first, NOW + 2_000, &dispatched, &ledger, 1, yes)),
            Some(RefusalReason::Duplicate)
        );
        ledger.prune(NOW + 3_000, 2_000);
        dispatched.prune(NOW + 3_000, 2_000);
        assert!(dispatched.is_empty());
        assert_eq!(ledger.recipients(), 0);
    }

    #[test]
    fn months_start_in_beijing_time() {
        // 2025-12-31T16:00:00Z is 2026-01-01T00:00 in Beijing.
        assert_eq!(month_start(NOW), 1_767_196_800_000);
        let mut ledger = Ledger::default();
        ledger.prune(NOW, 1);
        assert_eq!(ledger.recipients(), 0);
    }

    #[test]
    fn ids_read_back_merge_with_what_is_known() {
        let notice = request("n-9", MessageKind::Notice, "【交管12123】通知");
        let mut retrying = submitted(&notice, NOW);
        retrying.outcome = DispatchOutcome::Retrying;
        let mut known = Dispatched::default();
        known.record(&retrying);
        let mut read = Dispatched::default();
        let mut done = submitted(&notice, NOW + 5_000);
        done.attempt = 1;
        read.record(&done);
        let mut again = notice.clone();
        again.attempt = 1;
        assert!(known.duplicate(&again).is_none());
        known.merge(read);
        assert_eq!(
            known.duplicate(&again).as_deref(),
            Some("already dispatched")
        );
        assert_eq!(known.len(), 1);
        // A refusal as a duplicate says nothing of the message.
        let mut copy = submitted(&request("n-10", MessageKind::Notice, "x"), NOW);
        copy.outcome = DispatchOutcome::Refused;
        copy.reason = Some(RefusalReason::Duplicate);
        known.record(&copy);
        assert_eq!(known.len(), 1);
    }

    #[test]
    fn time_ordered_ids_spread_over_every_shard() {
        // Version-7 UUIDs of one millisecond share their first six bytes.
        let mut dispatched = Dispatched::default();
        let mut ids = Vec::new();
        for n in 0..16_000u64 {
            let id = format!(
                "019a{:04x}-0b5e-7c3a-9{:03x}-{:012x}",
                n % 3,
                n % 0xfff,
                n.wrapping_mul(0x2545_f491_4f6c_dd1d) & 0xffff_ffff_ffff
            );
            let notice = request(&id, MessageKind::Notice, "【交管12123】通知");
            dispatched.record(&submitted(&notice, NOW));
            ids.push(notice);
        }
        assert_eq!(dispatched.len(), 16_000);
        for shard in &dispatched.shards {
            assert!((500..1_500).contains(&shard.len()), "{}", shard.len());
        }
        for notice in &ids {
            assert!(dispatched.duplicate(notice).is_some());
        }
        dispatched.prune(NOW + 2_000, 1_000);
        assert!(dispatched.is_empty());
    }
}
