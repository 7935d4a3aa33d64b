//! Node, request and stream IDs: a prefix plus 12 random characters from `[A-Za-z0-9]`.
//!
//! Internal; the generators are public as [`crate::wire`] re-exports, for code that builds wire
//! messages by hand (tests, tools, bus implementations).

/// Length of the random part of every ID.
const ID_RANDOM_LEN: usize = 12;

/// Prefix of client IDs.
const CLIENT_PREFIX: &str = "CLI_";
/// Prefix of server IDs.
const SERVER_PREFIX: &str = "SRV_";
/// Prefix of request IDs.
const REQUEST_PREFIX: &str = "REQ_";
/// Prefix of stream IDs.
const STREAM_PREFIX: &str = "STR_";

/// A new ID with the given prefix.
///
/// ```
/// let id = psrpc::wire::new_id("REQ_");
/// assert!(id.starts_with("REQ_") && id.len() == 16);
/// assert!(id[4..].chars().all(|c| c.is_ascii_alphanumeric()));
/// ```
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + ID_RANDOM_LEN);
    id.push_str(prefix);
    // fastrand's thread-local generator: no lock and no syscall per ID. IDs need uniqueness, not
    // unpredictability: nothing in psrpc treats an ID as a secret.
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(ID_RANDOM_LEN));
    id
}

/// A new client ID (`CLI_…`).
pub fn new_client_id() -> String {
    new_id(CLIENT_PREFIX)
}

/// A new server ID (`SRV_…`).
pub fn new_server_id() -> String {
    new_id(SERVER_PREFIX)
}

/// A new request ID (`REQ_…`).
pub fn new_request_id() -> String {
    new_id(REQUEST_PREFIX)
}

/// A new stream ID (`STR_…`).
pub fn new_stream_id() -> String {
    new_id(STREAM_PREFIX)
}
