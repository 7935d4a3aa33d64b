//! Why a stream ended.

use crate::{Error, ErrorCode};

/// Why a stream ended, from [`Stream::end_reason`](super::Stream::end_reason) or
/// [`Stream::closed`](super::Stream::closed); Go psrpc's `Err()` in more detail.
///
/// ```
/// use psrpc::stream::StreamEnd;
///
/// assert!(StreamEnd::PeerClosed.error().is_none());
/// assert_eq!(
///     StreamEnd::PeerVanished.error().unwrap().code(),
///     psrpc::ErrorCode::Unavailable
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// The peer closed the stream cleanly.
    PeerClosed,
    /// The peer closed the stream with an error: its code and message.
    PeerError(Error),
    /// This side closed the stream cleanly (`close(None)`, a dropped handle, a handler that
    /// returned `Ok`, or the client closing).
    Closed,
    /// This side closed the stream with an error (`close(Some(err))`, a handler that failed).
    ClosedWithError(Error),
    /// A sent message was not acknowledged within the ack timeout.
    AckTimeout,
    /// A Rust peer sent nothing, not even keepalives, for the idle timeout.
    PeerVanished,
    /// A peer that sends no keepalives (Go) was silent for the silent-peer timeout.
    IdleTimeout,
    /// The server shut down and its drain deadline passed, or it was killed.
    ServerShutdown,
    /// The bus failed to carry a message.
    Bus(Error),
}

impl StreamEnd {
    /// The error this end means; `None` for the clean ends ([`PeerClosed`](Self::PeerClosed),
    /// [`Closed`](Self::Closed)). It is what the receiving side yields last, and what a send
    /// after the end fails with.
    pub fn error(&self) -> Option<Error> {
        match self {
            StreamEnd::PeerClosed | StreamEnd::Closed => None,
            StreamEnd::PeerError(err) | StreamEnd::ClosedWithError(err) | StreamEnd::Bus(err) => {
                Some(err.clone())
            }
            StreamEnd::AckTimeout => Some(Error::new(
                ErrorCode::DeadlineExceeded,
                "stream message not acknowledged",
            )),
            StreamEnd::PeerVanished => {
                Some(Error::new(ErrorCode::Unavailable, "stream peer vanished"))
            }
            StreamEnd::IdleTimeout => Some(Error::new(
                ErrorCode::DeadlineExceeded,
                "stream idle past its timeout",
            )),
            StreamEnd::ServerShutdown => {
                Some(Error::new(ErrorCode::Unavailable, "server shut down"))
            }
        }
    }

    /// True for the clean ends.
    pub fn is_clean(&self) -> bool {
        self.error().is_none()
    }
}

impl std::fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamEnd::PeerClosed => f.write_str("closed by the peer"),
            StreamEnd::Closed => f.write_str("closed"),
            StreamEnd::PeerError(err) => write!(f, "closed by the peer with {err}"),
            StreamEnd::ClosedWithError(err) => write!(f, "closed with {err}"),
            other => match other.error() {
                Some(err) => write!(f, "{err}"),
                None => f.write_str("closed"),
            },
        }
    }
}
