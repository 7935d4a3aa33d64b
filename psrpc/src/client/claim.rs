//! The claim exchange (docs/wire.md §6), written once for unary calls and stream opens: after
//! the request (or open) went out, collect the servers' claims, choose one by the selection
//! rules, and tell the servers which one it is.

use tokio::time::Instant;

use super::Inner;
use super::pending::PendingCall;
use super::reply::{Reply, response_error};
use super::select::{Claim, SelectionOptions, Selector};
use crate::bus::NoReceivers;
use crate::wire::{self, ClaimResponse, Response};
use crate::{Channel, Error, Result};

/// What a response that arrives while claims are collected means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answers {
    /// A stream open: a server never answers one with a response, so any response is a refusal
    /// (kept in case no server claims).
    Refusals,
    /// A unary call: a successful response is the answer; an error (before any claim only a
    /// `malformed_request` comes) is a refusal, kept in case no server claims.
    Successes,
    /// A direct queue call: Rust servers answer without claiming, so any response is the
    /// answer, and the selection window does not bound the wait (the deadline does).
    All,
}

/// How a claim exchange ended.
pub(super) enum Selected {
    /// The chosen server, already told so.
    Server(String),
    /// A server answered without being chosen (see [`Answers`]).
    Answered(Box<Response>),
}

impl Inner {
    /// Runs the claim exchange of `call` by the `selection` rules; its request (or open) was
    /// published at `started`.
    ///
    /// # Errors
    /// The selection's error (`no_servers_available`, `no_response` or the refusal kept),
    /// `canceled` (client closed), `deadline_exceeded`, or the bus error of the claim response.
    pub(super) async fn select_server(
        &self,
        call: &mut PendingCall,
        selection: &SelectionOptions,
        started: Instant,
        deadline: Instant,
        nobody: &mut NoReceivers,
        answers: Answers,
    ) -> Result<Selected> {
        let mut selector = Selector::new(selection, started);
        let mut rejection = None;
        // Built once for the whole exchange: a timer or token waiter re-created on every reply
        // would re-register each time.
        let closed = self.closed.cancelled();
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(closed, timeout);
        let server = loop {
            let window = (answers != Answers::All).then(|| selector.closes_at());
            tokio::select! {
                biased;
                _ = &mut closed => return Err(Error::canceled()),
                reply = call.rx.recv() => match reply {
                    Some(Reply::Claim(claim)) => {
                        let claim = Claim { server_id: claim.server_id, affinity: claim.affinity };
                        if let Some(server) = selector.on_claim(claim, Instant::now()) {
                            break server;
                        }
                    }
                    Some(Reply::Response(resp)) => match answers {
                        Answers::All => return Ok(Selected::Answered(resp)),
                        Answers::Successes if resp.error.is_empty() => {
                            return Ok(Selected::Answered(resp));
                        }
                        Answers::Successes | Answers::Refusals => {
                            rejection = Some(response_error(*resp));
                        }
                    },
                    None => return Err(Error::canceled()),
                },
                _ = sleep_until_opt(window) => break selector.finish(rejection.take())?,
                _ = &mut *nobody => return Err(Error::no_response()),
                _ = &mut timeout => return Err(Error::timed_out()),
            }
        };
        self.send_claim_response(call, &server, deadline).await?;
        Ok(Selected::Server(server))
    }

    /// Tells the servers of `call` which one of them the caller chose.
    async fn send_claim_response(
        &self,
        call: &PendingCall,
        server_id: &str,
        deadline: Instant,
    ) -> Result<()> {
        let resp = ClaimResponse {
            request_id: call.request_id.clone(),
            server_id: server_id.to_owned(),
            x_cancel: false,
        };
        let channel = Channel::claim_response(
            self.service.clone(),
            call.method,
            call.topics.iter().map(String::as_str),
        );
        let payload = wire::encode_envelope(wire::CLAIM_RESPONSE_TYPE_URL, &resp);
        // Bounded by the call's deadline, as the request's publish.
        tokio::time::timeout_at(deadline, self.bus.publish(&channel, payload))
            .await
            .map_err(|_| Error::timed_out())??;
        Ok(())
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
