//! The claim exchange on the server side: claims, the caller's answers, and answers that
//! arrive before their claim (docs/wire.md §5).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use prost::Message;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::stats::Counters;
use super::{Inner, Registration, lock};
use crate::Channel;
use crate::bus::Subscription;
use crate::wire::{self, ClaimRequest, ClaimResponse};

/// How many early answers a server remembers. Answers to requests this server never sees
/// (another server took the queue message) land here too, so the oldest are forgotten.
const EARLY_ANSWERS: usize = 4096;

/// Callers' choices that arrived before this server claimed their request: without them, a
/// server slower than the winner would wait for an answer already given, until the deadline,
/// holding a task (and a concurrency permit) all that time.
#[derive(Default)]
pub(super) struct EarlyAnswers {
    by_request: DashMap<String, ClaimResponse>,
    order: Mutex<VecDeque<String>>,
}

impl EarlyAnswers {
    pub(super) fn insert(&self, answer: ClaimResponse) {
        let id = answer.request_id.clone();
        self.by_request.insert(id.clone(), answer);
        let mut order = lock(&self.order);
        order.push_back(id);
        if order.len() > EARLY_ANSWERS
            && let Some(oldest) = order.pop_front()
        {
            self.by_request.remove(&oldest);
        }
    }

    pub(super) fn take(&self, request_id: &str) -> Option<ClaimResponse> {
        self.by_request.remove(request_id).map(|(_, answer)| answer)
    }
}

pub(super) async fn claim_loop(inner: Arc<Inner>, mut sub: Subscription, reg: Registration) {
    // Keep listening until the requests of this registration have stopped and drained, so a
    // handler waiting for its claim answer during shutdown still gets it.
    let drained = reg.handlers.wait();
    let stop_all = inner.stop_all.cancelled();
    tokio::pin!(drained, stop_all);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop_all => break,
            _ = &mut drained => break,
            payload = sub.recv() => match payload {
                // Queue requests reach one server: an answer to one it has not seen is for
                // another server, unless it cancels a request still on its way here.
                Some(payload) => inner.on_claim_response(payload, !reg.method.is_queued()),
                None => break,
            },
        }
    }
}

impl Inner {
    /// Routes a caller's answer to the claim waiting for it. With nobody waiting it is kept
    /// for a claim still to come: every answer when `all_early` (fan-out claims, where every
    /// server claims), otherwise only cancellations.
    pub(super) fn on_claim_response(&self, payload: Bytes, all_early: bool) {
        let resp = match wire::decode_envelope(payload) {
            Ok(msg) if msg.type_url == wire::CLAIM_RESPONSE_TYPE_URL => {
                ClaimResponse::decode(msg.value).ok()
            }
            _ => None,
        };
        let Some(resp) = resp else {
            Counters::incr(&self.counters.malformed);
            return;
        };
        if resp.x_cancel
            && let Some(token) = self.running.get(&resp.request_id)
        {
            token.cancel();
        }
        if let Some((_, waiter)) = self.claims.remove(&resp.request_id) {
            let _ = waiter.send(resp);
            return;
        }
        // Nobody waits yet: the caller may have chosen before this server got to claim.
        if !all_early && !resp.x_cancel {
            return;
        }
        let request_id = resp.request_id.clone();
        self.early.insert(resp);
        // A claim made meanwhile may have missed the entry: hand it over.
        if let Some((_, waiter)) = self.claims.remove(&request_id)
            && let Some(resp) = self.early.take(&request_id)
        {
            let _ = waiter.send(resp);
        }
    }

    /// Runs the claim exchange; true if this server was chosen.
    pub(super) async fn claim(
        &self,
        request_id: &str,
        client_id: &str,
        affinity: f32,
        deadline: Instant,
    ) -> bool {
        // NaN or negative: this server declines.
        if affinity.is_nan() || affinity < 0.0 {
            return false;
        }
        let (tx, mut rx) = oneshot::channel();
        self.claims.insert(request_id.to_owned(), tx);
        // Decided before we claimed (by a faster server's claim, or cancelled): no wait.
        if let Some(answer) = self.early.take(request_id) {
            self.claims.remove(request_id);
            return self.claim_result(Some(answer));
        }
        let claim = ClaimRequest {
            request_id: request_id.to_owned(),
            server_id: self.id.to_string(),
            affinity,
        };
        let channel = Channel::claim(self.service.clone(), client_id);
        let payload = wire::encode_envelope(wire::CLAIM_REQUEST_TYPE_URL, &claim);
        let chosen = match self.bus.publish(&channel, payload).await {
            Err(err) => {
                Counters::incr(&self.counters.publish_errors);
                tracing::warn!(%err, "failed to publish a claim");
                None
            }
            Ok(()) => tokio::select! {
                biased;
                _ = self.kill.cancelled() => None,
                answer = tokio::time::timeout_at(deadline, &mut rx) => answer.ok().and_then(Result::ok),
            },
        };
        self.claims.remove(request_id);
        // An answer handed over after the wait ended still counts.
        self.claim_result(chosen.or_else(|| rx.try_recv().ok()))
    }

    fn claim_result(&self, chosen: Option<ClaimResponse>) -> bool {
        let won = chosen.is_some_and(|c| *c.server_id == *self.id && !c.x_cancel);
        if !won {
            Counters::incr(&self.counters.claims_lost);
        }
        won
    }
}
