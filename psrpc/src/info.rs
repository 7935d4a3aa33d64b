//! Static descriptions of methods: how each is routed on the bus.

/// How calls of a method find their server(s), as in `psrpc.options.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Routing {
    /// One server, delivered through a queue (the default).
    #[default]
    Queue,
    /// Every server sees the request and claims it with an affinity; the caller picks one.
    Affinity,
    /// Every server answers.
    Multi,
}

/// How one method travels on the bus; mirrors Go psrpc's `RPCInfo`.
///
/// Generated code declares one constant per method; generic users build them with the `const`
/// constructors.
///
/// ```
/// use psrpc::MethodInfo;
///
/// const GET: MethodInfo = MethodInfo::unary("GetRoom");
/// const PICK: MethodInfo = MethodInfo::affinity("PickNode");
/// const STATS: MethodInfo = MethodInfo::multi("Stats");
/// const EVENTS: MethodInfo = MethodInfo::subscription("Events", false);
/// assert!(GET.queue && GET.require_claim && !STATS.require_claim && !EVENTS.queue);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    /// The method name on the wire (CamelCase rpc name).
    pub name: &'static str,
    /// Every server answers (MULTI routing).
    pub multi: bool,
    /// Servers claim the request and the caller picks one before it is handled.
    pub require_claim: bool,
    /// Requests (or subscription messages) go to one receiver through a queue.
    pub queue: bool,
    /// The method has an affinity function: selection waits for the best claim.
    pub affinity: bool,
    /// The method is a subscription (servers publish, clients subscribe).
    pub subscription: bool,
    /// Running a request twice has the effect of running it once, so a call that timed out
    /// (the handler may have run) can be retried; see [`crate::interceptor::Retry`].
    pub idempotent: bool,
}

impl MethodInfo {
    /// A QUEUE-routed call answered by one server, claimed first as Go does.
    pub const fn unary(name: &'static str) -> Self {
        MethodInfo {
            name,
            multi: false,
            require_claim: true,
            queue: true,
            affinity: false,
            subscription: false,
            idempotent: false,
        }
    }

    /// An AFFINITY-routed call: every server claims with its affinity, the caller picks one.
    pub const fn affinity(name: &'static str) -> Self {
        MethodInfo {
            name,
            multi: false,
            require_claim: true,
            queue: false,
            affinity: true,
            subscription: false,
            idempotent: false,
        }
    }

    /// A MULTI call answered by every server.
    pub const fn multi(name: &'static str) -> Self {
        MethodInfo {
            name,
            multi: true,
            require_claim: false,
            queue: false,
            affinity: false,
            subscription: false,
            idempotent: false,
        }
    }

    /// A subscription; `queue` gives each message to one subscriber instead of all.
    pub const fn subscription(name: &'static str, queue: bool) -> Self {
        MethodInfo {
            name,
            multi: false,
            require_claim: false,
            queue,
            affinity: false,
            subscription: true,
            idempotent: false,
        }
    }

    /// Skips the claim exchange (`topic_params.single_server`): every receiver handles the call.
    pub const fn single_server(mut self) -> Self {
        self.require_claim = false;
        self
    }

    /// Marks the method idempotent (generated code does so for rpcs with
    /// `option idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS`).
    ///
    /// ```
    /// const GET: psrpc::MethodInfo = psrpc::MethodInfo::unary("GetRoom").idempotent();
    /// assert!(GET.idempotent);
    /// ```
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Overrides queue delivery.
    pub const fn with_queue(mut self, queue: bool) -> Self {
        self.queue = queue;
        self
    }

    /// The routing this description corresponds to.
    pub const fn routing(&self) -> Routing {
        if self.multi {
            Routing::Multi
        } else if self.affinity || (!self.queue && self.require_claim) {
            Routing::Affinity
        } else {
            Routing::Queue
        }
    }
}
