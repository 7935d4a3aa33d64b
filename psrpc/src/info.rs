//! Static descriptions of methods: what kind each is and how it is routed on the bus.

/// How a unary call or a stream open reaches the one server that handles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Dispatch {
    /// QUEUE routing: the request goes to one server through a queue, which claims it before
    /// handling it, as Go does (Rust servers skip the claim for Rust callers, see
    /// [`ClientOptions::direct_queue_calls`](crate::ClientOptions::direct_queue_calls)).
    #[default]
    Queue,
    /// QUEUE routing with `topic_params.single_server`: one server through a queue, no claim
    /// exchange.
    SingleServer,
    /// AFFINITY routing: every server receives the request and claims it with an affinity;
    /// the caller picks one.
    Affinity,
}

/// What a method is: the kinds of psrpc methods, each with only the options it can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MethodKind {
    /// One request, one response from one server.
    Unary(Dispatch),
    /// MULTI routing: every server answers.
    Multi,
    /// A bidirectional stream with one server.
    Stream(Dispatch),
    /// Servers publish, clients subscribe; `queue` gives each message to one subscriber
    /// instead of all.
    Subscription {
        /// Each message goes to one subscriber (QUEUE routing) instead of all (MULTI).
        queue: bool,
    },
}

/// How one method travels on the bus; mirrors Go psrpc's `RPCInfo`.
///
/// Generated code declares one constant per method; generic users build them with the `const`
/// constructors, one per kind. It is `Copy` and passed by value everywhere.
///
/// ```
/// use psrpc::{Dispatch, MethodInfo, MethodKind};
///
/// const GET: MethodInfo = MethodInfo::unary("GetRoom");
/// const PICK: MethodInfo = MethodInfo::affinity("PickNode");
/// const STATS: MethodInfo = MethodInfo::multi("Stats");
/// const CHAT: MethodInfo = MethodInfo::stream("Chat");
/// const EVENTS: MethodInfo = MethodInfo::subscription("Events");
/// const PING: MethodInfo = MethodInfo::new("Ping", MethodKind::Unary(Dispatch::SingleServer));
/// assert!(GET.requires_claim() && !STATS.requires_claim() && !PING.requires_claim());
/// assert!(CHAT.is_stream() && !GET.is_stream());
/// assert_eq!(EVENTS.kind(), MethodKind::Subscription { queue: false });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    name: &'static str,
    kind: MethodKind,
    idempotent: bool,
}

impl MethodInfo {
    /// A method of any kind.
    pub const fn new(name: &'static str, kind: MethodKind) -> Self {
        MethodInfo {
            name,
            kind,
            idempotent: false,
        }
    }

    /// A QUEUE-routed unary method answered by one server, claimed first as Go does.
    pub const fn unary(name: &'static str) -> Self {
        Self::new(name, MethodKind::Unary(Dispatch::Queue))
    }

    /// An AFFINITY-routed unary method: every server claims with its affinity, the caller
    /// picks one.
    pub const fn affinity(name: &'static str) -> Self {
        Self::new(name, MethodKind::Unary(Dispatch::Affinity))
    }

    /// A MULTI method answered by every server.
    pub const fn multi(name: &'static str) -> Self {
        Self::new(name, MethodKind::Multi)
    }

    /// A QUEUE-routed bidirectional stream method with one server, claimed first.
    pub const fn stream(name: &'static str) -> Self {
        Self::new(name, MethodKind::Stream(Dispatch::Queue))
    }

    /// A subscription: every subscriber gets every message.
    pub const fn subscription(name: &'static str) -> Self {
        Self::new(name, MethodKind::Subscription { queue: false })
    }

    /// A queue subscription: each message goes to one subscriber.
    pub const fn queue_subscription(name: &'static str) -> Self {
        Self::new(name, MethodKind::Subscription { queue: true })
    }

    /// Marks the method idempotent (generated code does so for rpcs with
    /// `option idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS`).
    ///
    /// ```
    /// const GET: psrpc::MethodInfo = psrpc::MethodInfo::unary("GetRoom").idempotent();
    /// assert!(GET.is_idempotent());
    /// ```
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The method name on the wire (CamelCase rpc name).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The kind of method.
    pub const fn kind(&self) -> MethodKind {
        self.kind
    }

    /// Running a request twice has the effect of running it once, so a call that timed out
    /// (the handler may have run) can be retried; see [`crate::interceptor::Retry`].
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// A bidirectional stream method.
    pub const fn is_stream(&self) -> bool {
        matches!(self.kind, MethodKind::Stream(_))
    }

    /// A MULTI method: every server answers.
    pub const fn is_multi(&self) -> bool {
        matches!(self.kind, MethodKind::Multi)
    }

    /// A subscription method.
    pub const fn is_subscription(&self) -> bool {
        matches!(self.kind, MethodKind::Subscription { .. })
    }

    /// How a unary call or stream reaches its server; `None` for multi methods and
    /// subscriptions.
    pub const fn dispatch(&self) -> Option<Dispatch> {
        match self.kind {
            MethodKind::Unary(d) | MethodKind::Stream(d) => Some(d),
            _ => None,
        }
    }

    /// Servers claim a request and the caller picks one before it is handled.
    pub const fn requires_claim(&self) -> bool {
        matches!(
            self.dispatch(),
            Some(Dispatch::Queue) | Some(Dispatch::Affinity)
        )
    }

    /// Selection waits for the best claim (AFFINITY routing).
    pub const fn has_affinity(&self) -> bool {
        matches!(self.dispatch(), Some(Dispatch::Affinity))
    }

    /// Requests (or subscription messages) go to one receiver through a queue.
    pub const fn is_queued(&self) -> bool {
        match self.kind {
            MethodKind::Unary(d) | MethodKind::Stream(d) => {
                matches!(d, Dispatch::Queue | Dispatch::SingleServer)
            }
            MethodKind::Multi => false,
            MethodKind::Subscription { queue } => queue,
        }
    }
}

impl MethodInfo {
    /// `invalid_argument` when the method is not of the kind `operation` serves.
    pub(crate) fn expect(&self, fits: bool, operation: &str) -> crate::Result<()> {
        if fits {
            return Ok(());
        }
        Err(crate::Error::new(
            crate::ErrorCode::InvalidArgument,
            format!(
                "{operation} does not serve {} (a {:?} method)",
                self.name, self.kind
            ),
        ))
    }
}
