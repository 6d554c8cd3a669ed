//! [`JobWorker`]: one slot of the node's worker pool (`queue.workers` of them under
//! the `queue-workers` supervisor). Its run loop takes the next job delivery,
//! claims the job ([`JobStore::claim`]), runs its [`JobHandler`] with a lease
//! heartbeat and the job's deadline, records the outcome and only then
//! acknowledges the delivery.
//!
//! The loop lives in the actor's state: killing the worker (chaos, a panic) drops
//! the attempt and its delivery, which goes back to the queue and is taken over by
//! the next worker from the job's last checkpoint. The job deadline
//! (`queue.job_timeout_secs`) is the pool's dead-man's switch: past it the attempt
//! is cancelled, given a short grace, then dropped and counted as failed, and the
//! worker takes its next delivery.

pub mod run;
pub mod running;

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use self::run::Attempt;
use super::Queue;
use super::broker::Broker;
use super::transport::Delivery;
use crate::supervision::chaos::chaos_panic;
use crate::supervision::child::{ChaosTarget, ChildSpec, StartedChild};
use crate::supervision::tree::ActorStats;
use running::Running;

/// What every worker of the node shares.
pub struct Pool {
    pub queue: Queue,
    pub broker: Broker,
    pub deliveries: Mutex<mpsc::Receiver<Delivery>>,
    pub running: Running,
    /// This node's id: the jobs' `locked_by`.
    pub node: String,
    pub limits: run::Limits,
}

/// Messages a JobWorker handles.
pub enum WorkerMsg {
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for WorkerMsg {}

impl ChaosTarget for WorkerMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// A pool slot (configuration: none).
pub struct JobWorker;

/// What a worker starts with.
pub struct WorkerArgs {
    pub pool: Arc<Pool>,
    pub stats: Arc<ActorStats>,
}

/// Its state: the run loop, aborted with it.
pub struct WorkerState {
    _run: JoinSet<()>,
    stats: Arc<ActorStats>,
}

impl Actor for JobWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let mut run = JoinSet::new();
        run.spawn(run_loop(args.pool));
        Ok(WorkerState { _run: run, stats: args.stats })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match msg {
            WorkerMsg::Panic => chaos_panic("job-worker"),
        }
    }
}

async fn run_loop(pool: Arc<Pool>) {
    loop {
        let delivery = {
            let mut deliveries = pool.deliveries.lock().await;
            deliveries.recv().await
        };
        let Some(delivery) = delivery else {
            return;
        };
        Attempt::new(&pool, delivery).run().await;
    }
}

/// `queue.workers` JobWorkers named `job-worker-<i>`.
pub fn children(pool: &Arc<Pool>, count: usize) -> Vec<ChildSpec> {
    (0..count)
        .map(|i| {
            let pool = pool.clone();
            ChildSpec::new(format!("job-worker-{i}"), "job-worker", move |ctx| {
                let args = WorkerArgs { pool: pool.clone(), stats: ctx.stats };
                async move {
                    let (actor, _handle) = Actor::spawn_linked(None, JobWorker, args, ctx.supervisor).await?;
                    Ok(StartedChild::worker(actor))
                }
            })
        })
        .collect()
}
