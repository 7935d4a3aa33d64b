//! Taking requests from the bus: the reader loop of a registration, admission (expiry,
//! in-flight limit), hand-off to the processor, and the response.

use super::*;

pub(super) async fn request_loop(
    inner: Arc<Inner>,
    mut sub: crate::discovery::Gate,
    reg: Registration,
) {
    // Streams keep receiving frames after new opens stop, until the streams already open end.
    let keeps_routing = matches!(reg.handler, Handler::Stream(_));
    let mut accepting = true;
    // Built once: re-created per message they would re-register with their tokens each time.
    let drained = reg.handlers.wait();
    let stop_all = inner.stop_all.cancelled();
    let deregistered = reg.stop.cancelled();
    let stopping = inner.stop_requests.cancelled();
    tokio::pin!(drained, stop_all, deregistered, stopping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop_all => break,
            _ = &mut deregistered, if accepting => {
                accepting = false;
                reg.handlers.close();
                if !keeps_routing {
                    break;
                }
            }
            _ = &mut stopping, if accepting => {
                accepting = false;
                if let Handler::Unary(processor) = &reg.handler {
                    // What the bus delivered before the stop is this server's to handle.
                    for payload in sub.drain_now() {
                        inner.accept(&reg, processor, payload);
                    }
                }
                reg.handlers.close();
                if !keeps_routing {
                    break;
                }
            }
            _ = &mut drained, if !accepting => break,
            payload = sub.recv() => match payload {
                Some(payload) => match &reg.handler {
                    Handler::Unary(processor) => inner.accept(&reg, processor, payload),
                    Handler::Stream(processor) => {
                        let accepting = accepting && inner.presence.is_serving();
                        inner.accept_frame(&reg, processor, payload, accepting);
                    }
                },
                None => break,
            },
        }
    }
    drop(sub);
    reg.handlers.close();
}

impl Inner {
    /// Flushes the bus, bounded: a broker that went away cannot hold a shutdown.
    pub(super) async fn flush(&self) {
        match tokio::time::timeout(FINAL_PUBLISH_BOUND, self.bus.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "failed to flush the bus at shutdown"),
            Err(_) => tracing::warn!("flushing the bus at shutdown timed out"),
        }
    }

    /// The error a handler cut short by kill or by the drain deadline answers with.
    pub(super) fn stopped_error(&self) -> Error {
        if self
            .drain_expired
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            Error::new(ErrorCode::Unavailable, "server shut down")
        } else {
            Error::new(ErrorCode::Unavailable, "server killed")
        }
    }

    pub(super) fn kill_now(&self) {
        self.presence.stop();
        self.kill.cancel();
        self.stop_all.cancel();
        self.stop_requests.cancel();
    }

    /// Decodes a request and hands it to a task of its own.
    pub(super) fn accept(
        self: &Arc<Self>,
        reg: &Registration,
        processor: &Processor,
        payload: Bytes,
    ) {
        let Some(req) = decode_request(payload) else {
            Counters::incr(&self.counters.malformed);
            tracing::debug!(service = %self.service, method = reg.method.name(), "dropped a malformed request");
            return;
        };
        let Some(deadline) = crate::time::deadline_from_expiry(req.expiry) else {
            Counters::incr(&self.counters.expired);
            tracing::debug!(request_id = %req.request_id, "dropped an expired request");
            return;
        };
        let permit = match self.try_acquire() {
            Ok(permit) => permit,
            Err(()) => {
                Counters::incr(&self.counters.shed);
                // A fan-out claim method has other servers that will claim; stay silent.
                let others_will_claim = reg.method.requires_claim() && !reg.method.is_queued();
                if !others_will_claim {
                    let inner = self.clone();
                    reg.handlers.spawn(async move {
                        let err = Error::new(ErrorCode::ResourceExhausted, "server at capacity");
                        inner.respond(&req, Err(err)).await;
                    });
                }
                return;
            }
        };
        Counters::incr(&self.counters.received);
        let work = processor(self.clone(), req, deadline, reg.topics.clone());
        reg.handlers.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    /// Handles a frame on a stream channel: an open starts a task, other frames go to the
    /// stream they belong to (frames of streams served elsewhere are ignored).
    pub(super) fn accept_frame(
        self: &Arc<Self>,
        reg: &Registration,
        processor: &StreamProcessor,
        payload: Bytes,
        accepting: bool,
    ) {
        let frame = wire::decode_envelope(payload)
            .ok()
            .filter(|msg| msg.type_url == wire::STREAM_TYPE_URL)
            .and_then(|msg| wire::StreamFrame::decode(msg.value).ok());
        let Some(frame) = frame else {
            Counters::incr(&self.counters.malformed);
            return;
        };
        if !matches!(frame.body, Some(Body::Open(_))) {
            if let Some(core) = self.streams.get(&frame.stream_id).map(|c| c.clone()) {
                core.on_frame(frame);
            }
            return;
        }
        if !accepting {
            // Shutting down or deregistered: other servers may claim it.
            return;
        }
        let Some(deadline) = crate::time::deadline_from_expiry(frame.expiry) else {
            Counters::incr(&self.counters.expired);
            return;
        };
        let Ok(permit) = self.try_acquire() else {
            // Other servers may claim it; this one stays silent.
            Counters::incr(&self.counters.shed);
            return;
        };
        Counters::incr(&self.counters.received);
        let work = processor(self.clone(), frame, deadline, reg.topics.clone());
        reg.handlers.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    pub(super) fn try_acquire(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.limiter {
            None => Ok(None),
            Some(limiter) => limiter
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| ()),
        }
    }

    pub(super) async fn respond(&self, req: &Request, result: Result<Bytes>) {
        let mut resp = Response {
            request_id: req.request_id.clone(),
            server_id: self.id.to_string(),
            sent_at: crate::time::now_unix_nanos(),
            ..Default::default()
        };
        match result {
            Ok(raw) => resp.raw_response = raw,
            Err(err) => set_error(&mut resp, &err),
        }
        let mut payload = wire::encode_envelope(wire::RESPONSE_TYPE_URL, &resp);
        let limit = self.bus.max_payload();
        if payload.len() > limit {
            let err = Error::new(
                ErrorCode::Internal,
                format!(
                    "response of {} bytes exceeds the bus limit of {limit} bytes",
                    payload.len()
                ),
            );
            resp.raw_response = Bytes::new();
            set_error(&mut resp, &err);
            payload = wire::encode_envelope(wire::RESPONSE_TYPE_URL, &resp);
        }
        let channel = Channel::response(self.service.clone(), req.client_id.as_str());
        if let Err(err) = self.bus.publish(&channel, payload).await {
            Counters::incr(&self.counters.publish_errors);
            tracing::warn!(%err, request_id = %req.request_id, "failed to publish a response");
        }
    }
}
