//! Task, result and dead-letter records, and the per-task options.
//!
//! The records are protobuf messages of psrpc's own, stored by carriers as opaque bytes. They
//! are Rust-only (Go psrpc never reads durable queues). Their schema, for other readers:
//!
//! ```proto
//! message TaskEnvelope {
//!   string task_id = 1;            // TSK_…, or derived from the idempotency key
//!   string method = 2;
//!   bytes payload = 3;             // the request message, protobuf-encoded
//!   int64 enqueued_at = 4;         // Unix nanoseconds
//!   int64 deadline = 5;            // Unix nanoseconds, 0 = none
//!   uint32 max_attempts = 6;
//!   uint64 backoff_initial_ms = 7;
//!   uint64 backoff_max_ms = 8;
//!   uint64 result_ttl_ms = 9;
//!   bool no_dead_letter = 10;      // drop (keeping the error result) instead of dead-lettering
//!   map<string, string> metadata = 11;  // caller metadata, with the W3C trace context
//!   string idempotency_key = 12;
//! }
//! message TaskResult {
//!   string task_id = 1;
//!   optional bytes response = 2;   // set on success
//!   string error_code = 3;         // psrpc error code on failure
//!   string error_message = 4;
//!   uint32 attempts = 5;
//!   int64 finished_at = 6;         // Unix nanoseconds
//!   bool dead_lettered = 7;
//!   string dead_letter_reason = 8;
//!   string message_id = 9;         // the carrier's ID of the message that stored it
//! }
//! message DeadLetter {
//!   string task_id = 1;            // empty when the task did not decode
//!   string method = 2;
//!   bytes task = 3;                // the task as stored (a TaskEnvelope, or undecodable bytes)
//!   string reason = 4;             // see DeadLetterReason
//!   string error_code = 5;
//!   string error_message = 6;
//!   uint32 attempts = 7;
//!   int64 dead_at = 8;             // Unix nanoseconds
//!   string message_id = 9;         // the carrier's ID of the dead message
//! }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

/// Prefix of generated task IDs.
pub const TASK_PREFIX: &str = "TSK_";

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 64;

/// A task as stored by a carrier (see the module docs for the schema).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskEnvelope {
    /// The task ID.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The method to run.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The encoded request.
    #[prost(bytes = "bytes", tag = "3")]
    pub payload: Bytes,
    /// When it was enqueued, Unix nanoseconds.
    #[prost(int64, tag = "4")]
    pub enqueued_at: i64,
    /// Its deadline, Unix nanoseconds; 0 for none.
    #[prost(int64, tag = "5")]
    pub deadline: i64,
    /// Attempts before it is dead-lettered.
    #[prost(uint32, tag = "6")]
    pub max_attempts: u32,
    /// First retry delay, milliseconds.
    #[prost(uint64, tag = "7")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay, milliseconds.
    #[prost(uint64, tag = "8")]
    pub backoff_max_ms: u64,
    /// How long the result is kept, milliseconds.
    #[prost(uint64, tag = "9")]
    pub result_ttl_ms: u64,
    /// True to drop a failed task (keeping its error result) instead of dead-lettering it.
    #[prost(bool, tag = "10")]
    pub no_dead_letter: bool,
    /// Caller metadata, including the trace context.
    #[prost(map = "string, string", tag = "11")]
    pub metadata: HashMap<String, String>,
    /// The caller's idempotency key, if any.
    #[prost(string, tag = "12")]
    pub idempotency_key: String,
}

impl TaskEnvelope {
    /// The options the task was enqueued with.
    pub fn options(&self) -> TaskOptions {
        TaskOptions {
            max_attempts: self.max_attempts.max(1),
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            result_ttl: Duration::from_millis(self.result_ttl_ms.max(1)),
            dead_letter: !self.no_dead_letter,
        }
    }
}

/// The outcome of a task, stored for its result TTL.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskResult {
    /// The task ID.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The encoded response, on success.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub response: Option<Bytes>,
    /// The error code, on failure.
    #[prost(string, tag = "3")]
    pub error_code: String,
    /// The error message, on failure.
    #[prost(string, tag = "4")]
    pub error_message: String,
    /// Attempts made.
    #[prost(uint32, tag = "5")]
    pub attempts: u32,
    /// When it finished, Unix nanoseconds.
    #[prost(int64, tag = "6")]
    pub finished_at: i64,
    /// True if the task went to the dead-letter queue.
    #[prost(bool, tag = "7")]
    pub dead_lettered: bool,
    /// Why, when it did (a [`DeadLetterReason`] spelling).
    #[prost(string, tag = "8")]
    pub dead_letter_reason: String,
    /// The carrier's ID of the task message whose delivery stored this outcome (empty in
    /// records of older writers): a dead letter belongs to that message.
    #[prost(string, tag = "9")]
    pub message_id: String,
}

impl TaskResult {
    /// The outcome as a Rust result: the encoded response or the task's error.
    pub fn outcome(&self) -> Result<Bytes, crate::Error> {
        match &self.response {
            Some(bytes) => Ok(bytes.clone()),
            None => Err(crate::Error::new(
                crate::ErrorCode::from_wire(&self.error_code),
                self.error_message.clone(),
            )),
        }
    }
}

/// A task that failed for good, with why.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeadLetter {
    /// The task ID; empty if the task did not decode.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The method; empty if the task did not decode.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The task bytes as the carrier held them.
    #[prost(bytes = "bytes", tag = "3")]
    pub task: Bytes,
    /// Why it was dead-lettered (a [`DeadLetterReason`] spelling).
    #[prost(string, tag = "4")]
    pub reason: String,
    /// The last error's code.
    #[prost(string, tag = "5")]
    pub error_code: String,
    /// The last error's message.
    #[prost(string, tag = "6")]
    pub error_message: String,
    /// Attempts made.
    #[prost(uint32, tag = "7")]
    pub attempts: u32,
    /// When it was dead-lettered, Unix nanoseconds.
    #[prost(int64, tag = "8")]
    pub dead_at: i64,
    /// The carrier's ID of the message that died.
    #[prost(string, tag = "9")]
    pub message_id: String,
}

impl DeadLetter {
    /// The reason, parsed.
    pub fn reason(&self) -> DeadLetterReason {
        DeadLetterReason::parse(&self.reason)
    }
}

/// Why a task was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// Every attempt failed.
    AttemptsExhausted,
    /// The handler returned a permanent error (invalid argument, unimplemented, …).
    PermanentError,
    /// The deadline passed before the task could complete.
    DeadlineExceeded,
    /// The task bytes are not a task envelope.
    UndecodableTask,
    /// The request payload does not decode as the method's request type.
    UndecodablePayload,
    /// No handler is registered for the method.
    UnknownMethod,
    /// A reason this version does not know.
    Other,
}

impl DeadLetterReason {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::AttemptsExhausted => "attempts_exhausted",
            DeadLetterReason::PermanentError => "permanent_error",
            DeadLetterReason::DeadlineExceeded => "deadline_exceeded",
            DeadLetterReason::UndecodableTask => "undecodable_task",
            DeadLetterReason::UndecodablePayload => "undecodable_payload",
            DeadLetterReason::UnknownMethod => "unknown_method",
            DeadLetterReason::Other => "other",
        }
    }

    /// Parses a stored spelling.
    pub fn parse(s: &str) -> Self {
        [
            DeadLetterReason::AttemptsExhausted,
            DeadLetterReason::PermanentError,
            DeadLetterReason::DeadlineExceeded,
            DeadLetterReason::UndecodableTask,
            DeadLetterReason::UndecodablePayload,
            DeadLetterReason::UnknownMethod,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .unwrap_or(DeadLetterReason::Other)
    }
}

/// Retry, result and dead-letter settings of a task (a durable method's defaults, overridable
/// per enqueue).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskOptions {
    /// Attempts before the task is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// First retry delay; later ones double up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long the result is kept.
    pub result_ttl: Duration,
    /// Dead-letter failed tasks (true) or only store their error result (false).
    pub dead_letter: bool,
}

impl TaskOptions {
    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets [`backoff_initial`](Self::backoff_initial).
    pub fn backoff_initial(mut self, backoff_initial: Duration) -> Self {
        self.backoff_initial = backoff_initial;
        self
    }

    /// Sets [`backoff_max`](Self::backoff_max).
    pub fn backoff_max(mut self, backoff_max: Duration) -> Self {
        self.backoff_max = backoff_max;
        self
    }

    /// Sets [`result_ttl`](Self::result_ttl).
    pub fn result_ttl(mut self, result_ttl: Duration) -> Self {
        self.result_ttl = result_ttl;
        self
    }

    /// Sets [`dead_letter`](Self::dead_letter).
    pub fn dead_letter(mut self, dead_letter: bool) -> Self {
        self.dead_letter = dead_letter;
        self
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_attempts: 5,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            result_ttl: Duration::from_secs(24 * 3600),
            dead_letter: true,
        }
    }
}

/// The delay before retry number `attempt` (1 = the retry after the first failure):
/// exponential from `initial`, capped at `max`, with "equal jitter" (half fixed, half random) so
/// tasks failing together do not retry together.
///
/// ```
/// use std::time::Duration;
/// let d = psrpc::durable::backoff_delay(3, Duration::from_millis(100), Duration::from_secs(1));
/// assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
/// ```
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = initial.saturating_mul(1u32 << exp).min(max.max(initial));
    let half = full / 2;
    let jitter_nanos = fastrand::u64(0..=half.as_nanos().min(u64::MAX as u128) as u64);
    half + Duration::from_nanos(jitter_nanos)
}

/// A new random task ID.
pub(crate) fn new_task_id() -> String {
    crate::id::new_id(TASK_PREFIX)
}

/// The task ID an idempotency key maps to: the same key always names the same task, so a
/// repeated enqueue finds the first one (and its result, while it is kept).
///
/// ```
/// let id = psrpc::durable::task_id_for_key("order-42").unwrap();
/// assert_eq!(id, psrpc::durable::task_id_for_key("order-42").unwrap());
/// assert!(psrpc::durable::task_id_for_key("").is_none());
/// ```
pub fn task_id_for_key(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return None;
    }
    // Hex keeps the ID within every carrier's key alphabet (NATS KV keys, Redis keys).
    let mut id = String::with_capacity(5 + key.len() * 2);
    id.push_str("TSK_k");
    for b in key.bytes() {
        id.push_str(&format!("{b:02x}"));
    }
    Some(id)
}
