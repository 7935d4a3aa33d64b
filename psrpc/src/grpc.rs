//! The gRPC bridge (feature `tonic`): [`Error`] to and from [`tonic::Status`], as Go psrpc's
//! errors offer `GRPCStatus()`, for services that run tonic and psrpc side by side.
//!
//! Codes map one to one where gRPC has the same code; psrpc's own codes map to the nearest
//! gRPC code ([`grpc_code`]). Details travel as a `google.rpc.Status` in the status's binary
//! details (the `grpc-status-details-bin` trailer), so rich-error readers on either side see
//! them. A status converted back keeps the psrpc code when the message carries it, so a
//! round trip through gRPC loses nothing.
//!
//! ```
//! use psrpc::{Error, ErrorCode};
//!
//! let err = Error::new(ErrorCode::NotFound, "no such room").with_detail("lobby".to_string());
//! let status = tonic::Status::from(err.clone());
//! assert_eq!(status.code(), tonic::Code::NotFound);
//! assert_eq!(status.message(), "no such room");
//! assert_eq!(Error::from(status), err);
//! ```

use prost::Message;
use tonic::Code;

use crate::{Error, ErrorCode};

/// `google.rpc.Status`: what gRPC carries in its binary error details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The type URL of the detail that keeps a psrpc code gRPC has no code for.
const PSRPC_CODE_TYPE_URL: &str = "type.googleapis.com/google.protobuf.StringValue";

/// The gRPC code of a psrpc code.
///
/// ```
/// use psrpc::{ErrorCode, grpc::grpc_code};
/// assert_eq!(grpc_code(ErrorCode::MalformedRequest), tonic::Code::InvalidArgument);
/// ```
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::Canceled => Code::Cancelled,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::Unavailable | ErrorCode::UpstreamServerError => Code::Unavailable,
        ErrorCode::InvalidArgument
        | ErrorCode::MalformedRequest
        | ErrorCode::NotAcceptable
        | ErrorCode::UnprocessableEntity => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::FailedPrecondition | ErrorCode::UpstreamClientError => Code::FailedPrecondition,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::OutOfRange => Code::OutOfRange,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Internal | ErrorCode::MalformedResult => Code::Internal,
        ErrorCode::DataLoss => Code::DataLoss,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        _ => Code::Unknown,
    }
}

/// The psrpc code of a gRPC code (`Ok` has none and maps to `unknown`).
pub fn psrpc_code(code: Code) -> ErrorCode {
    match code {
        Code::Cancelled => ErrorCode::Canceled,
        Code::InvalidArgument => ErrorCode::InvalidArgument,
        Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
        Code::NotFound => ErrorCode::NotFound,
        Code::AlreadyExists => ErrorCode::AlreadyExists,
        Code::PermissionDenied => ErrorCode::PermissionDenied,
        Code::ResourceExhausted => ErrorCode::ResourceExhausted,
        Code::FailedPrecondition => ErrorCode::FailedPrecondition,
        Code::Aborted => ErrorCode::Aborted,
        Code::OutOfRange => ErrorCode::OutOfRange,
        Code::Unimplemented => ErrorCode::Unimplemented,
        Code::Internal => ErrorCode::Internal,
        Code::Unavailable => ErrorCode::Unavailable,
        Code::DataLoss => ErrorCode::DataLoss,
        Code::Unauthenticated => ErrorCode::Unauthenticated,
        Code::Ok | Code::Unknown => ErrorCode::Unknown,
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = grpc_code(err.code());
        let mut details = err.details().to_vec();
        // A psrpc code gRPC cannot say rides along, so converting back restores it.
        if psrpc_code(code) != ErrorCode::from_wire(err.wire_code()) {
            details.push(prost_types::Any {
                type_url: PSRPC_CODE_TYPE_URL.into(),
                value: err.wire_code().to_owned().encode_to_vec(),
            });
        }
        let status = RpcStatus {
            code: code as i32,
            message: err.message().to_owned(),
            details,
        };
        tonic::Status::with_details(code, err.message(), status.encode_to_vec().into())
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let code = psrpc_code(status.code());
        let mut wire_code = code.as_str().to_owned();
        let mut details = RpcStatus::decode(status.details())
            .map(|s| s.details)
            .unwrap_or_default();
        // The code rides last, and only when gRPC's code could not say it: a user's own
        // `StringValue` detail is not mistaken for it.
        if let Some(last) = details.last()
            && last.type_url == PSRPC_CODE_TYPE_URL
            && let Ok(original) = String::decode(last.value.as_slice())
            && ErrorCode::from_wire(&original) != code
            && grpc_code(ErrorCode::from_wire(&original)) == status.code()
        {
            wire_code = original;
            details.pop();
        }
        Error::from_wire(status.message().to_owned(), &wire_code, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc() {
        let codes = [
            "canceled",
            "malformed_request",
            "malformed_result",
            "deadline_exceeded",
            "unavailable",
            "unknown",
            "invalid_argument",
            "not_found",
            "not_acceptable",
            "already_exists",
            "permission_denied",
            "resource_exhausted",
            "failed_precondition",
            "aborted",
            "out_of_range",
            "unimplemented",
            "internal",
            "data_loss",
            "unauthenticated",
            "unprocessable_entity",
            "upstream_server_error",
            "upstream_client_error",
            "teapot",
        ];
        for code in codes {
            let detail = prost_types::Any {
                type_url: "type.googleapis.com/demo.Detail".into(),
                value: vec![7],
            };
            let err = Error::from_wire(format!("failed {code}"), code, vec![detail]);
            let status = tonic::Status::from(err.clone());
            assert_eq!(status.code(), grpc_code(err.code()), "{code}");
            // What a plain gRPC reader sees: the details, with the gRPC code.
            let rpc = RpcStatus::decode(status.details()).unwrap();
            assert_eq!(rpc.code, status.code() as i32);
            assert_eq!(rpc.details[0].type_url, "type.googleapis.com/demo.Detail");
            let back = Error::from(status);
            assert_eq!(back, err, "{code}");
            assert_eq!(back.wire_code(), code);
        }
    }

    #[test]
    fn a_users_string_detail_is_not_taken_for_the_code() {
        for (code, text) in [
            (ErrorCode::NotFound, "lobby"),
            (ErrorCode::MalformedRequest, "lobby"),
            (ErrorCode::NotFound, "malformed_request"),
        ] {
            let err = Error::new(code, "m").with_detail(text.to_string());
            assert_eq!(Error::from(tonic::Status::from(err.clone())), err);
        }
    }

    #[test]
    fn a_plain_grpc_status_becomes_an_error() {
        let err = Error::from(tonic::Status::not_found("gone"));
        assert_eq!(err, Error::new(ErrorCode::NotFound, "gone"));
        let err = Error::from(tonic::Status::new(Code::Ok, "odd"));
        assert_eq!(err.code(), ErrorCode::Unknown);
    }
}
