//! Server selection among claims (docs/wire.md §6).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, MethodInfo};

/// A server's claim on a request, as seen by a custom selection function.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// The claiming server.
    pub server_id: String,
    /// Its affinity for the request.
    pub affinity: f32,
}

/// A custom choice among the acceptable claims, called when the selection window closes.
pub type SelectionFn = Arc<dyn Fn(&[Claim]) -> Result<String, Error> + Send + Sync>;

/// How a caller picks among the servers that claim a request.
///
/// Defaults depend on the method ([`SelectionOptions::for_method`]): non-affinity methods take
/// the first claim within one second; affinity methods wait up to one second, stop 200 ms after
/// the first acceptable claim, and pick the highest affinity above zero.
///
/// ```
/// use std::time::Duration;
/// use psrpc::{MethodInfo, SelectionOptions};
///
/// let opts = SelectionOptions::for_method(MethodInfo::affinity("Pick"))
///     .minimum_affinity(0.5)
///     .short_circuit_timeout(Duration::from_millis(50));
/// assert!(!opts.accept_first_available);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct SelectionOptions {
    /// Claims below this affinity are ignored (when > 0).
    pub minimum_affinity: f32,
    /// A claim at or above this affinity is taken at once (when > 0).
    pub maximum_affinity: f32,
    /// Take the first acceptable claim.
    pub accept_first_available: bool,
    /// How long to wait for claims in all.
    pub affinity_timeout: Duration,
    /// How long to keep waiting after the first acceptable claim (zero: until the timeout).
    pub short_circuit_timeout: Duration,
    /// Custom choice among the acceptable claims.
    pub selection_fn: Option<SelectionFn>,
}

impl std::fmt::Debug for SelectionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelectionOptions")
            .field("minimum_affinity", &self.minimum_affinity)
            .field("maximum_affinity", &self.maximum_affinity)
            .field("accept_first_available", &self.accept_first_available)
            .field("affinity_timeout", &self.affinity_timeout)
            .field("short_circuit_timeout", &self.short_circuit_timeout)
            .field("selection_fn", &self.selection_fn.is_some())
            .finish()
    }
}

impl Default for SelectionOptions {
    fn default() -> Self {
        SelectionOptions {
            minimum_affinity: 0.0,
            maximum_affinity: 0.0,
            accept_first_available: true,
            affinity_timeout: Duration::from_secs(1),
            short_circuit_timeout: Duration::ZERO,
            selection_fn: None,
        }
    }
}

impl SelectionOptions {
    /// The defaults for `method`.
    pub fn for_method(method: MethodInfo) -> Self {
        if method.has_affinity() {
            SelectionOptions {
                accept_first_available: false,
                short_circuit_timeout: Duration::from_millis(200),
                ..Default::default()
            }
        } else {
            SelectionOptions::default()
        }
    }

    /// Sets [`minimum_affinity`](Self::minimum_affinity).
    pub fn minimum_affinity(mut self, value: f32) -> Self {
        self.minimum_affinity = value;
        self
    }

    /// Sets [`maximum_affinity`](Self::maximum_affinity).
    pub fn maximum_affinity(mut self, value: f32) -> Self {
        self.maximum_affinity = value;
        self
    }

    /// Sets [`accept_first_available`](Self::accept_first_available).
    pub fn accept_first_available(mut self, value: bool) -> Self {
        self.accept_first_available = value;
        self
    }

    /// Sets [`affinity_timeout`](Self::affinity_timeout).
    pub fn affinity_timeout(mut self, value: Duration) -> Self {
        self.affinity_timeout = value;
        self
    }

    /// Sets [`short_circuit_timeout`](Self::short_circuit_timeout).
    pub fn short_circuit_timeout(mut self, value: Duration) -> Self {
        self.short_circuit_timeout = value;
        self
    }

    /// Sets a custom [`selection_fn`](Self::selection_fn).
    pub fn selection_fn(
        mut self,
        f: impl Fn(&[Claim]) -> Result<String, Error> + Send + Sync + 'static,
    ) -> Self {
        self.selection_fn = Some(Arc::new(f));
        self
    }
}

/// The state of one selection: fed claims, asked when to give up.
pub(crate) struct Selector<'a> {
    opts: &'a SelectionOptions,
    closes_at: Instant,
    shorted: bool,
    claims_seen: usize,
    best: Option<Claim>,
    acceptable: Vec<Claim>,
}

impl<'a> Selector<'a> {
    pub(crate) fn new(opts: &'a SelectionOptions, started: Instant) -> Self {
        Selector {
            opts,
            closes_at: crate::time::instant_after(started, opts.affinity_timeout),
            shorted: false,
            claims_seen: 0,
            best: None,
            acceptable: Vec::new(),
        }
    }

    /// When the selection window closes.
    pub(crate) fn closes_at(&self) -> Instant {
        self.closes_at
    }

    /// Feeds a claim; returns the server to choose now, if the rules say so.
    pub(crate) fn on_claim(&mut self, claim: Claim, now: Instant) -> Option<String> {
        self.claims_seen += 1;
        let opts = self.opts;
        let below_minimum = claim.affinity.is_nan() || claim.affinity < opts.minimum_affinity;
        if opts.minimum_affinity > 0.0 && below_minimum {
            return None;
        }
        if opts.accept_first_available
            || (opts.maximum_affinity > 0.0 && claim.affinity >= opts.maximum_affinity)
        {
            return Some(claim.server_id);
        }
        if opts.selection_fn.is_some() {
            self.acceptable.push(claim);
        } else if claim.affinity > self.best.as_ref().map_or(0.0, |b| b.affinity) {
            self.best = Some(claim);
        }
        if !self.shorted && !opts.short_circuit_timeout.is_zero() {
            self.shorted = true;
            self.closes_at = self
                .closes_at
                .min(crate::time::instant_after(now, opts.short_circuit_timeout));
        }
        None
    }

    /// Closes the window: the chosen server, or why there is none. `rejection` is a
    /// `malformed_request` response received meanwhile.
    pub(crate) fn finish(self, rejection: Option<Error>) -> Result<String, Error> {
        if let Some(select) = &self.opts.selection_fn {
            if !self.acceptable.is_empty() {
                return select(&self.acceptable);
            }
        } else if let Some(best) = self.best {
            return Ok(best.server_id);
        }
        if let Some(err) = rejection {
            return Err(err);
        }
        if self.claims_seen > 0 {
            Err(Error::no_servers_available())
        } else {
            Err(Error::no_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, affinity: f32) -> Claim {
        Claim {
            server_id: id.into(),
            affinity,
        }
    }

    #[test]
    fn default_accepts_first_claim_even_at_zero_affinity() {
        let opts = SelectionOptions::default();
        let now = Instant::now();
        let mut sel = Selector::new(&opts, now);
        assert_eq!(sel.on_claim(claim("a", 0.0), now).as_deref(), Some("a"));
    }

    #[test]
    fn affinity_picks_highest_and_never_zero() {
        let opts = SelectionOptions::for_method(MethodInfo::affinity("m"));
        let now = Instant::now();
        let mut sel = Selector::new(&opts, now);
        assert_eq!(sel.on_claim(claim("zero", 0.0), now), None);
        assert_eq!(sel.on_claim(claim("low", 0.25), now), None);
        assert_eq!(sel.closes_at(), now + Duration::from_millis(200));
        assert_eq!(sel.on_claim(claim("high", 0.75), now), None);
        assert_eq!(sel.finish(None).unwrap(), "high");

        let mut sel = Selector::new(&opts, now);
        sel.on_claim(claim("zero", 0.0), now);
        assert_eq!(sel.finish(None).unwrap_err(), Error::no_servers_available());
    }

    #[test]
    fn minimum_and_maximum_affinity() {
        let opts = SelectionOptions::for_method(MethodInfo::affinity("m"))
            .minimum_affinity(0.5)
            .maximum_affinity(0.9);
        let now = Instant::now();
        let mut sel = Selector::new(&opts, now);
        assert_eq!(sel.on_claim(claim("below", 0.4), now), None);
        assert_eq!(
            sel.closes_at(),
            now + Duration::from_secs(1),
            "below minimum does not short-circuit"
        );
        assert_eq!(
            sel.on_claim(claim("max", 0.95), now).as_deref(),
            Some("max")
        );
    }

    #[test]
    fn no_claims_gives_no_response_or_the_rejection() {
        let opts = SelectionOptions::default();
        let now = Instant::now();
        assert_eq!(
            Selector::new(&opts, now).finish(None).unwrap_err(),
            Error::no_response()
        );
        let rejection = Error::new(crate::ErrorCode::MalformedRequest, "bad");
        assert_eq!(
            Selector::new(&opts, now)
                .finish(Some(rejection.clone()))
                .unwrap_err(),
            rejection
        );
    }

    #[test]
    fn selection_fn_sees_acceptable_claims() {
        let opts = SelectionOptions::for_method(MethodInfo::affinity("m"))
            .minimum_affinity(0.1)
            .selection_fn(|claims| {
                Ok(claims
                    .iter()
                    .min_by(|a, b| a.affinity.total_cmp(&b.affinity))
                    .unwrap()
                    .server_id
                    .clone())
            });
        let now = Instant::now();
        let mut sel = Selector::new(&opts, now);
        sel.on_claim(claim("ignored", 0.05), now);
        sel.on_claim(claim("a", 0.3), now);
        sel.on_claim(claim("b", 0.6), now);
        assert_eq!(sel.finish(None).unwrap(), "a");
    }
}
