//! Faults the simulator can be told to show, at start or at run time over HTTP.

use serde::{Deserialize, Serialize};

/// The faults in force. All off by default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Answer every Bind with Result 1 and close.
    pub refuse_binds: bool,
    /// Read Submits and never answer them (nothing is accepted or counted
    /// as accepted; they count as `submits_unanswered`).
    pub stop_answering: bool,
    /// Extra wait before every Submit_Resp, in milliseconds.
    pub slow_response_ms: u64,
    /// Accept every n-th Submit and then drop its connection before
    /// answering it (0 off): the SP cannot know it was accepted.
    pub drop_every_n_submits: u64,
    /// Extra wait before every Report, in milliseconds.
    pub report_extra_delay_ms: u64,
    /// Send every Report twice (the copy under a new header triple).
    pub duplicate_reports: bool,
}
