//! The command writer: one task sends the bus's `PUBLISH`es and lock `SET`s as Redis pipelines.
//!
//! Publishers put their command in a bounded queue with a one-shot slot for the answer; the
//! push connection puts the messages awaiting a queue lock in a second bounded queue, and the
//! writer settles each lock itself when its reply arrives (see [`LockJob::settle`]). The writer
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
use crate::lock::LockJob;
use crate::op::OpError;
use crate::router::Router;

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
    Lock(LockJob),
}

/// The queue of messages awaiting their lock `SET`, and its limits.
pub(crate) struct Locks {
    /// Fed by the push connection ([`crate::push::route_push`]), which never waits: bounded by
    /// [`crate::RedisBusOptions::max_pending_locks`].
    pub(crate) queue: mpsc::Receiver<LockJob>,
    /// The most lock `SET`s on the way at once
    /// ([`crate::RedisBusOptions::max_concurrent_locks`]).
    pub(crate) limit: usize,
    /// Where the lock outcomes are counted.
    pub(crate) router: Arc<Router>,
}

/// The queue side of the writer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on `conn`; it ends once every [`Writer`] is gone and the queue is
    /// drained (locks still waiting then are dropped: the bus that wanted them is gone).
    pub(crate) fn start(
        conn: Conn,
        queue: usize,
        max_batch: usize,
        timeout: Option<Duration>,
        locks: Locks,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(rx, locks, conn, max_batch.max(1), timeout));
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
    locks: Locks,
    conn: Conn,
    max_batch: usize,
    timeout: Option<Duration>,
) {
    let Locks {
        queue: mut lock_queue,
        limit,
        router,
    } = locks;
    let lock_limit = limit.max(1);
    let mut in_flight = FuturesUnordered::new();
    // Lock `SET`s in the pipelines on the way.
    let mut locks_on_the_way = 0;
    let mut open = true;
    while open || !in_flight.is_empty() {
        let room = in_flight.len() < IN_FLIGHT;
        let lock_room = locks_on_the_way < lock_limit;
        // The first job of a new batch, if this turn takes one.
        let mut batch = Batch::default();
        tokio::select! {
            // Answers first: they make room for the next batch.
            biased;
            Some((settled, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                locks_on_the_way -= settled;
                if let Err(err) = outcome as Result<(), Arc<OpError>> {
                    // The connection is gone: what waits in the queues was meant for it. Fail
                    // it now rather than let each batch wait out a reconnect of its own.
                    while let Ok(job) = jobs.try_recv() {
                        let (Job::Command(_, tx) | Job::Flush(tx)) = job;
                        answer(Slot::Command(tx), Err(err.clone()), &router);
                    }
                    while let Ok(lock) = lock_queue.try_recv() {
                        answer(Slot::Lock(lock), Err(err.clone()), &router);
                    }
                }
            }
            first = jobs.recv(), if open && room => match first {
                Some(job) => batch.add(job),
                None => open = false,
            },
            Some(first) = lock_queue.recv(), if open && room && lock_room => batch.add_lock(first),
        }
        if !batch.slots.is_empty() {
            batch.fill(
                &mut jobs,
                &mut lock_queue,
                max_batch,
                lock_limit - locks_on_the_way,
            );
            locks_on_the_way += batch.locks;
            in_flight.push(send_batch(conn.clone(), batch, timeout, &router));
        }
    }
}

/// Commands taken from the queues, and where their replies go.
#[derive(Default)]
struct Batch {
    pipe: redis::Pipeline,
    slots: Vec<Slot>,
    /// How many of the slots are lock `SET`s.
    locks: usize,
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

    fn add_lock(&mut self, lock: LockJob) {
        self.pipe.add_command(lock.command());
        self.slots.push(Slot::Lock(lock));
        self.locks += 1;
    }

    /// Adds what is already queued, up to `max_batch` slots and `max_locks` lock `SET`s. Locks
    /// get at least half of a full batch, so neither a publish flood nor a lock flood starves
    /// the other.
    fn fill(
        &mut self,
        jobs: &mut mpsc::Receiver<Job>,
        locks: &mut mpsc::Receiver<LockJob>,
        max_batch: usize,
        max_locks: usize,
    ) {
        let take_locks = |batch: &mut Self, locks: &mut mpsc::Receiver<LockJob>, up_to: usize| {
            while batch.slots.len() < max_batch && batch.locks < up_to {
                match locks.try_recv() {
                    Ok(lock) => batch.add_lock(lock),
                    Err(_) => break,
                }
            }
        };
        take_locks(self, locks, max_locks.min(max_batch.div_ceil(2)));
        while self.slots.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => self.add(job),
                Err(_) => break,
            }
        }
        take_locks(self, locks, max_locks);
    }
}

/// Sends one batch as a pipeline and answers each of its callers; returns how many lock `SET`s
/// it settled, and the error when the connection was lost.
async fn send_batch(
    conn: Conn,
    batch: Batch,
    timeout: Option<Duration>,
    router: &Router,
) -> (usize, Result<(), Arc<OpError>>) {
    let settled = batch.locks;
    let mut conn = match conn {
        Conn::Single(conn) => conn,
        Conn::Cluster(conn) => {
            send_cluster_batch(conn, batch, timeout, router).await;
            return (settled, Ok(()));
        }
    };
    let Batch {
        mut pipe, slots, ..
    } = batch;
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
                answer(slot, Err(err.clone()), router);
            }
            let outcome = if err.is_connection_lost() {
                Err(err)
            } else {
                Ok(())
            };
            return (settled, outcome);
        }
    };
    if ping {
        replies.next();
    }
    for slot in slots {
        let reply = match slot {
            Slot::Flush(_) => Ok(Value::Okay),
            Slot::Command(_) | Slot::Lock(_) => replies.next().ok_or_else(|| {
                Arc::new(OpError::Redis(RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "pipeline answered fewer commands than it sent",
                ))))
            }),
        };
        answer(slot, reply, router);
    }
    (settled, Ok(()))
}

/// Hands `reply` to where `slot` says.
fn answer(slot: Slot, reply: Reply, router: &Router) {
    match slot {
        // A caller that went away does not need its answer; the command was sent.
        Slot::Command(tx) | Slot::Flush(tx) => {
            let _ = tx.send(reply);
        }
        Slot::Lock(lock) => lock.settle(&router.counters, reply),
    }
}

/// A batch on a cluster: the lock keys of one batch live on different shards, so the commands
/// go one by one (concurrently, multiplexed per node) for the cluster connection to route. The
/// loss of one node fails only the commands bound for it, so nothing else is failed here.
async fn send_cluster_batch(
    conn: redis::cluster_async::ClusterConnection,
    batch: Batch,
    timeout: Option<Duration>,
    router: &Router,
) {
    let Batch { pipe, slots, .. } = batch;
    let mut commands = pipe.cmd_iter();
    let mut flushes = Vec::new();
    let mut sends = Vec::new();
    for slot in slots {
        if let Slot::Flush(tx) = slot {
            flushes.push(tx);
            continue;
        }
        let Some(cmd) = commands.next().cloned() else {
            continue;
        };
        let mut conn = conn.clone();
        sends.push(async move {
            let reply = crate::op::with_timeout(timeout, cmd.query_async::<Value>(&mut conn))
                .await
                .map_err(Arc::new);
            answer(slot, reply, router);
        });
    }
    futures::future::join_all(sends).await;
    // Every command queued before a flush has been answered by now.
    for tx in flushes {
        let _ = tx.send(Ok(Value::Okay));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Entry;

    /// `commands` publishes and `locks` lock jobs waiting in the writer's two queues.
    fn queues(commands: usize, locks: usize) -> (mpsc::Receiver<Job>, mpsc::Receiver<LockJob>) {
        let (job_tx, job_rx) = mpsc::channel(commands.max(1));
        for _ in 0..commands {
            let (tx, _rx) = oneshot::channel();
            job_tx.try_send(Job::Command(redis::cmd("PING"), tx)).ok();
        }
        let (lock_tx, lock_rx) = mpsc::channel(locks.max(1));
        let entry = Arc::new(Entry::new("ch".into(), None));
        for i in 0..locks {
            let payload = bytes::Bytes::from(i.to_string());
            let entry = entry.clone();
            lock_tx.try_send(LockJob { entry, payload }).ok();
        }
        (job_rx, lock_rx)
    }

    /// (lock SETs, other slots) of one batch filled from the queues.
    fn fill(commands: usize, locks: usize, max_batch: usize, max_locks: usize) -> (usize, usize) {
        let (mut jobs, mut lock_jobs) = queues(commands, locks);
        let mut batch = Batch::default();
        batch.fill(&mut jobs, &mut lock_jobs, max_batch, max_locks);
        (batch.locks, batch.slots.len() - batch.locks)
    }

    #[test]
    fn a_full_batch_shares_itself_between_publishes_and_locks() {
        // Both queues full: half each, so neither flood starves the other.
        assert_eq!(fill(1000, 1000, 512, 1024), (256, 256));
        // One queue empty: the other takes the whole batch.
        assert_eq!(fill(1000, 0, 512, 1024), (0, 512));
        assert_eq!(fill(0, 1000, 512, 1024), (512, 0));
        // Few locks waiting: publishes fill the rest.
        assert_eq!(fill(1000, 10, 512, 1024), (10, 502));
        // The lock limit holds however much room is left.
        assert_eq!(fill(1000, 1000, 512, 3), (3, 509));
        assert_eq!(fill(0, 1000, 512, 3), (3, 0));
    }
}
