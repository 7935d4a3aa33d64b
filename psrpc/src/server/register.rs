//! Registering and deregistering methods: the reservation of a registration key, the
//! subscriptions, and the reader tasks each registration runs.

use super::*;

impl Server {
    /// Registers the handler of a unary or multi method, on `topics` (empty for none).
    ///
    /// Returns once the server receives requests for it.
    ///
    /// # Errors
    /// `already_exists` if the method is registered on these topics, `unavailable` after
    /// shutdown, or the bus error of a failed subscribe.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it completes, the method is not registered (and can be
    /// registered again).
    pub async fn register_unary<Req, Resp, H, Fut>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        handler: H,
    ) -> Result<()>
    where
        Req: Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
        H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        method.expect(
            matches!(method.kind(), MethodKind::Unary(_) | MethodKind::Multi),
            "register_unary",
        )?;
        let processor = unary_processor(method, handler, None);
        self.register(method, topics, Handler::Unary(processor))
            .await
    }

    /// Like [`register_unary`](Self::register_unary), with the affinity function servers of an
    /// AFFINITY method claim with (the default affinity is 1.0).
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    ///
    /// # Cancel safety
    /// As [`register_unary`](Self::register_unary).
    pub async fn register_unary_with_affinity<Req, Resp, H, Fut>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        handler: H,
        affinity: AffinityFn<Req>,
    ) -> Result<()>
    where
        Req: Message + Default + Send + 'static,
        Resp: Message + Send + 'static,
        H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        method.expect(
            matches!(method.kind(), MethodKind::Unary(_) | MethodKind::Multi),
            "register_unary_with_affinity",
        )?;
        let processor = unary_processor(method, handler, Some(affinity));
        self.register(method, topics, Handler::Unary(processor))
            .await
    }

    /// Registers the handler of a stream method, on `topics` (empty for none). The handler
    /// gets the stream (it sends `Out`, receives `In`); the stream closes when it returns,
    /// cleanly on `Ok`, with the error on `Err`. The handler's context has no deadline, and
    /// its cancellation fires when the stream ends.
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    ///
    /// # Cancel safety
    /// As [`register_unary`](Self::register_unary).
    pub async fn register_stream<In, Out, H, Fut>(
        &self,
        method: MethodInfo,
        topics: &[&str],
        handler: H,
    ) -> Result<()>
    where
        In: Message + Default + Send + 'static,
        Out: Message + Send + 'static,
        H: Fn(RequestContext, Stream<Out, In>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        method.expect(method.is_stream(), "register_stream")?;
        let processor = stream_processor(method, handler);
        self.register(method, topics, Handler::Stream(processor))
            .await
    }

    /// Streams being served now.
    pub fn open_streams(&self) -> usize {
        self.inner.streams.len()
    }

    /// Stops serving `method` on `topics`; handlers already running finish. Returns whether it
    /// was registered.
    pub fn deregister(&self, method: MethodInfo, topics: &[&str]) -> bool {
        let mut regs = lock(&self.inner.registrations);
        let key = regs
            .keys()
            .find(|(m, t)| {
                *m == method.name() && t.iter().map(String::as_str).eq(topics.iter().copied())
            })
            .cloned();
        match key.and_then(|k| regs.remove(&k)) {
            Some(stop) => {
                self.inner.presence.deregistered(method.name(), topics);
                stop.cancel();
                true
            }
            None => false,
        }
    }

    /// True if `method` is registered on `topics`.
    pub fn is_registered(&self, method: MethodInfo, topics: &[&str]) -> bool {
        lock(&self.inner.registrations).keys().any(|(m, t)| {
            *m == method.name() && t.iter().map(String::as_str).eq(topics.iter().copied())
        })
    }

    async fn register(&self, method: MethodInfo, topics: &[&str], handler: Handler) -> Result<()> {
        let inner = &self.inner;
        if inner.stop_requests.is_cancelled() {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "server is shutting down",
            ));
        }
        let topics: Arc<[String]> = topics.iter().map(|t| t.to_string()).collect();
        let key = (method.name(), topics.to_vec());
        let stop = CancellationToken::new();
        {
            let mut regs = lock(&inner.registrations);
            if regs.contains_key(&key) {
                return Err(Error::new(
                    ErrorCode::AlreadyExists,
                    format!("{} is already registered on {:?}", method.name(), topics),
                ));
            }
            regs.insert(key.clone(), stop.clone());
        }
        // Dropped before it is committed (a failed subscribe, or the future dropped), the
        // reservation frees the key, so the method can be registered again.
        let mut reservation = Reservation {
            registrations: &inner.registrations,
            key: Some(key),
        };
        let options = SubscribeOptions {
            capacity: inner.options.subscription_capacity,
        };
        let req_channel = match handler {
            Handler::Unary(_) => Channel::request(
                inner.service.clone(),
                method.name(),
                topics.iter().cloned(),
                method.is_queued(),
            ),
            // Stream frames to servers always fan out; the claim picks the server.
            Handler::Stream(_) => {
                Channel::server_stream(inner.service.clone(), method.name(), topics.iter().cloned())
            }
        };
        let claim_channel =
            Channel::claim_response(inner.service.clone(), method.name(), topics.iter().cloned());
        let subscribed = async {
            let requests = inner.bus.subscribe(&req_channel, options).await?;
            // Claim responses also carry cancellations, so every method listens for them.
            let claims = inner.bus.subscribe(&claim_channel, options).await?;
            Ok::<_, crate::bus::BusError>((requests, claims))
        }
        .await;
        let (requests, claims) = subscribed?;
        reservation.key = None;
        let is_stream = matches!(handler, Handler::Stream(_));
        // Discovery hook: requests stop while not serving (streams keep their frames).
        let requests = crate::discovery::Gate::new(
            requests,
            (!is_stream).then(|| inner.presence.health_watch()),
            inner.bus.clone(),
            req_channel,
            options,
        );
        let reg = Registration {
            method,
            topics,
            stop,
            handlers: TaskTracker::new(),
            handler,
        };
        inner
            .readers
            .spawn(request_loop(inner.clone(), requests, reg.clone()));
        inner
            .readers
            .spawn(claim::claim_loop(inner.clone(), claims, reg.clone()));
        inner
            .presence
            .registered(&method, &reg.topics, is_stream, || presence_identity(inner));
        Ok(())
    }
}

/// A registration key taken by a registration still subscribing.
pub(super) struct Reservation<'a> {
    registrations: &'a Mutex<HashMap<RegistrationKey, CancellationToken>>,
    /// `None` once the registration is committed.
    key: Option<RegistrationKey>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(self.registrations).remove(&key);
        }
    }
}

/// Who the server is, for its discovery announcer (which must not keep it alive).
pub(super) fn presence_identity(inner: &Arc<Inner>) -> crate::discovery::Identity {
    let weak = Arc::downgrade(inner);
    crate::discovery::Identity {
        bus: inner.bus.clone(),
        service: inner.service.clone(),
        server_id: inner.id.clone(),
        snapshot: Arc::new(move || {
            let inner = weak.upgrade()?;
            let s = inner.counters.snapshot();
            Some([
                s.received,
                s.handled,
                s.malformed,
                s.shed,
                inner.running.len() as u64,
            ])
        }),
    }
}
