//! The task that owns one room's value and runs its events one at a time.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::live::Seed;
use super::{Admin, Event, LiveRooms, Room};
use crate::connection::{close_code, validate_tags};
use crate::metrics::Handler;
use crate::{Connection, ConnectionContext, Error, Message, Party, Request, Response};

/// Runs one handler on the started value. A panic is caught and turned into an error,
/// and the value is dropped so that the next event rebuilds it. (A macro rather than a
/// method: the handler's future borrows the value, and the borrow must end before the
/// value can be dropped.)
macro_rules! call {
    ($actor:ident, $kind:expr, $party:ident => $handler:expr) => {
        match $actor.party.as_mut() {
            None => Err(Error::internal("the room is not started")),
            Some($party) => {
                let started = std::time::Instant::now();
                let result = crate::error::catch_panic("a handler", $handler).await;
                $actor.handled($kind, started, &result);
                match result {
                    Err(error) if error.is_panic() => {
                        $actor.party = None;
                        $actor.started = false;
                        Err(panicked(error))
                    }
                    result => result,
                }
            }
        }
    };
}

pub(crate) struct RoomActor<P> {
    room: Room,
    /// The user's value; `None` until the first event, and again after a failed
    /// `on_start` or a panic, so that the next event rebuilds it.
    party: Option<P>,
    started: bool,
    /// Sockets accepted and not yet closed, including any replaced by a reconnect.
    sockets: usize,
    /// The alarm retry pending: its time and how many retries it is.
    alarm_retry: Option<(i64, u32)>,
    mailbox: mpsc::Receiver<Event>,
    rooms: Arc<LiveRooms>,
    generation: u64,
    /// An operator evicted the room: it takes no new sockets, and leaves once its last
    /// socket has closed and its writes are durable.
    evicting: bool,
    /// The room's log span (`party`, `room`), which the actor runs in: the parent of its
    /// connections' spans.
    span: tracing::Span,
}

impl<P: Party> RoomActor<P> {
    pub(crate) fn spawn(seed: Seed) {
        // Every line logged while the room runs, the runtime's or a handler's own, carries
        // the party and room id. At level error, so that any filter keeping the runtime's
        // errors keeps the room's fields on the lines it lets through.
        let span = tracing::error_span!("room", party = seed.room.name(), room = seed.room.id());
        let actor = Self {
            room: seed.room,
            party: None,
            started: false,
            sockets: 0,
            alarm_retry: None,
            mailbox: seed.mailbox,
            rooms: seed.rooms,
            generation: seed.generation,
            evicting: false,
            span: span.clone(),
        };
        let tasks = actor.rooms.tasks().clone();
        // Object-style handlers get their room from the task (`__private::current_room`).
        tasks.spawn(crate::__private::in_room(actor.room.clone(), actor.run()).instrument(span));
    }

    async fn run(mut self) {
        let limits = self.rooms.limits();
        let (idle, hibernate_after) = (limits.room_idle_timeout, limits.hibernate_after);
        let draining = self.rooms.tasks().draining().clone();
        // Never cancelled outside cluster mode.
        let lost = self.room.storage().lost().cloned().unwrap_or_default();
        let mut closed = false;
        loop {
            let idle_room = self.sockets == 0 && !closed;
            let event = tokio::select! {
                biased;
                () = lost.cancelled() => {
                    self.give_up();
                    break;
                }
                event = self.mailbox.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                // Shutdown, and no socket is left: run what is queued, then exit.
                () = draining.cancelled(), if idle_room => {
                    self.rooms.evict(self.room.id(), self.generation);
                    self.mailbox.close();
                    closed = true;
                    continue;
                }
                () = tokio::time::sleep(idle), if idle_room => {
                    // Evicting with commits in flight would let the successor load
                    // state older than what this room acknowledged; evicting before a
                    // pending alarm retry would restart its count of attempts,
                    // retrying a failing alarm forever.
                    if self.mailbox.is_empty()
                        && self.room.storage().is_settled()
                        && !self.alarm_retry_pending().await
                    {
                        self.evict();
                        break;
                    }
                    continue;
                }
                () = tokio::time::sleep(hibernate_after),
                    if P::OPTIONS.hibernate && self.party.is_some() && self.sockets > 0 =>
                {
                    self.hibernate();
                    continue;
                }
            };
            self.handle(event).await;
            if self.evicting && self.sockets == 0 {
                // Its successor must not load state older than what it acknowledged.
                let _ = self.room.storage().sync().await;
                self.evict();
                break;
            }
        }
        self.room.set_hibernating(false);
        // The committer commits what it was handed, then ends.
        self.room.storage().close();
    }

    /// Drops the user's value (and the storage cache, once written) while the sockets
    /// stay open; the next event rebuilds it with `new` and `on_start`.
    fn hibernate(&mut self) {
        tracing::debug!("hibernating");
        self.party = None;
        self.started = false;
        self.room.set_hibernating(true);
        self.room.storage().unload();
    }

    /// The room was lost to another node (cluster mode): it takes no more events, drops
    /// the output it held, and closes its sockets with 1012 so their clients reconnect,
    /// through any node, to the new owner. Events already queued are answered the same
    /// way rather than run.
    fn give_up(&mut self) {
        tracing::warn!(
            sockets = self.sockets,
            "the room moved to another node: closing its sockets with 1012"
        );
        self.rooms.server_metrics().cluster().leases_lost.inc();
        self.rooms.evict(self.room.id(), self.generation);
        self.mailbox.close();
        self.party = None;
        self.started = false;
        self.room
            .storage()
            .gate()
            .reset(crate::storage::moved_response);
        for connection in self.room.get_connections(None) {
            connection.close_unchecked(close_code::SERVICE_RESTART, close_code::MOVED_REASON);
        }
        while let Ok(event) = self.mailbox.try_recv() {
            match event {
                Event::Request { reply, .. } => {
                    let _ = reply.send(crate::storage::moved_response());
                }
                Event::Prepare { reply } | Event::Connect { reply, .. } => {
                    let _ = reply.send(Err(Error::with_status(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "The room moved to another node; try again",
                    )));
                }
                Event::Message { .. }
                | Event::Closed { .. }
                | Event::Alarm { .. }
                | Event::Admin(_) => {}
            }
        }
    }

    /// Leaves the directory; events that slipped in meanwhile go to the room's successor.
    fn evict(&mut self) {
        tracing::debug!("evicting idle room");
        self.rooms.evict(self.room.id(), self.generation);
        self.mailbox.close();
        let mut slipped = Vec::new();
        while let Ok(event) = self.mailbox.try_recv() {
            slipped.push(event);
        }
        if slipped.is_empty() {
            return;
        }
        let rooms = Arc::clone(&self.rooms);
        let room_id = self.room.id().to_owned();
        self.rooms.tasks().spawn(async move {
            for event in slipped {
                // Refused only when the server is shutting down: then the event's
                // sender hears of it when its reply is dropped.
                let _ = rooms.send(&room_id, event).await;
            }
        });
    }

    async fn handle(&mut self, mut event: Event) {
        if self.room.storage().failed() {
            tracing::warn!("resetting the room after a failed storage commit");
            self.party = None;
            self.started = false;
            self.room.storage().reset();
        }
        let alarm_done = match &mut event {
            Event::Alarm { done, .. } => done.take(),
            _ => None,
        };
        let reply = self.dispatch(event).await;
        // What the event wrote goes to the committer; output that followed a write,
        // including the HTTP response, waits at the gate until it is durable.
        self.room.storage().submit().await;
        if let Some(done) = alarm_done {
            let _ = done.send(self.room.storage().clone());
        }
        if let Some((reply, response)) = reply {
            self.room.storage().gate().reply(reply, response);
        }
    }

    /// Runs one event; an HTTP request's answer is returned, to pass the gate.
    async fn dispatch(&mut self, event: Event) -> Option<(oneshot::Sender<Response>, Response)> {
        match event {
            Event::Prepare { reply } | Event::Connect { reply, .. } if self.evicting => {
                let _ = reply.send(Err(Error::with_status(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "The room is being evicted; try again",
                )));
            }
            Event::Prepare { reply } => {
                let _ = reply.send(self.ensure_started().await);
            }
            Event::Connect {
                connection,
                ctx,
                reply,
            } => {
                let span = connection.span_in(&self.span);
                let result = self.connect(&connection, &ctx).instrument(span).await;
                if result.is_ok() {
                    self.sockets += 1;
                } else {
                    self.room.registry().remove(&connection);
                }
                let _ = reply.send(result);
            }
            Event::Message {
                connection,
                message,
            } => {
                let message = async {
                    if let Err(error) = self.message(message, &connection).await {
                        tracing::warn!(%error, "on_message failed");
                    }
                };
                message.instrument(connection.span()).await;
            }
            Event::Closed { connection, error } => {
                self.sockets = self.sockets.saturating_sub(1);
                self.room.registry().remove(&connection);
                let closed = async {
                    if let Err(error) = self.closed(&connection, error).await {
                        tracing::warn!(%error, "on_close failed");
                    }
                };
                closed.instrument(connection.span()).await;
            }
            Event::Request { request, reply } => {
                let response = match self.request(request).await {
                    Ok(response) => response,
                    Err(error) => {
                        tracing::debug!(%error, "request failed");
                        error.response(&format!(
                            "a request to {}/{} failed",
                            self.room.name(),
                            self.room.id()
                        ))
                    }
                };
                return Some((reply, response));
            }
            Event::Alarm { time, .. } => self.alarm(time).await,
            Event::Admin(admin) => self.admin(admin).await,
        }
        None
    }

    async fn admin(&mut self, admin: Admin) {
        match admin {
            Admin::Evict { reply } => {
                tracing::info!(
                    sockets = self.sockets,
                    "evicted by an operator: closing its sockets with 1012"
                );
                self.evicting = true;
                let connections = self.room.get_connections(None);
                for connection in &connections {
                    connection.close_unchecked(close_code::SERVICE_RESTART, EVICTED_REASON);
                }
                let _ = reply.send(connections.len());
            }
            Admin::DeleteAlarm { reply } => {
                let storage = self.room.storage();
                let deleted = async {
                    let had = storage.get_alarm().await?.is_some();
                    storage.delete_alarm().await?;
                    storage.sync().await?;
                    Ok(had)
                };
                let _ = reply.send(deleted.await);
            }
        }
    }

    async fn connect(
        &mut self,
        connection: &Connection,
        ctx: &ConnectionContext,
    ) -> Result<(), Error> {
        let state_limit = P::OPTIONS
            .hibernate
            .then_some(self.rooms.limits().max_hibernating_state);
        connection.join(Arc::clone(self.room.storage().gate()), state_limit);
        self.ensure_started().await?;
        let user_tags =
            call!(self, Handler::ConnectionTags, party => party.connection_tags(connection, ctx))?;
        connection.set_tags(validate_tags(connection.id(), user_tags)?);
        // The replaced socket leaves the room now (broadcasts and `get_connection` see
        // the new one) and is told so; its `on_close` runs when its socket has closed,
        // after this event, so after the new socket's `on_connect`.
        let replaced = self.room.registry().insert(connection.clone());
        if let Some(replaced) = replaced {
            tracing::debug!("a socket with the same id replaced an open one: closing the old one");
            replaced.close_unchecked(close_code::REPLACED, close_code::REPLACED_REASON);
        }
        call!(self, Handler::OnConnect, party => party.on_connect(connection, ctx))
    }

    async fn message(&mut self, message: Message, sender: &Connection) -> Result<(), Error> {
        self.ensure_started().await?;
        call!(self, Handler::OnMessage, party => party.on_message(message, sender))
    }

    async fn closed(&mut self, connection: &Connection, error: Option<Error>) -> Result<(), Error> {
        self.ensure_started().await?;
        if let Some(error) = error {
            call!(self, Handler::OnError, party => party.on_error(connection, error))?;
        }
        call!(self, Handler::OnClose, party => party.on_close(connection))
    }

    async fn request(&mut self, request: Request) -> Result<Response, Error> {
        self.ensure_started().await?;
        call!(self, Handler::OnRequest, party => party.on_request(request))
    }

    /// Runs `on_alarm` for the alarm due at `time`, unless it was changed or deleted
    /// since; retries a failure with exponential backoff.
    async fn alarm(&mut self, time: i64) {
        let storage = self.room.storage().clone();
        match storage.alarm_millis().await {
            Ok(Some(current)) if current == time => {}
            Ok(_) => return,
            Err(error) => {
                tracing::error!(%error, "cannot read the alarm");
                return;
            }
        }
        let attempt = match self.alarm_retry {
            Some((retry_time, attempt)) if retry_time == time => attempt,
            _ => 0,
        };
        let metrics = self.room.metrics();
        metrics.alarms_fired.inc();
        let lag_millis = self.room.clock().now_millis().saturating_sub(time).max(0);
        metrics
            .alarm_lag
            .observe(Duration::from_millis(lag_millis.unsigned_abs()).as_secs_f64());
        let outcome = match storage.hide_alarm().await {
            Ok(()) => self.run_alarm().await,
            Err(error) => Err(error),
        };
        // A new alarm set by the handler replaces the one that ran.
        let replaced = matches!(storage.alarm_millis().await, Ok(Some(_)));
        let limits = self.rooms.limits();
        let next = match outcome {
            Ok(()) => {
                self.alarm_retry = None;
                None
            }
            Err(error) if attempt < limits.alarm_max_retries => {
                let delay = limits.alarm_retry_base.saturating_mul(1 << attempt.min(20));
                let retry_time = self
                    .room
                    .clock()
                    .now_millis()
                    .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                tracing::warn!(%error, attempt = attempt + 1, ?delay, "on_alarm failed; retrying");
                self.alarm_retry = Some((retry_time, attempt + 1));
                self.room.metrics().alarm_retries.inc();
                Some(retry_time)
            }
            Err(error) => {
                tracing::error!(%error, "on_alarm failed after every retry; dropping the alarm");
                self.alarm_retry = None;
                None
            }
        };
        if replaced {
            return;
        }
        if let Err(error) = storage.write_alarm(next).await {
            tracing::error!(%error, "cannot write the alarm");
        }
    }

    /// Whether a retry of a failed `on_alarm` is still to come: the alarm stored is the
    /// retry's. A retry replaced or deleted since is forgotten.
    async fn alarm_retry_pending(&mut self) -> bool {
        let Some((retry_time, _)) = self.alarm_retry else {
            return false;
        };
        let pending = matches!(
            self.room.storage().alarm_millis().await,
            Ok(Some(current)) if current == retry_time
        );
        if !pending {
            self.alarm_retry = None;
        }
        pending
    }

    async fn run_alarm(&mut self) -> Result<(), Error> {
        self.ensure_started().await?;
        call!(self, Handler::OnAlarm, party => party.on_alarm())
    }

    /// Builds the user's value and runs `on_start` unless that already succeeded.
    async fn ensure_started(&mut self) -> Result<(), Error> {
        if self.started {
            return Ok(());
        }
        let party = match &mut self.party {
            Some(party) => party,
            empty @ None => {
                let room = self.room.clone();
                match std::panic::catch_unwind(AssertUnwindSafe(|| P::new(room))) {
                    Ok(party) => empty.insert(party),
                    Err(panic) => return Err(panicked(Error::panicked("new", &*panic))),
                }
            }
        };
        self.room.set_hibernating(false);
        let started = std::time::Instant::now();
        let result = crate::error::catch_panic("on_start", party.on_start()).await;
        self.handled(Handler::OnStart, started, &result);
        match result {
            Ok(()) => {
                self.started = true;
                Ok(())
            }
            Err(error) if error.is_panic() => {
                self.party = None;
                Err(panicked(error))
            }
            Err(error) => {
                tracing::warn!(%error, "on_start failed; the next event retries it");
                self.party = None;
                Err(error)
            }
        }
    }
}

impl<P> RoomActor<P> {
    /// Counts a handler's run.
    fn handled<T>(&self, handler: Handler, started: std::time::Instant, result: &Result<T, Error>) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err(error) => Err(error.is_panic()),
        };
        self.room
            .metrics()
            .handled(handler, started.elapsed(), outcome);
    }
}

/// The close reason of the sockets of a room an operator evicted.
const EVICTED_REASON: &str = "The room was evicted by an operator; reconnect";

/// Logs a handler's panic: the room's value is dropped and rebuilt on the next event.
fn panicked(error: Error) -> Error {
    tracing::error!("{error}; the room's value will be rebuilt");
    error
}
