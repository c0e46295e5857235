//! The waiting room: requests with no route now — every endpoint they may use is out of
//! capacity until a reset, or a `queue` workflow's preferred route is down — wait here, at most
//! until their deadline, instead of all getting a 429 at once.
//!
//! One dispatcher per router lets them try admission again one at a time, in order: every
//! `interactive` request before any `batch` one, then between orgs by weight (weighted fair
//! queuing: each request is tagged with its org's virtual finish time, `1 / weight` after the
//! org's previous one, so two backlogged orgs weighted 3 and 1 are let in 3 to 1). A request let
//! in takes its capacity at admission, so the next one's try already sees it gone; one that
//! still has no route keeps its place and tries again when its route may be back (the reset it
//! was told, or every [`crate::admission::QUEUE_POLL`] for a route that is down). A request
//! arriving while others of its class (or a higher one) wait for its first endpoint queues
//! behind them rather than take what they wait for.
//!
//! The room is bounded ([`WaitingRoom::new`]); when it is full a request that would wait is
//! refused at once. Depth and waiting time are metrics: `switchyard_queue_depth{priority}`,
//! `switchyard_queue_wait_seconds{priority,outcome}` and `switchyard_queue_refused_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::{ChatRequest, EndpointId, Error, ErrorClass};
use switchyard_policy_model::config::Priority;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::admission::{Admission, Admitted, Refused, Wait};
use crate::edge::{AdmitOptions, Caller};

/// Requests one router lets wait by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// How close together the times waiters are due to try count as the same time.
pub const DUE_TOGETHER: Duration = Duration::from_millis(20);

/// What a waiter's try came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted: it leaves the room.
    Admitted,
    /// Still no route: it tries again after this long.
    NotYet(Duration),
    /// Refused for another reason: it leaves the room.
    Gone,
}

type Turn = oneshot::Sender<oneshot::Sender<Verdict>>;

struct Waiter {
    id: u64,
    priority: Priority,
    finish: f64,
    blocked: Vec<EndpointId>,
    next_try: Instant,
    /// Set while it waits for its turn.
    turn: Option<Turn>,
}

impl Waiter {
    fn key(&self) -> (Priority, f64, u64) {
        (self.priority, self.finish, self.id)
    }
}

#[derive(Default)]
struct Room {
    next_id: u64,
    /// The finish tag of the last request let in.
    virtual_time: f64,
    /// Each org's last finish tag.
    last_finish: HashMap<String, f64>,
    waiting: Vec<Waiter>,
}

/// A router's waiting room.
pub struct WaitingRoom {
    room: Mutex<Room>,
    wake: Notify,
    capacity: usize,
}

impl std::fmt::Debug for WaitingRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitingRoom")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// A place in the room; leaving it (admitted, refused, out of time, or the caller gone)
/// frees it.
pub struct Place {
    room: Arc<WaitingRoom>,
    id: u64,
    priority: Priority,
    joined: Instant,
    outcome: &'static str,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.room.leave(self.id);
        metrics::histogram!("switchyard_queue_wait_seconds", "priority" => self.priority.as_str(), "outcome" => self.outcome)
            .record(self.joined.elapsed().as_secs_f64());
    }
}

impl WaitingRoom {
    /// A room for at most `capacity` waiting requests, with its dispatcher running until the
    /// room is dropped.
    pub fn new(capacity: usize) -> Arc<Self> {
        let room = Arc::new(WaitingRoom {
            room: Mutex::new(Room::default()),
            wake: Notify::new(),
            capacity,
        });
        tokio::spawn(dispatch(Arc::downgrade(&room)));
        room
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether requests of `priority` or a higher one wait for `endpoint`.
    pub fn contested(&self, endpoint: &EndpointId, priority: Priority) -> bool {
        let room = self.lock();
        room.waiting
            .iter()
            .any(|w| w.priority <= priority && w.blocked.contains(endpoint))
    }

    /// Waiting requests of each class.
    pub fn depth(&self) -> (usize, usize) {
        let room = self.lock();
        let batch = room
            .waiting
            .iter()
            .filter(|w| w.priority == Priority::Batch)
            .count();
        (room.waiting.len() - batch, batch)
    }

    /// Takes a place for a request of `org` that must wait as `wait` says; `error` is what it
    /// is refused with when the room is full.
    pub fn join(self: &Arc<Self>, org: &str, wait: &Wait, error: &Error) -> Result<Place, Error> {
        let id = {
            let mut room = self.lock();
            if room.waiting.len() >= self.capacity {
                drop(room);
                metrics::counter!("switchyard_queue_refused_total").increment(1);
                return Err(Error::new(
                    ErrorClass::RateLimited,
                    format!(
                        "{}; the router's waiting room is full ({} requests)",
                        error.message, self.capacity
                    ),
                )
                .with_retry_after(wait.retry_after.max(Duration::from_secs(1)))
                .with_metadata("reason", "queue_full".into()));
            }
            room.next_id += 1;
            let id = room.next_id;
            let start = room
                .virtual_time
                .max(room.last_finish.get(org).copied().unwrap_or(0.0));
            let finish = start + 1.0 / f64::from(wait.weight.max(1));
            room.last_finish.insert(org.to_string(), finish);
            room.waiting.push(Waiter {
                id,
                priority: wait.priority,
                finish,
                blocked: wait.blocked.clone(),
                next_try: Instant::now() + wait.retry_after,
                turn: None,
            });
            id
        };
        self.export_depth();
        Ok(Place {
            room: self.clone(),
            id,
            priority: wait.priority,
            joined: Instant::now(),
            outcome: "timeout",
        })
    }

    /// Waits until it is `place`'s turn to try (or its deadline); the sender takes the
    /// verdict of the try.
    pub async fn turn(&self, place: &Place, deadline: Instant) -> Option<oneshot::Sender<Verdict>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut room = self.lock();
            let w = room.waiting.iter_mut().find(|w| w.id == place.id)?;
            w.turn = Some(tx);
        }
        self.wake.notify_one();
        tokio::time::timeout_at(deadline, rx).await.ok()?.ok()
    }

    /// Sets when `place` tries next.
    pub fn later(&self, place: &Place, after: Duration) {
        let mut room = self.lock();
        if let Some(w) = room.waiting.iter_mut().find(|w| w.id == place.id) {
            w.next_try = Instant::now() + after;
        }
    }

    fn leave(&self, id: u64) {
        {
            let mut room = self.lock();
            room.waiting.retain(|w| w.id != id);
            if room.waiting.is_empty() {
                // Idle: tags start afresh (an org that waited long ago gains nothing from it).
                room.virtual_time = 0.0;
                room.last_finish.clear();
            }
        }
        self.export_depth();
    }

    fn export_depth(&self) {
        let (interactive, batch) = self.depth();
        metrics::gauge!("switchyard_queue_depth", "priority" => "interactive")
            .set(interactive as f64);
        metrics::gauge!("switchyard_queue_depth", "priority" => "batch").set(batch as f64);
    }

    /// The next waiter due to try, in order, with its turn taken; or when the next one is due.
    /// Waiters due within [`DUE_TOGETHER`] of each other count as due together, so a few
    /// milliseconds between the resets they were told never put one ahead of its turn.
    fn next_due(&self, now: Instant) -> Result<(u64, f64, Turn), Option<Instant>> {
        let now = now + DUE_TOGETHER;
        let mut room = self.lock();
        let mut best: Option<usize> = None;
        let mut soonest: Option<Instant> = None;
        for (i, w) in room.waiting.iter().enumerate() {
            if w.turn.is_none() {
                continue;
            }
            if w.next_try > now {
                soonest = Some(soonest.map_or(w.next_try, |s| s.min(w.next_try)));
                continue;
            }
            if best.is_none_or(|b| w.key() < room.waiting[b].key()) {
                best = Some(i);
            }
        }
        let Some(i) = best else {
            return Err(soonest);
        };
        let w = &mut room.waiting[i];
        match w.turn.take() {
            Some(turn) => Ok((w.id, w.finish, turn)),
            None => Err(soonest),
        }
    }

    fn admitted(&self, finish: f64) {
        let mut room = self.lock();
        room.virtual_time = room.virtual_time.max(finish);
    }
}

impl Place {
    /// Marks how the wait ended, for the wait-time histogram.
    pub fn ended(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }
}

/// Admits `req` for `caller`, waiting in `room` when it has no route for now (see the module
/// docs): the admitted request, or the refusal (the last one, when its deadline passes while it
/// waits; at once when the room is full or the route comes back only after the deadline).
pub async fn admit(
    admission: &Admission,
    room: &Arc<WaitingRoom>,
    caller: &Caller,
    req: &ChatRequest,
    options: AdmitOptions,
) -> Result<Admitted, Error> {
    let contested = |ep: &EndpointId, p: Priority| room.contested(ep, p);
    let refused = match admission.admit(caller, req, options, &contested) {
        Ok(a) => return Ok(a),
        Err(r) => r,
    };
    let Some(wait) = refused.wait else {
        return Err(refused.error);
    };
    if Instant::now() + wait.retry_after >= wait.deadline {
        return Err(refused.error); // its route comes back only after its deadline
    }
    let mut place = room.join(caller.key.org.as_str(), &wait, &refused.error)?;
    let options = AdmitOptions {
        deadline: Some(wait.deadline),
        ..options
    };
    let mut last = refused.error;
    loop {
        let Some(verdict) = room.turn(&place, wait.deadline).await else {
            place.ended("timeout");
            return Err(last);
        };
        match admission.admit(caller, req, options, &|_, _| false) {
            Ok(a) => {
                place.ended("admitted");
                let _ = verdict.send(Verdict::Admitted);
                return Ok(a);
            }
            Err(Refused {
                error,
                wait: Some(w),
            }) if Instant::now() + w.retry_after < wait.deadline => {
                room.later(&place, w.retry_after);
                let _ = verdict.send(Verdict::NotYet(w.retry_after));
                last = error;
            }
            Err(Refused { error, wait }) => {
                place.ended(if wait.is_some() { "timeout" } else { "refused" });
                let _ = verdict.send(Verdict::Gone);
                return Err(error);
            }
        }
    }
}

/// Lets waiters try, one at a time, in order; sleeps until the next is due.
async fn dispatch(room: std::sync::Weak<WaitingRoom>) {
    loop {
        let Some(r) = room.upgrade() else {
            return;
        };
        match r.next_due(Instant::now()) {
            Ok((id, finish, turn)) => {
                let (tx, rx) = oneshot::channel();
                if turn.send(tx).is_err() {
                    continue; // it stopped waiting meanwhile
                }
                // A try is a plan: microseconds. One that does not answer soon lost its caller.
                match tokio::time::timeout(Duration::from_secs(1), rx).await {
                    Ok(Ok(Verdict::Admitted)) => r.admitted(finish),
                    Ok(Ok(Verdict::NotYet(_) | Verdict::Gone)) | Ok(Err(_)) => {}
                    Err(_) => {
                        tracing::debug!(waiter = id, "a waiting request did not answer its turn")
                    }
                }
            }
            Err(soonest) => {
                let until = soonest.map_or_else(
                    || Instant::now() + Duration::from_secs(1),
                    |s| s.checked_sub(DUE_TOGETHER).unwrap_or(s),
                );
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = r.wake.notified() => {}
                }
            }
        }
    }
}
