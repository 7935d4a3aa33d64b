//! The command writer: one task sends the bus's `PUBLISH`es and lock `SET`s as Redis pipelines.
//!
//! Callers put their command in a bounded queue with a one-shot slot for the answer; the writer
//! takes whatever has queued up (up to [`crate::RedisBusOptions::max_batch`] commands), sends
//! it as one pipeline and hands each caller the reply to its own command. While one pipeline is
//! on the way the next ones fill up, so the batch size follows the load by itself: one command
//! when idle, hundreds under a flood. Measured against the multiplexed connection's own
//! pipelining of concurrent single commands (see BENCHMARKS.md), explicit pipelines cost a
//! fraction of the client CPU per command: one write, one future and one wake-up per batch.
//!
//! Order: commands are written in queue order on one connection, so publishes of one caller
//! reach Redis in the order they were made.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::{Cmd, RedisError, Value};
use tokio::sync::{mpsc, oneshot};

use crate::conn::Conn;
use crate::op::OpError;

/// Pipelines on the way at once. Two keep Redis busy while the next batch is assembled; more
/// only split the same queue into smaller batches.
const IN_FLIGHT: usize = 2;

/// What a command's caller gets back: the reply (possibly a server error value), or why the
/// whole pipeline failed.
pub(crate) type Reply = Result<Value, Arc<OpError>>;

enum Job {
    /// A command and where its reply goes.
    Command(Cmd, oneshot::Sender<Reply>),
    /// Answered once every command queued before it has been answered.
    Flush(oneshot::Sender<Reply>),
}

/// Where the replies of one pipeline go, in order.
enum Slot {
    Command(oneshot::Sender<Reply>),
    Flush(oneshot::Sender<Reply>),
}

/// The queue side of the writer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `conn`; it ends once every [`Writer`] is gone and the queue is
    /// drained.
    pub(crate) fn start(
        conn: Conn,
        queue: usize,
        max_batch: usize,
        timeout: Option<Duration>,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(rx, conn, max_batch.max(1), timeout));
        Writer { jobs }
    }

    /// Queues `cmd` and waits for its reply.
    ///
    /// Cancel safety: dropping the future while it waits for room in the queue queues nothing;
    /// once queued, the command is sent whether or not the future is still there.
    pub(crate) async fn send(&self, cmd: Cmd) -> Reply {
        self.submit(|tx| Job::Command(cmd, tx)).await
    }

    /// Resolves once every command queued before has been answered by Redis (or failed).
    pub(crate) async fn flush(&self) -> Reply {
        self.submit(Job::Flush).await
    }

    async fn submit(&self, job: impl FnOnce(oneshot::Sender<Reply>) -> Job) -> Reply {
        let closed = || Arc::new(OpError::Closed);
        // Reserve first: a future dropped while waiting for room has queued nothing.
        let permit = self.jobs.reserve().await.map_err(|_| closed())?;
        let (tx, rx) = oneshot::channel();
        permit.send(job(tx));
        rx.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// The writer task.
async fn run(
    mut jobs: mpsc::Receiver<Job>,
    conn: Conn,
    max_batch: usize,
    timeout: Option<Duration>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            // Answers first: they make room for the next batch.
            biased;
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(err) = outcome as Result<(), Arc<OpError>> {
                    // The connection is gone: what waits in the queue was meant for it. Fail
                    // it now rather than let each batch wait out a reconnect of its own.
                    while let Ok(job) = jobs.try_recv() {
                        let (Job::Command(_, tx) | Job::Flush(tx)) = job;
                        let _ = tx.send(Err(err.clone()));
                    }
                }
            }
            first = jobs.recv(), if open && in_flight.len() < IN_FLIGHT => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut batch = Batch::default();
                batch.add(first);
                while batch.slots.len() < max_batch {
                    match jobs.try_recv() {
                        Ok(job) => batch.add(job),
                        Err(_) => break,
                    }
                }
                in_flight.push(send_batch(conn.clone(), batch, timeout));
            }
        }
    }
}

/// Commands taken from the queue, and where their replies go.
#[derive(Default)]
struct Batch {
    pipe: redis::Pipeline,
    slots: Vec<Slot>,
}

impl Batch {
    fn add(&mut self, job: Job) {
        match job {
            Job::Command(cmd, tx) => {
                self.pipe.add_command(cmd);
                self.slots.push(Slot::Command(tx));
            }
            Job::Flush(tx) => self.slots.push(Slot::Flush(tx)),
        }
    }
}

/// Sends one batch as a pipeline and answers each of its callers; returns the error when the
/// connection was lost.
async fn send_batch(
    conn: Conn,
    batch: Batch,
    timeout: Option<Duration>,
) -> Result<(), Arc<OpError>> {
    let mut conn = match conn {
        Conn::Single(conn) => conn,
        Conn::Cluster(conn) => {
            send_cluster_batch(conn, batch, timeout).await;
            return Ok(());
        }
    };
    let Batch { mut pipe, slots } = batch;
    // Per-command server errors come back as values, each to its own caller.
    pipe.ignore_errors();
    // A batch of flushes alone still needs a round trip behind the earlier commands.
    let ping = pipe.is_empty();
    if ping {
        pipe.cmd("PING");
    }
    let result: Result<Vec<Value>, OpError> =
        crate::op::with_timeout(timeout, pipe.query_async(&mut conn)).await;
    let mut replies = match result {
        Ok(values) => values.into_iter(),
        Err(err) => {
            let err = Arc::new(err);
            for slot in slots {
                let (Slot::Command(tx) | Slot::Flush(tx)) = slot;
                let _ = tx.send(Err(err.clone()));
            }
            return if err.is_connection_lost() {
                Err(err)
            } else {
                Ok(())
            };
        }
    };
    if ping {
        replies.next();
    }
    for slot in slots {
        match slot {
            Slot::Command(tx) => {
                let reply = replies.next().ok_or_else(|| {
                    Arc::new(OpError::Redis(RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "pipeline answered fewer commands than it sent",
                    ))))
                });
                // A caller that went away does not need its answer; the command was sent.
                let _ = tx.send(reply);
            }
            Slot::Flush(tx) => {
                let _ = tx.send(Ok(Value::Okay));
            }
        }
    }
    Ok(())
}

/// A batch on a cluster: the lock keys of one batch live on different shards, so the commands
/// go one by one (concurrently, multiplexed per node) for the cluster connection to route. The
/// loss of one node fails only the commands bound for it, so nothing else is failed here.
async fn send_cluster_batch(
    conn: redis::cluster_async::ClusterConnection,
    batch: Batch,
    timeout: Option<Duration>,
) {
    let Batch { pipe, slots } = batch;
    let mut commands = pipe.cmd_iter();
    let mut flushes = Vec::new();
    let mut sends = Vec::new();
    for slot in slots {
        match slot {
            Slot::Flush(tx) => flushes.push(tx),
            Slot::Command(tx) => {
                let Some(cmd) = commands.next().cloned() else {
                    continue;
                };
                let mut conn = conn.clone();
                sends.push(async move {
                    let reply =
                        crate::op::with_timeout(timeout, cmd.query_async::<Value>(&mut conn))
                            .await
                            .map_err(Arc::new);
                    let _ = tx.send(reply);
                });
            }
        }
    }
    futures::future::join_all(sends).await;
    // Every command queued before a flush has been answered by now.
    for tx in flushes {
        let _ = tx.send(Ok(Value::Okay));
    }
}
