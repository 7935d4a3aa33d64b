//! Typed errors that cross the wire as `Response.code`, `error` and `error_details` (docs/wire.md §8).

use std::fmt;

use prost::Message;
use std::str::FromStr;
use std::sync::Arc;

/// The error codes of psrpc, spelled on the wire as lowercase strings.
///
/// `Copy`, like tonic's `Code`. A code string this version does not know parses as
/// [`ErrorCode::Other`]; the [`Error`] carrying it keeps the string as received
/// ([`Error::wire_code`]) and sends it back unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `canceled`
    Canceled,
    /// `malformed_request`
    MalformedRequest,
    /// `malformed_result`
    MalformedResult,
    /// `deadline_exceeded`
    DeadlineExceeded,
    /// `unavailable`
    Unavailable,
    /// `unknown`, also what an error with an empty code means.
    Unknown,
    /// `invalid_argument`
    InvalidArgument,
    /// `not_found`
    NotFound,
    /// `not_acceptable`
    NotAcceptable,
    /// `already_exists`
    AlreadyExists,
    /// `permission_denied`
    PermissionDenied,
    /// `resource_exhausted`
    ResourceExhausted,
    /// `failed_precondition`
    FailedPrecondition,
    /// `aborted`
    Aborted,
    /// `out_of_range`
    OutOfRange,
    /// `unimplemented`
    Unimplemented,
    /// `internal`
    Internal,
    /// `data_loss`
    DataLoss,
    /// `unauthenticated`
    Unauthenticated,
    /// `unprocessable_entity`
    UnprocessableEntity,
    /// `upstream_server_error`
    UpstreamServerError,
    /// `upstream_client_error`
    UpstreamClientError,
    /// A code this version does not know. Its spelling lives in the [`Error`]
    /// ([`Error::wire_code`]); on its own it reads as `unknown`.
    Other,
}

const KNOWN: [(ErrorCode, &str, u16); 22] = [
    (ErrorCode::Canceled, "canceled", 503),
    (ErrorCode::MalformedRequest, "malformed_request", 400),
    (ErrorCode::MalformedResult, "malformed_result", 500),
    (ErrorCode::DeadlineExceeded, "deadline_exceeded", 503),
    (ErrorCode::Unavailable, "unavailable", 503),
    (ErrorCode::Unknown, "unknown", 500),
    (ErrorCode::InvalidArgument, "invalid_argument", 400),
    (ErrorCode::NotFound, "not_found", 404),
    (ErrorCode::NotAcceptable, "not_acceptable", 406),
    (ErrorCode::AlreadyExists, "already_exists", 409),
    (ErrorCode::PermissionDenied, "permission_denied", 403),
    (ErrorCode::ResourceExhausted, "resource_exhausted", 429),
    (ErrorCode::FailedPrecondition, "failed_precondition", 412),
    (ErrorCode::Aborted, "aborted", 409),
    (ErrorCode::OutOfRange, "out_of_range", 416),
    (ErrorCode::Unimplemented, "unimplemented", 501),
    (ErrorCode::Internal, "internal", 500),
    (ErrorCode::DataLoss, "data_loss", 500),
    (ErrorCode::Unauthenticated, "unauthenticated", 401),
    (ErrorCode::UnprocessableEntity, "unprocessable_entity", 422),
    (ErrorCode::UpstreamServerError, "upstream_server_error", 502),
    (ErrorCode::UpstreamClientError, "upstream_client_error", 424),
];

impl ErrorCode {
    /// The wire spelling ([`ErrorCode::Other`] has none of its own and reads `unknown`; the
    /// received spelling is [`Error::wire_code`]).
    ///
    /// ```
    /// assert_eq!(psrpc::ErrorCode::NotFound.as_str(), "not_found");
    /// ```
    pub fn as_str(self) -> &'static str {
        KNOWN
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("unknown", |(_, s, _)| s)
    }

    /// Parses a wire code; the empty string means [`ErrorCode::Unknown`], a string this
    /// version does not know [`ErrorCode::Other`] (use [`Error::from_wire`] to keep it).
    ///
    /// ```
    /// use psrpc::ErrorCode;
    /// assert_eq!(ErrorCode::from_wire("not_found"), ErrorCode::NotFound);
    /// assert_eq!(ErrorCode::from_wire(""), ErrorCode::Unknown);
    /// assert_eq!(ErrorCode::from_wire("teapot"), ErrorCode::Other);
    /// ```
    pub fn from_wire(code: &str) -> Self {
        if code.is_empty() {
            return ErrorCode::Unknown;
        }
        KNOWN
            .iter()
            .find(|(_, s, _)| *s == code)
            .map_or(ErrorCode::Other, |(c, _, _)| *c)
    }

    /// The HTTP status Go psrpc maps this code to (500 for unknown codes).
    pub fn http_status(self) -> u16 {
        KNOWN
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or(500, |(_, _, status)| *status)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ErrorCode::from_wire(s))
    }
}

/// An RPC error: a code, a message and optional details, as carried by a `Response`; psrpc's
/// counterpart of tonic's `Status`.
///
/// Details are protobuf messages packed as `google.protobuf.Any` under the type URL of their
/// [`prost::Name`] (`psrpc-build` generates it with Go's `type.googleapis.com/` prefix), so Go
/// peers read them with `anypb`:
///
/// ```
/// use psrpc::{Error, ErrorCode};
///
/// let err = Error::new(ErrorCode::NotFound, "no such room").with_detail("lobby".to_string());
/// assert_eq!(err.code(), ErrorCode::NotFound);
/// assert_eq!(err.to_string(), "not_found: no such room");
/// assert_eq!(err.details()[0].type_url, "type.googleapis.com/google.protobuf.StringValue");
/// assert_eq!(err.detail::<String>(), Some(Ok("lobby".to_string())));
/// assert_eq!(err.detail::<u64>(), None);
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {message}", self.wire_code())]
pub struct Error {
    code: ErrorCode,
    /// The spelling of an [`ErrorCode::Other`] code as received, sent back unchanged.
    other_code: Option<Arc<str>>,
    message: String,
    details: Vec<prost_types::Any>,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.other_code == other.other_code
            && self.message == other.message
            && self.details == other.details
    }
}

impl Error {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            other_code: None,
            message: message.into(),
            details: Vec::new(),
            source: None,
        }
    }

    /// Adds a typed detail, packed as `google.protobuf.Any` under `M::type_url()` (an `Any`
    /// is added as it is, not packed twice).
    pub fn with_detail<M: prost::Name>(self, detail: M) -> Self {
        let value = detail.encode_to_vec();
        if M::full_name() == <prost_types::Any as prost::Name>::full_name()
            && let Ok(any) = prost_types::Any::decode(value.as_slice())
        {
            return self.with_any_detail(any);
        }
        self.with_any_detail(prost_types::Any {
            type_url: M::type_url(),
            value,
        })
    }

    /// Adds a detail already packed as `google.protobuf.Any`, kept byte for byte.
    pub fn with_any_detail(mut self, detail: prost_types::Any) -> Self {
        self.details.push(detail);
        self
    }

    /// Attaches the underlying cause (kept locally, not sent on the wire).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The code as spelled on the wire: [`ErrorCode::as_str`], or for [`ErrorCode::Other`] the
    /// string received from the peer.
    ///
    /// ```
    /// use psrpc::{Error, ErrorCode};
    /// let err = Error::from_wire("short and stout".into(), "teapot", Vec::new());
    /// assert_eq!(err.code(), ErrorCode::Other);
    /// assert_eq!(err.wire_code(), "teapot");
    /// ```
    pub fn wire_code(&self) -> &str {
        self.other_code.as_deref().unwrap_or(self.code.as_str())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details, as packed on the wire.
    pub fn details(&self) -> &[prost_types::Any] {
        &self.details
    }

    /// The first detail of type `M` (matched by full protobuf name, whatever the type URL's
    /// host), decoded: `None` when there is none, `Some(Err)` when its bytes do not decode.
    pub fn detail<M: prost::Name + Default>(&self) -> Option<Result<M, prost::DecodeError>> {
        let name = M::full_name();
        self.details
            .iter()
            .find(|d| d.type_url.rsplit('/').next() == Some(name.as_str()))
            .map(|d| M::decode(d.value.as_slice()))
    }

    /// Rebuilds an error from the fields of a wire `Response`; an unknown code keeps its
    /// spelling ([`Error::wire_code`]).
    pub fn from_wire(message: String, code: &str, details: Vec<prost_types::Any>) -> Self {
        let parsed = ErrorCode::from_wire(code);
        Error {
            code: parsed,
            other_code: (parsed == ErrorCode::Other).then(|| code.into()),
            message,
            details,
            source: None,
        }
    }

    /// The request timed out before a response arrived (`deadline_exceeded`).
    pub fn timed_out() -> Self {
        Error::new(ErrorCode::DeadlineExceeded, "request timed out")
    }

    /// No server claimed or answered the request (`unavailable`).
    pub fn no_response() -> Self {
        Error::new(ErrorCode::Unavailable, "no response from servers")
    }

    /// Servers answered but none was acceptable to the selection rules (`unavailable`).
    pub fn no_servers_available() -> Self {
        Error::new(ErrorCode::Unavailable, "no servers available")
    }

    /// The call was canceled, e.g. by closing the client (`canceled`).
    pub fn canceled() -> Self {
        Error::new(ErrorCode::Canceled, "request canceled")
    }

    /// The server does not implement the method (`unimplemented`).
    pub fn unimplemented(method: &str) -> Self {
        Error::new(
            ErrorCode::Unimplemented,
            format!("method {method} not implemented"),
        )
    }

    /// The request bytes did not decode (`malformed_request`).
    pub fn malformed_request(cause: prost::DecodeError) -> Self {
        Error::new(
            ErrorCode::MalformedRequest,
            format!("malformed request: {cause}"),
        )
        .with_source(cause)
    }

    /// The response bytes did not decode (`malformed_result`).
    pub fn malformed_result(cause: prost::DecodeError) -> Self {
        Error::new(
            ErrorCode::MalformedResult,
            format!("malformed result: {cause}"),
        )
        .with_source(cause)
    }

    /// True for errors that a retry may cure (`unavailable`, `deadline_exceeded`,
    /// `resource_exhausted`, `aborted`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::Unavailable
                | ErrorCode::DeadlineExceeded
                | ErrorCode::ResourceExhausted
                | ErrorCode::Aborted
        )
    }
}

impl From<crate::bus::BusError> for Error {
    fn from(err: crate::bus::BusError) -> Self {
        let code = match &err {
            crate::bus::BusError::PayloadTooLarge { .. } => ErrorCode::InvalidArgument,
            crate::bus::BusError::Closed => ErrorCode::Canceled,
            _ => ErrorCode::Unavailable,
        };
        Error::new(code, err.to_string()).with_source(err)
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        let message = code.as_str().to_owned();
        Error::new(code, message)
    }
}

/// A result whose error is an RPC [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_with_its_http_status() {
        for (code, s, status) in KNOWN.iter() {
            assert_eq!(code.as_str(), *s);
            assert_eq!(ErrorCode::from_wire(s), *code);
            assert_eq!(code.http_status(), *status);
            let err = Error::from_wire("m".into(), s, Vec::new());
            assert_eq!((err.code(), err.wire_code()), (*code, *s));
        }
        assert_eq!(ErrorCode::from_wire("weird").http_status(), 500);
        assert_eq!(
            Error::from_wire("m".into(), "", Vec::new()).wire_code(),
            "unknown"
        );
    }

    #[test]
    fn unknown_codes_keep_their_spelling() {
        let err = Error::from_wire("m".into(), "teapot", Vec::new());
        assert_eq!(err.code(), ErrorCode::Other);
        assert_eq!(err.wire_code(), "teapot");
        assert_eq!(err.to_string(), "teapot: m");
        assert_ne!(err, Error::from_wire("m".into(), "kettle", Vec::new()));
        assert_eq!(Error::new(ErrorCode::Other, "m").wire_code(), "unknown");
    }

    #[test]
    fn details_pack_and_unpack_by_name() {
        let err = Error::new(ErrorCode::NotFound, "m")
            .with_detail(7u32)
            .with_detail("hint".to_string())
            .with_any_detail(prost_types::Any {
                type_url: "example.com/google.protobuf.BoolValue".into(),
                value: vec![0xff],
            });
        // Bytes as Go's anypb.New writes a StringValue.
        assert_eq!(
            err.details()[1],
            prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
                value: b"\n\x04hint".to_vec(),
            }
        );
        assert_eq!(err.detail::<u32>(), Some(Ok(7)));
        assert_eq!(err.detail::<String>(), Some(Ok("hint".into())));
        assert!(
            matches!(err.detail::<bool>(), Some(Err(_))),
            "malformed, not absent"
        );
        assert_eq!(err.detail::<i64>(), None);
    }

    #[test]
    fn an_any_detail_is_not_packed_twice() {
        let any = prost_types::Any {
            type_url: "type.googleapis.com/demo.Hint".into(),
            value: vec![1, 2],
        };
        let err = Error::new(ErrorCode::Internal, "m").with_detail(any.clone());
        assert_eq!(err.details(), std::slice::from_ref(&any));
    }
}
