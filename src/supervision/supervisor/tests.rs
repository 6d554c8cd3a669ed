//! The supervisor driven through its messages, with small test actors, in paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{ActorStatus, Message};
use tokio::sync::{Notify, broadcast};

use super::*;
use crate::supervision::child::{ChaosTarget, ChildContext, Restart};
use crate::supervision::events::{DownSet, LifecycleEvent, LifecycleKind};
use crate::supervision::handle::SupervisorHandle;
use crate::supervision::slot::ActorSlot;
use crate::supervision::tree::NodeStatus;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const WAIT: Duration = Duration::from_secs(1);

// ---- test actors ----

/// A worker that answers pings and panics on request.
struct Worker;

enum WorkerMsg {
    Ping(RpcReplyPort<u32>),
    Panic,
}

impl Message for WorkerMsg {}

impl ChaosTarget for WorkerMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = Arc<ActorStats>;
    type Arguments = Arc<ActorStats>;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        stats: Arc<ActorStats>,
    ) -> Result<Arc<ActorStats>, ActorProcessingErr> {
        Ok(stats)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        stats: &mut Arc<ActorStats>,
    ) -> Result<(), ActorProcessingErr> {
        stats.handled();
        match message {
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(1);
            }
            WorkerMsg::Panic => chaos_panic("worker"),
        }
        Ok(())
    }
}

/// Pretends to be a supervisor and never answers a snapshot.
struct Deaf;

impl Actor for Deaf {
    type Msg = SupervisorMsg;
    type State = Vec<RpcReplyPort<Vec<ActorNode>>>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Vec::new())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        held: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisorMsg::Snapshot { reply, .. } = message {
            held.push(reply);
        }
        Ok(())
    }
}

// ---- specs ----

async fn spawn_worker(
    ctx: ChildContext,
    slot: ActorSlot<WorkerMsg>,
) -> Result<StartedChild, ractor::SpawnErr> {
    let (actor, _handle) = Actor::spawn_linked(None, Worker, ctx.stats, ctx.supervisor).await?;
    slot.set(actor.clone());
    Ok(StartedChild::worker(actor))
}

fn worker(name: &str, slot: &ActorSlot<WorkerMsg>) -> ChildSpec {
    let published = slot.clone();
    ChildSpec::new(name.to_owned(), "worker", move |ctx| spawn_worker(ctx, published.clone())).with_slot(slot)
}

fn config(name: &str, strategy: RestartStrategy) -> Supervisor {
    Supervisor {
        name: name.to_owned(),
        strategy,
        intensity: RestartIntensity { max_restarts: 3, within: Duration::from_secs(60) },
        backoff: Backoff::new(ms(10), ms(100), 2.0, 0.0).unwrap(),
        down_retry: None,
        ask_timeout: WAIT,
        shutdown_timeout: WAIT,
        start_timeout: Duration::from_secs(2),
    }
}

fn nested(name: &str, children: impl Fn() -> Vec<ChildSpec> + Send + Sync + 'static) -> ChildSpec {
    let sup = config(name, RestartStrategy::OneForOne);
    ChildSpec::new(name.to_owned(), "supervisor", move |ctx| {
        let (sup, children) = (sup.clone(), children());
        async move {
            let args = SupervisorArgs { children, stats: ctx.stats, events: ctx.events };
            let (actor, _handle) = Actor::spawn_linked(None, sup, args, ctx.supervisor).await?;
            Ok(StartedChild::supervisor(actor))
        }
    })
}

fn deaf(name: &str) -> ChildSpec {
    ChildSpec::new(name.to_owned(), "supervisor", |ctx| async move {
        let (actor, _handle) = Actor::spawn_linked(None, Deaf, (), ctx.supervisor).await?;
        Ok(StartedChild::supervisor(actor))
    })
}

// ---- a running tree ----

struct Tree {
    handle: SupervisorHandle,
    rx: broadcast::Receiver<LifecycleEvent>,
    down: DownSet,
}

async fn start(sup: Supervisor, children: Vec<ChildSpec>) -> Tree {
    let events = LifecycleEvents::new();
    let down = DownSet::attach(&events);
    let rx = events.subscribe();
    let args = SupervisorArgs { children, stats: Arc::default(), events };
    let (actor, _handle) = Actor::spawn(None, sup, args).await.unwrap();
    Tree { handle: actor.into(), rx, down }
}

impl Tree {
    async fn nodes(&self) -> Vec<ActorNode> {
        self.handle.snapshot(WAIT).await.expect("the supervisor answers")
    }

    /// Polls the snapshot (advancing paused time 10 ms a round) until `check` holds.
    async fn until(&self, what: &str, check: impl Fn(&[ActorNode]) -> bool) -> Vec<ActorNode> {
        for _ in 0..2000 {
            let nodes = self.nodes().await;
            if check(&nodes) {
                return nodes;
            }
            tokio::time::sleep(ms(10)).await;
        }
        panic!("never {what}: {:#?}", self.nodes().await)
    }

    /// The events published so far, as (child, kind).
    fn events(&mut self) -> Vec<(String, LifecycleKind)> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).map(|e| (e.child.to_string(), e.kind)).collect()
    }
}

fn node<'a>(nodes: &'a [ActorNode], name: &str) -> &'a ActorNode {
    nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no {name} in {nodes:#?}"))
}

fn is(nodes: &[ActorNode], name: &str, status: NodeStatus, restarts: u64) -> bool {
    nodes.iter().any(|n| n.name == name && n.status == status && n.restarts == restarts)
}

fn all_running(nodes: &[ActorNode]) -> bool {
    nodes.iter().all(|n| n.status == NodeStatus::Running)
}

fn ids(nodes: &[ActorNode]) -> Vec<Option<String>> {
    nodes.iter().map(|n| n.actor_id.clone()).collect()
}

fn slots(n: usize) -> Vec<ActorSlot<WorkerMsg>> {
    (0..n).map(|i| ActorSlot::new(format!("w{i}"))).collect()
}

fn kill(slot: &ActorSlot<WorkerMsg>) {
    slot.get().expect("an incarnation").kill();
}

// ---- strategies ----

/// Kills the middle of three workers; `restarted[i]`: whether child i gets a new incarnation.
async fn kill_the_middle_one(strategy: RestartStrategy, restarted: [bool; 3]) {
    let slots = slots(3);
    let children = slots.iter().enumerate().map(|(i, s)| worker(&format!("w{i}"), s)).collect();
    let tree = start(config("sup", strategy), children).await;
    let before = tree.until("all running", all_running).await;
    kill(&slots[1]);
    let after = tree.until("w1 restarted", |n| all_running(n) && is(n, "w1", NodeStatus::Running, 1)).await;
    for (i, (old, new)) in ids(&before).into_iter().zip(ids(&after)).enumerate() {
        assert_eq!(old != new, restarted[i], "child {i} under {strategy}: {after:#?}");
        assert_eq!(after[i].restarts, u64::from(restarted[i]));
    }
    assert_eq!(node(&after, "w1").last_failure.as_ref().map(|f| f.kind), Some(FailureKind::Killed));
    // the new incarnations answer through their slots
    for slot in &slots {
        assert_eq!(slot.ask(WAIT, WorkerMsg::Ping).await, Ok(1));
    }
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child() {
    kill_the_middle_one(RestartStrategy::OneForOne, [false, true, false]).await;
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_child() {
    kill_the_middle_one(RestartStrategy::OneForAll, [true, true, true]).await;
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    kill_the_middle_one(RestartStrategy::RestForOne, [false, true, true]).await;
}

// ---- restart policies ----

#[tokio::test(start_paused = true)]
async fn a_permanent_child_is_restarted_after_a_clean_stop() {
    let slot = ActorSlot::new("perm");
    let tree = start(config("sup", RestartStrategy::OneForOne), vec![worker("perm", &slot)]).await;
    tree.until("running", all_running).await;
    slot.get().unwrap().stop(None);
    let nodes = tree.until("restarted", |n| is(n, "perm", NodeStatus::Running, 1)).await;
    assert_eq!(node(&nodes, "perm").last_failure.as_ref().map(|f| f.kind), Some(FailureKind::Stopped));
}

#[tokio::test(start_paused = true)]
async fn a_transient_child_stays_stopped_after_a_clean_stop_but_is_restarted_after_a_panic() {
    let (clean, crash) = (ActorSlot::new("clean"), ActorSlot::new("crash"));
    let children = vec![
        worker("clean", &clean).with_restart(Restart::Transient),
        worker("crash", &crash).with_restart(Restart::Transient),
    ];
    let mut tree = start(config("sup", RestartStrategy::OneForOne), children).await;
    tree.until("running", all_running).await;

    clean.get().unwrap().stop(None);
    assert!(crash.cast(WorkerMsg::Panic));
    let nodes = tree
        .until("settled", |n| {
            is(n, "clean", NodeStatus::Stopped, 0) && is(n, "crash", NodeStatus::Running, 1)
        })
        .await;
    assert_eq!(node(&nodes, "crash").last_failure.as_ref().map(|f| f.kind), Some(FailureKind::Failed));
    assert_eq!(node(&nodes, "clean").actor_id, None);

    // well past any backoff it is still stopped, and chaos cannot reach it
    tokio::time::sleep(Duration::from_secs(5)).await;
    let nodes = tree.nodes().await;
    assert!(is(&nodes, "clean", NodeStatus::Stopped, 0), "{nodes:#?}");
    let chaos = |reply| SupervisorMsg::Chaos { target: "clean".into(), action: ChaosAction::Kill, reply };
    let refused = tree.handle.actor().call(chaos, Some(WAIT)).await.unwrap().unwrap();
    assert_eq!(refused, Err(ChaosError::NotRunning("clean".into())));
    let clean_events: Vec<_> =
        tree.events().into_iter().filter(|(c, _)| c == "clean").map(|(_, k)| k).collect();
    assert!(
        matches!(clean_events.as_slice(), [LifecycleKind::Started, LifecycleKind::Exited { .. }]),
        "{clean_events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_temporary_child_is_never_restarted() {
    let slot = ActorSlot::new("temp");
    let tree = start(
        config("sup", RestartStrategy::OneForOne),
        vec![worker("temp", &slot).with_restart(Restart::Temporary)],
    )
    .await;
    tree.until("running", all_running).await;
    kill(&slot);
    tree.until("stopped", |n| is(n, "temp", NodeStatus::Stopped, 0)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(is(&tree.nodes().await, "temp", NodeStatus::Stopped, 0));
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_transient_siblings_but_leaves_temporary_ones_stopped() {
    let slots = slots(3);
    let children = vec![
        worker("w0", &slots[0]),
        worker("w1", &slots[1]).with_restart(Restart::Transient),
        worker("w2", &slots[2]).with_restart(Restart::Temporary),
    ];
    let mut tree = start(config("sup", RestartStrategy::OneForAll), children).await;
    let before = tree.until("running", all_running).await;
    kill(&slots[0]);
    let after = tree
        .until("restarted", |n| {
            is(n, "w0", NodeStatus::Running, 1)
                && is(n, "w1", NodeStatus::Running, 1)
                && is(n, "w2", NodeStatus::Stopped, 0)
        })
        .await;
    assert_ne!(ids(&before)[1], ids(&after)[1]);
    assert_eq!(slots[2].get().map(|a| a.get_status()), Some(ActorStatus::Stopped));
    // subscribers see the temporary sibling go, though nothing failed in it
    let exited: Vec<_> = tree
        .events()
        .into_iter()
        .filter(|(c, k)| c == "w2" && matches!(k, LifecycleKind::Exited { .. }))
        .collect();
    assert_eq!(exited.len(), 1, "{exited:?}");
}

// ---- intensity ----

#[tokio::test(start_paused = true)]
async fn past_the_intensity_a_child_is_down_and_the_supervisor_still_answers() {
    let (flaky, steady) = (ActorSlot::new("flaky"), ActorSlot::new("steady"));
    let mut sup = config("sup", RestartStrategy::OneForOne);
    sup.intensity.max_restarts = 2;
    sup.down_retry = Some(Duration::from_secs(120));
    let children = vec![worker("flaky", &flaky), worker("steady", &steady)];
    let mut tree = start(sup, children).await;
    tree.until("running", all_running).await;
    for round in 1..=2 {
        kill(&flaky);
        tree.until("restarted", |n| is(n, "flaky", NodeStatus::Running, round)).await;
    }
    assert!(tree.down.down().is_empty());
    kill(&flaky);
    let nodes = tree.until("down", |n| is(n, "flaky", NodeStatus::Down, 2)).await;
    assert!(is(&nodes, "steady", NodeStatus::Running, 0), "a sibling is not touched: {nodes:#?}");
    assert_eq!(tree.down.down(), ["flaky"]);
    assert!(flaky.is_down());
    assert!(matches!(
        flaky.ask(WAIT, WorkerMsg::Ping).await,
        Err(crate::supervision::slot::AskError::Down(_))
    ));
    assert!(tree.events().iter().any(|(c, k)| c == "flaky" && *k == LifecycleKind::Down));

    // the down retry brings it back: up again, and out of the down set
    tokio::time::sleep(Duration::from_secs(120)).await;
    tree.until("back", |n| is(n, "flaky", NodeStatus::Running, 3)).await;
    assert!(tree.down.down().is_empty());
    assert!(!flaky.is_down());
    let kinds: Vec<_> = tree.events().into_iter().filter(|(c, _)| c == "flaky").map(|(_, k)| k).collect();
    assert_eq!(kinds, [LifecycleKind::Restarted, LifecycleKind::Up]);
}

// ---- dynamic children ----

#[tokio::test(start_paused = true)]
async fn a_child_added_at_run_time_is_supervised_and_a_removed_one_is_gone() {
    let (first, added) = (ActorSlot::new("first"), ActorSlot::new("added"));
    let mut tree = start(config("sup", RestartStrategy::OneForOne), vec![worker("first", &first)]).await;
    tree.until("running", all_running).await;

    tree.handle.add_child(worker("added", &added), WAIT).await.unwrap();
    let taken = tree.handle.add_child(worker("added", &added), WAIT).await;
    assert_eq!(taken, Err(ChildError::NameTaken("added".into())));
    let nodes = tree.until("added running", |n| n.len() == 2 && all_running(n)).await;
    assert_eq!(nodes[1].name, "added", "an added child comes last");
    assert_eq!(added.ask(WAIT, WorkerMsg::Ping).await, Ok(1));

    // restarted like a fixed child
    kill(&added);
    tree.until("added restarted", |n| is(n, "added", NodeStatus::Running, 1)).await;

    let incarnation = added.get().unwrap();
    tree.handle.remove_child("added", WAIT).await.unwrap();
    assert_eq!(incarnation.get_status(), ActorStatus::Stopped, "removal answers once it has stopped");
    let nodes = tree.nodes().await;
    assert_eq!(nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["first"]);
    assert!(added.is_down(), "asks to a removed child fail at once");
    assert_eq!(tree.handle.remove_child("added", WAIT).await, Err(ChildError::NotFound("added".into())));

    // and it is not restarted after its stop
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(tree.nodes().await.len(), 1);
    let kinds: Vec<_> = tree.events().into_iter().filter(|(c, _)| c == "added").map(|(_, k)| k).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                LifecycleKind::Started,
                LifecycleKind::Exited { kind: FailureKind::Killed, .. },
                LifecycleKind::Restarted,
                LifecycleKind::Removed
            ]
        ),
        "{kinds:?}"
    );
}

// ---- async start ----

#[tokio::test(start_paused = true)]
async fn a_hanging_start_shows_starting_and_fails_at_the_start_deadline() {
    let (slow, stuck, other) = (
        ActorSlot::<WorkerMsg>::new("slow"),
        ActorSlot::<WorkerMsg>::new("stuck"),
        ActorSlot::<WorkerMsg>::new("other"),
    );
    // "slow" hangs on its first start only; "stuck" on every start
    let attempts = Arc::new(AtomicUsize::new(0));
    let published = slow.clone();
    let count = attempts.clone();
    let slow_spec = ChildSpec::new("slow", "worker", move |ctx| {
        let first = count.fetch_add(1, Ordering::SeqCst) == 0;
        let slot = published.clone();
        async move {
            if first {
                std::future::pending::<()>().await;
            }
            spawn_worker(ctx, slot).await
        }
    });
    let stuck_spec = ChildSpec::new("stuck", "worker", |_ctx| async {
        std::future::pending::<Result<StartedChild, ractor::SpawnErr>>().await
    });
    let children = vec![slow_spec.with_slot(&slow), stuck_spec.with_slot(&stuck)];
    let mut tree = start(config("sup", RestartStrategy::OneForOne), children).await;

    // while they start, the supervisor answers snapshots and adds children
    let nodes = tree.nodes().await;
    assert!(
        is(&nodes, "slow", NodeStatus::Starting, 0) && is(&nodes, "stuck", NodeStatus::Starting, 0),
        "{nodes:#?}"
    );
    tree.handle.add_child(worker("other", &other), WAIT).await.unwrap();
    tree.until("other running", |n| is(n, "other", NodeStatus::Running, 0)).await;
    assert!(is(&tree.nodes().await, "slow", NodeStatus::Starting, 0));

    // past the 2 s start deadline: a failure, restarted after backoff
    let nodes = tree.until("slow restarted", |n| is(n, "slow", NodeStatus::Running, 1)).await;
    let failure = node(&nodes, "slow").last_failure.clone().unwrap();
    assert_eq!(failure.kind, FailureKind::StartTimedOut);
    assert!(failure.reason.contains("did not finish"), "{failure:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(slow.ask(WAIT, WorkerMsg::Ping).await, Ok(1));

    // a start that never finishes counts towards the intensity like any failure
    tree.until("stuck down", |n| is(n, "stuck", NodeStatus::Down, 0)).await;
    assert_eq!(tree.down.down(), ["stuck"]);
    let stuck_exits = tree
        .events()
        .into_iter()
        .filter(|(c, k)| {
            c == "stuck" && matches!(k, LifecycleKind::Exited { kind: FailureKind::StartTimedOut, .. })
        })
        .count();
    assert_eq!(stuck_exits, 4, "three restarts allowed, the fourth failure marks it down");
}

#[tokio::test(start_paused = true)]
async fn a_start_that_finishes_after_its_child_was_removed_stops_its_actor() {
    let slot = ActorSlot::new("late");
    let release = Arc::new(Notify::new());
    let (published, gate) = (slot.clone(), release.clone());
    let late = ChildSpec::new("late", "worker", move |ctx| {
        let (slot, gate) = (published.clone(), gate.clone());
        async move {
            gate.notified().await;
            spawn_worker(ctx, slot).await
        }
    });
    let tree = start(config("sup", RestartStrategy::OneForOne), vec![late]).await;
    assert!(is(&tree.nodes().await, "late", NodeStatus::Starting, 0));
    tree.handle.remove_child("late", WAIT).await.unwrap();
    assert!(tree.nodes().await.is_empty());

    release.notify_one();
    for _ in 0..100 {
        if slot.get().is_some_and(|a| a.get_status() == ActorStatus::Stopped) {
            return;
        }
        tokio::time::sleep(ms(10)).await;
    }
    panic!("the orphan was not stopped: {:?}", slot.get().map(|a| a.get_status()));
}

// ---- snapshot deadlines ----

#[tokio::test(start_paused = true)]
async fn a_nested_supervisor_that_does_not_answer_is_unresponsive_and_the_rest_is_complete() {
    let (w0, w1, w2) = (ActorSlot::new("w0"), ActorSlot::new("w1"), ActorSlot::new("w2"));
    let (mid_w1, side_w2) = (w1.clone(), w2.clone());
    let children = vec![
        worker("w0", &w0),
        nested("mid", move || vec![worker("w1", &mid_w1), deaf("deaf")]),
        nested("side", move || vec![worker("w2", &side_w2)]),
    ];
    let tree = start(config("root", RestartStrategy::OneForOne), children).await;
    for slot in [&w0, &w1, &w2] {
        assert_eq!(slot.ask(WAIT, WorkerMsg::Ping).await, Ok(1));
    }

    let asked = tokio::time::Instant::now();
    let nodes = tree.handle.snapshot(WAIT).await.unwrap();
    assert!(asked.elapsed() < WAIT, "answered within the caller's wait");
    let mid = node(&nodes, "mid");
    assert_eq!(mid.status, NodeStatus::Running, "{nodes:#?}");
    assert!(is(&mid.children, "w1", NodeStatus::Running, 0), "{nodes:#?}");
    assert!(is(&mid.children, "deaf", NodeStatus::Unresponsive, 0), "{nodes:#?}");
    let side = node(&nodes, "side");
    assert!(is(&side.children, "w2", NodeStatus::Running, 0), "{nodes:#?}");
    assert!(is(&nodes, "w0", NodeStatus::Running, 0));
}

// ---- metrics ----

/// The supervisor's metrics, read from a recorder of this test's own (tasks of a
/// current-thread runtime all run on this thread), never from the process's.
#[tokio::test(start_paused = true)]
async fn restarts_and_down_are_counted_in_the_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let flaky = ActorSlot::new("metered");
    let mut sup = config("sup", RestartStrategy::OneForOne);
    sup.intensity.max_restarts = 1;
    let tree = start(sup, vec![worker("metered", &flaky)]).await;
    tree.until("running", all_running).await;
    kill(&flaky);
    tree.until("restarted", |n| is(n, "metered", NodeStatus::Running, 1)).await;
    let text = handle.render();
    let line = |name: &str, labels: &[&str]| {
        text.lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
    };
    assert_eq!(
        line("castwork_actor_restarts_total{", &["actor=\"metered\"", "cause=\"killed\""]).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        line("castwork_actor_failures_total{", &["actor=\"metered\"", "kind=\"killed\""]).as_deref(),
        Some("1"),
        "{text}"
    );
    kill(&flaky);
    tree.until("down", |n| is(n, "metered", NodeStatus::Down, 1)).await;
    let text = handle.render();
    assert!(text.lines().any(|l| l == "castwork_actor_down{actor=\"metered\"} 1"), "{text}");
}
