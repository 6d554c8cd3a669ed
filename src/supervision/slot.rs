//! [`ActorSlot`]: where callers find the current incarnation of a supervised actor,
//! and the one way handlers call actors, with a deadline: [`ActorSlot::ask`]
//! (the request is sent at most once to a living actor: for what must not be done
//! twice) and [`ActorSlot::ask_idempotent`] (one retry after a restart: for reads).
//! A slot also knows, without asking a mailbox, whether its actor is marked down:
//! the supervisor says so through [`Availability`], and an ask then fails at once
//! with [`AskError::Down`] instead of waiting out its deadline.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorRef, Message, RpcReplyPort};
use tokio::sync::watch;
use tokio::time::Instant;

/// Why an ask did not get an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AskError {
    /// The actor is not running (restarting) and did not come back in time.
    #[error("{0} is unavailable")]
    Unavailable(Arc<str>),
    /// The actor did not answer before the deadline.
    #[error("{0} did not answer in time")]
    Timeout(Arc<str>),
    /// The actor is marked down (past its restart intensity): not asked at all.
    #[error("{0} is down")]
    Down(Arc<str>),
    /// The actor stopped with the request in its mailbox or in hand, and the
    /// request may not be repeated: it may or may not have been acted on.
    #[error("{0} stopped while handling the request; it was not retried")]
    Lost(Arc<str>),
}

/// What a supervisor tells the slot(s) of a child about that child.
pub trait Availability: Send + Sync {
    /// Marks the child down (`true`: past its restart intensity) or back (`false`).
    fn set_down(&self, down: bool);
}

struct SlotState<M: Message> {
    actor: Option<ActorRef<M>>,
    down: bool,
}

/// The current [`ActorRef`] of a supervised actor; its start function publishes
/// each new incarnation here.
pub struct ActorSlot<M: Message> {
    name: Arc<str>,
    tx: watch::Sender<SlotState<M>>,
}

impl<M: Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        Self { name: self.name.clone(), tx: self.tx.clone() }
    }
}

impl<M: Message> Availability for ActorSlot<M> {
    fn set_down(&self, down: bool) {
        self.tx.send_if_modified(|state| std::mem::replace(&mut state.down, down) != down);
    }
}

impl<M: Message> ActorSlot<M> {
    /// An empty slot for the actor called `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self { name: name.into(), tx: watch::Sender::new(SlotState { actor: None, down: false }) }
    }

    /// Publishes a new incarnation (which is, by being started, no longer down).
    pub fn set(&self, actor: ActorRef<M>) {
        self.tx.send_replace(SlotState { actor: Some(actor), down: false });
    }

    /// The current incarnation, if any (a down actor's last one is dead).
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.tx.borrow().actor.clone()
    }

    /// Whether the actor is marked down.
    pub fn is_down(&self) -> bool {
        self.tx.borrow().down
    }

    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends without waiting for an answer; `false` when the actor is not running
    /// (the message is dropped: use this only for what may be lost, like view counts).
    pub fn cast(&self, message: M) -> bool {
        let actor = {
            let state = self.tx.borrow();
            if state.down {
                return false;
            }
            state.actor.clone()
        };
        actor.is_some_and(|actor| actor.cast(message).is_ok())
    }

    /// Waits until an incarnation other than `previous` is published, the actor is
    /// marked down, or the deadline.
    async fn next_incarnation(
        &self,
        previous: Option<ractor::ActorId>,
        deadline: Instant,
    ) -> Result<ActorRef<M>, AskError> {
        let mut rx = self.tx.subscribe();
        let wait = rx.wait_for(|current| {
            current.down
                || match (&current.actor, previous) {
                    (Some(actor), Some(prev)) => actor.get_id() != prev,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
        });
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(state)) if state.down => Err(AskError::Down(self.name.clone())),
            Ok(Ok(state)) => state.actor.clone().ok_or_else(|| AskError::Unavailable(self.name.clone())),
            _ => Err(AskError::Unavailable(self.name.clone())),
        }
    }

    /// Calls the actor with a deadline, sending the request at most once to an
    /// actor that is alive: if the actor dies with it in its mailbox or in hand
    /// the call fails with [`AskError::Lost`], as the request may or may not have
    /// been acted on. For writes, counts and anything that submits work. If the
    /// actor is already dead when asked (the request cannot have reached it), it
    /// waits for the supervisor's restart within the deadline. An actor marked
    /// down is not asked: the call fails at once with [`AskError::Down`] (also
    /// while waiting for a restart).
    pub async fn ask<T, F>(&self, timeout: Duration, build: F) -> Result<T, AskError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<T>) -> M,
    {
        self.call(timeout, build, false).await
    }

    /// Like [`ask`](Self::ask), but if the actor dies holding the request, waits
    /// for its restart and sends the request once more, within the same deadline.
    /// Only for requests that may be handled twice: reads, snapshots, cache gets.
    pub async fn ask_idempotent<T, F>(&self, timeout: Duration, build: F) -> Result<T, AskError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<T>) -> M,
    {
        self.call(timeout, build, true).await
    }

    async fn call<T, F>(&self, timeout: Duration, build: F, idempotent: bool) -> Result<T, AskError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<T>) -> M,
    {
        let deadline = Instant::now() + timeout;
        let mut previous = None;
        for _attempt in 0..2 {
            let current = {
                let state = self.tx.borrow();
                if state.down {
                    return Err(AskError::Down(self.name.clone()));
                }
                state.actor.clone().filter(|actor| Some(actor.get_id()) != previous)
            };
            let actor = match current {
                Some(actor) => actor,
                // boxed: only a restart takes this path; every ask's state stays small
                None => Box::pin(self.next_incarnation(previous, deadline)).await?,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(AskError::Timeout(self.name.clone()));
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if actor.send_message(build((tx, remaining).into())).is_err() {
                // the actor died before we sent it: the request reached nobody
                previous = Some(actor.get_id());
                continue;
            }
            // The actor usually answers before this task would be polled again: one
            // yield first lets the reply be waiting, so most asks never arm the timer
            // (a deadline is registered with the runtime only when the reply is late).
            tokio::task::yield_now().await;
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(value)) => return Ok(value),
                Err(_) => return Err(AskError::Timeout(self.name.clone())),
                // the actor died with our request in its mailbox or in hand
                Ok(Err(_)) if idempotent => previous = Some(actor.get_id()),
                Ok(Err(_)) => return Err(AskError::Lost(self.name.clone())),
            }
        }
        Err(AskError::Unavailable(self.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    enum EchoMsg {
        Ping(RpcReplyPort<u32>),
    }

    impl Message for EchoMsg {}

    /// Answers 7 and counts the requests it takes; with `dies`, it dies holding one instead.
    struct Fragile {
        taken: Arc<std::sync::atomic::AtomicUsize>,
        dies: bool,
    }

    impl Actor for Fragile {
        type Msg = EchoMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _myself: ActorRef<EchoMsg>, _args: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<EchoMsg>,
            message: EchoMsg,
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            let EchoMsg::Ping(reply) = message;
            self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.dies {
                // dies holding the reply port, after having acted on the request
                return Err("died mid-request".into());
            }
            let _ = reply.send(7);
            Ok(())
        }
    }

    impl Fragile {
        /// One that always answers.
        fn steady() -> Self {
            Self { taken: Arc::default(), dies: false }
        }
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_down_actor_is_not_waited_for() {
        let slot = ActorSlot::<EchoMsg>::new("echo");
        let (actor, handle) = Actor::spawn(None, Fragile::steady(), ()).await.unwrap();
        slot.set(actor.clone());
        assert_eq!(slot.ask(LONG, EchoMsg::Ping).await, Ok(7));
        actor.kill();
        handle.await.unwrap();

        // an ask that found the actor dead waits for a restart...
        let waiting = tokio::spawn({
            let slot = slot.clone();
            async move {
                let started = Instant::now();
                (slot.ask(LONG, EchoMsg::Ping).await, started.elapsed())
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        // ...until the supervisor marks the actor down: then it fails at once
        slot.set_down(true);
        assert!(slot.is_down());
        let (result, elapsed) = waiting.await.unwrap();
        assert_eq!(result, Err(AskError::Down("echo".into())));
        assert!(elapsed < LONG / 100, "waited {elapsed:?}");

        // and a new ask is refused without waiting at all
        let started = Instant::now();
        assert_eq!(slot.ask(LONG, EchoMsg::Ping).await, Err(AskError::Down("echo".into())));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(!slot.cast(EchoMsg::Ping(tokio::sync::oneshot::channel().0.into())));

        // a new incarnation brings it back
        let (actor, _handle) = Actor::spawn(None, Fragile::steady(), ()).await.unwrap();
        slot.set(actor.clone());
        assert!(!slot.is_down());
        assert_eq!(slot.ask(LONG, EchoMsg::Ping).await, Ok(7));
        actor.kill();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarting_actor_is_waited_for_within_the_deadline() {
        let slot = ActorSlot::<EchoMsg>::new("echo");
        let (actor, handle) = Actor::spawn(None, Fragile::steady(), ()).await.unwrap();
        slot.set(actor.clone());
        actor.kill();
        handle.await.unwrap();
        let waiting = tokio::spawn({
            let slot = slot.clone();
            async move { slot.ask(LONG, EchoMsg::Ping).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let (actor, _handle) = Actor::spawn(None, Fragile::steady(), ()).await.unwrap();
        slot.set(actor.clone());
        assert_eq!(waiting.await.unwrap(), Ok(7));
        actor.kill();

        // no restart at all: unavailable after the deadline, not down
        let empty = ActorSlot::<EchoMsg>::new("echo");
        let started = Instant::now();
        assert_eq!(empty.ask(LONG, EchoMsg::Ping).await, Err(AskError::Unavailable("echo".into())));
        assert!(started.elapsed() >= LONG);
    }

    #[tokio::test(start_paused = true)]
    async fn ask_does_not_repeat_a_request_the_actor_died_holding() {
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slot = ActorSlot::<EchoMsg>::new("fragile");
        let (actor, handle) =
            Actor::spawn(None, Fragile { taken: taken.clone(), dies: true }, ()).await.unwrap();
        slot.set(actor);
        // answered at once: no wait for a restart, no second delivery
        let started = Instant::now();
        assert_eq!(slot.ask(LONG, EchoMsg::Ping).await, Err(AskError::Lost("fragile".into())));
        assert!(started.elapsed() < LONG / 100);
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 1);
        handle.await.unwrap();
        assert!(AskError::Lost("fragile".into()).to_string().contains("it was not retried"));

        // an actor already dead when asked never got the request: that one waits for the restart
        let waiting = tokio::spawn({
            let slot = slot.clone();
            async move { slot.ask(LONG, EchoMsg::Ping).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let (actor, _handle) =
            Actor::spawn(None, Fragile { taken: taken.clone(), dies: false }, ()).await.unwrap();
        slot.set(actor.clone());
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 2);
        actor.kill();
    }

    #[tokio::test(start_paused = true)]
    async fn ask_idempotent_repeats_a_request_the_actor_died_holding() {
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slot = ActorSlot::<EchoMsg>::new("fragile");
        let (actor, handle) =
            Actor::spawn(None, Fragile { taken: taken.clone(), dies: true }, ()).await.unwrap();
        slot.set(actor);
        let asking = tokio::spawn({
            let slot = slot.clone();
            async move { slot.ask_idempotent(LONG, EchoMsg::Ping).await }
        });
        handle.await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!asking.is_finished(), "it waits for the next incarnation");
        let (actor, _handle) =
            Actor::spawn(None, Fragile { taken: taken.clone(), dies: false }, ()).await.unwrap();
        slot.set(actor.clone());
        assert_eq!(asking.await.unwrap(), Ok(7));
        assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 2, "delivered twice");
        actor.kill();
    }
}
