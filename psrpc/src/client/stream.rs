//! Opening bidirectional streams: the open goes out, claim methods choose their server as
//! unary calls do, and the stream is live once the server acknowledges it.

use bytes::Bytes;
use prost::Message;
use tokio::time::Instant;

use super::claim::{Answers, Selected};
use super::pending::PendingCall;
use super::reply::response_error;
use super::{CallOptions, Client};
use crate::stream::{Stream, StreamCore};
use crate::wire::{self, StreamOpen, stream_frame::Body};
use crate::{Channel, Error, MethodInfo, Result};

impl Client {
    /// Opens a bidirectional stream to one server of a stream method: the client sends `S` and
    /// receives `R`. Claim methods choose the server as unary calls do; the call options'
    /// timeout bounds the opening.
    ///
    /// # Errors
    /// As [`request`](Self::request), for the opening.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the opening: a server that had already taken the stream
    /// gets a close. The client stays usable.
    pub async fn open_stream<S, R>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        opts: CallOptions,
    ) -> Result<Stream<S, R>>
    where
        S: Message,
        R: Message + Default,
    {
        let inner = &self.inner;
        method.expect(method.is_stream(), "open_stream")?;
        inner.check_open()?;
        let (opts, _) = inner.intercept(method, topics, Bytes::new(), opts, |i, call| {
            i.on_stream_open(call)
        })?;
        let started = Instant::now();
        let deadline = opts.deadline_from(started, inner.options.timeout);
        let stream_id = crate::id::new_stream_id();
        let open_id = crate::id::new_request_id();
        let peer =
            Channel::server_stream(inner.service.clone(), method.name(), topics.iter().copied());
        let (core, inbox) = StreamCore::new(
            stream_id.clone(),
            open_id.clone(),
            inner.bus.clone(),
            peer.clone(),
            inner.options.stream,
        );
        let acked = core.expect_open_ack();
        inner.streams.insert(stream_id.clone(), core.clone());
        // Until it is established, dropping the handle only unregisters the stream.
        let stream = Stream::new(core.clone(), inbox, Some(inner.streams.clone()), false);
        let mut call = PendingCall::new(inner.clone(), open_id.clone(), method, topics);

        let sent_at = crate::time::now_unix_nanos();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let open = wire::StreamFrame {
            stream_id,
            request_id: open_id.clone(),
            sent_at,
            expiry: sent_at.saturating_add(crate::time::nanos_i64(remaining)),
            body: Some(Body::Open(StreamOpen {
                node_id: inner.id.to_string(),
                metadata: inner.outgoing_metadata(&opts),
                x_window: inner.options.stream.window,
            })),
        };
        let payload = wire::encode_envelope(wire::STREAM_TYPE_URL, &open);
        crate::bus::check_payload_size(payload.len(), inner.bus.max_payload())?;
        // Bounded by the deadline, as a request's publish.
        let mut nobody =
            tokio::time::timeout_at(deadline, inner.bus.publish_watched(&peer, payload))
                .await
                .map_err(|_| Error::timed_out())??;

        if method.requires_claim() {
            let selected = inner
                .select_server(
                    &mut call,
                    &opts.selection_for(method),
                    started,
                    deadline,
                    &mut nobody,
                    Answers::Refusals,
                )
                .await?;
            if let Selected::Answered(resp) = selected {
                // `Answers::Refusals` treats every response as a refusal; kept total anyway.
                return Err(response_error(*resp));
            }
        }
        // From here a server may hold the stream: a failure must tell it.
        stream.set_close_on_drop(true);
        let peer_window = tokio::select! {
            biased;
            _ = inner.closed.cancelled() => return Err(Error::canceled()),
            window = acked => window.map_err(|_| Error::canceled())?,
            // The server refused the stream (an interceptor), closing it instead of acking.
            _ = core.closed.cancelled() => return Err(core.closed_error()),
            _ = &mut nobody => return Err(Error::no_response()),
            _ = tokio::time::sleep_until(deadline) => return Err(Error::timed_out()),
        };
        core.set_peer_window(peer_window);
        drop(core.spawn_driver());
        Ok(stream)
    }
}
