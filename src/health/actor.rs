//! HealthActor: probes every registered dependency on an interval and keeps each
//! component's status (`ok | degraded | down`), latency and last error.
//!
//! Probes run as tracked tasks (aborted when the actor stops) whose results come
//! back as messages, so a slow dependency never blocks the mailbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::Probe;
use crate::config::HealthSettings;
use crate::metrics;
use crate::supervision::breaker::BreakerSnapshot;
use crate::supervision::child::ChaosTarget;
use crate::supervision::supervisor::chaos_panic;
use crate::supervision::tree::ActorStats;

/// A component's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Not probed yet.
    Unknown,
    Ok,
    Degraded,
    Down,
}

impl ComponentStatus {
    /// Numeric code for the health gauge.
    pub fn code(self) -> f64 {
        match self {
            Self::Ok => 0.0,
            Self::Degraded | Self::Unknown => 1.0,
            Self::Down => 2.0,
        }
    }
}

/// What is known of one component.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    pub status: ComponentStatus,
    /// Whether the node is down (and not ready) while this component is down.
    pub critical: bool,
    /// Latency of the last probe; `null` before the first.
    #[schema(required = true)]
    pub latency_ms: Option<f64>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(required = true)]
    pub checked_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub breaker: Option<BreakerSnapshot>,
}

/// The HealthActor's view of every component.
#[derive(Debug, Clone, Serialize, Default)]
pub struct HealthReport {
    pub components: BTreeMap<String, ComponentHealth>,
}

/// Messages the HealthActor handles.
pub enum HealthMsg {
    /// Time to probe every component that has no probe in flight.
    Tick,
    /// A probe finished.
    ProbeDone { component: Arc<str>, elapsed: Duration, result: Result<(), String> },
    /// The current report.
    Report(RpcReplyPort<HealthReport>),
    /// Chaos: panic while handling this message.
    Panic,
}

impl ractor::Message for HealthMsg {}

impl ChaosTarget for HealthMsg {
    fn chaos_panic() -> Self {
        Self::Panic
    }
}

/// The HealthActor's configuration.
pub struct HealthActor {
    pub settings: HealthSettings,
}

/// What the HealthActor is started with.
pub struct HealthArgs {
    pub probes: Vec<Arc<dyn Probe>>,
    pub stats: Arc<ActorStats>,
}

/// The HealthActor's state.
pub struct HealthState {
    probes: Vec<Arc<dyn Probe>>,
    components: BTreeMap<Arc<str>, ComponentHealth>,
    in_flight: HashMap<Arc<str>, JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
    stats: Arc<ActorStats>,
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        let components = args
            .probes
            .iter()
            .map(|p| {
                let health = ComponentHealth {
                    status: ComponentStatus::Unknown,
                    critical: p.critical(),
                    latency_ms: None,
                    last_error: None,
                    checked_at: None,
                    consecutive_failures: 0,
                    breaker: None,
                };
                (Arc::from(p.component()), health)
            })
            .collect();
        Ok(HealthState {
            probes: args.probes,
            components,
            in_flight: HashMap::new(),
            ticker: None,
            stats: args.stats,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<HealthMsg>,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        self.probe_all(&myself, state);
        let interval = Duration::from_millis(self.settings.probe_interval_ms);
        state.ticker = Some(myself.send_interval(interval, || HealthMsg::Tick));
        Ok(())
    }

    #[tracing::instrument(name = "health", skip_all)]
    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        message: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        state.stats.handled();
        match message {
            HealthMsg::Tick => self.probe_all(&myself, state),
            HealthMsg::ProbeDone { component, elapsed, result } => {
                state.in_flight.remove(&component);
                self.record(state, &component, elapsed, result);
            }
            HealthMsg::Report(reply) => {
                let components = state
                    .components
                    .iter()
                    .map(|(name, health)| (name.to_string(), health.clone()))
                    .collect();
                let _ = reply.send(HealthReport { components });
            }
            HealthMsg::Panic => chaos_panic("health"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<HealthMsg>,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        for (_, task) in state.in_flight.drain() {
            task.abort();
        }
        Ok(())
    }
}

impl HealthActor {
    fn probe_all(&self, myself: &ActorRef<HealthMsg>, state: &mut HealthState) {
        let timeout = Duration::from_millis(self.settings.probe_timeout_ms);
        for probe in &state.probes {
            let component: Arc<str> = Arc::from(probe.component());
            if state.in_flight.get(&component).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            let check = probe.check();
            let actor = myself.clone();
            let name = Arc::clone(&component);
            let task = tokio::spawn(async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(timeout, check).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                let _ =
                    actor.cast(HealthMsg::ProbeDone { component: name, elapsed: started.elapsed(), result });
            });
            state.in_flight.insert(component, task);
        }
    }

    fn record(
        &self,
        state: &mut HealthState,
        component: &str,
        elapsed: Duration,
        result: Result<(), String>,
    ) {
        let Some(health) = state.components.get_mut(component) else { return };
        let before = health.status;
        health.latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
        health.checked_at = Some(Utc::now());
        match result {
            Ok(()) => {
                health.consecutive_failures = 0;
                health.last_error = None;
                let slow = elapsed > Duration::from_millis(self.settings.degraded_latency_ms);
                health.status = if slow { ComponentStatus::Degraded } else { ComponentStatus::Ok };
            }
            Err(error) => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                health.last_error = Some(error);
                health.status = ComponentStatus::Down;
            }
        }
        metrics::health_probe(component, health.status.code(), elapsed);
        if before != health.status {
            tracing::info!(component, from = ?before, to = ?health.status, error = health.last_error.as_deref(), "component health changed");
        }
    }
}
