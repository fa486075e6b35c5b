//! Throttles and node-wide caps: token buckets (rate + burst) for messages (gateway-wide,
//! per route, per connection, per API key), new connections and management callers, and
//! semaphores for connections open at once and integration calls in flight per node. The
//! bucket itself is [`crate::bucket`]; here a [`Rate`] (burst 0 included) becomes one.
//!
//! Owns the limit state and the decisions; it never answers a client itself. The edge
//! turns a refusal into a 429 (handshake), a `Too Many Requests` frame or a close 1008
//! (session), and the management API into 429 `LimitExceededException`. Time comes from
//! `tokio::time::Instant`, so tests drive every bucket with paused time. Nothing here does
//! I/O; `[limits]` is read once at startup.

pub mod keyed;

use std::future::Future;
use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use keyed::KeyedBuckets;

use crate::bucket::TokenBucket;
use crate::config::{LimitsSettings, Rate};

/// Longest `x-api-key` value used as a bucket key; a longer one is cut (keys are at most
/// 128 characters on AWS).
const MAX_API_KEY_LEN: usize = 128;

/// The limits of one node, shared by every handshake, session and management call.
#[derive(Debug)]
pub struct Limits {
    /// The `[limits]` section these were built from.
    settings: LimitsSettings,
    /// Gateway-wide message bucket; a std mutex held for a few arithmetic operations.
    messages: Option<Mutex<TokenBucket>>,
    /// No node-wide, route or API-key message limit is set (the default): a message is
    /// checked against its connection's own bucket only, without a clock read or a lookup.
    node_messages_off: bool,
    /// Per-route buckets (rates from `routes`, else `route_messages`).
    routes: KeyedBuckets<Arc<str>>,
    /// Per-API-key buckets.
    api_keys: KeyedBuckets<Arc<str>>,
    /// New-connection bucket; a std mutex, as `messages`.
    new_connections: Option<Mutex<TokenBucket>>,
    /// Permits for connections open at once (`None`: no limit). Each session owns one.
    connections: Option<Arc<Semaphore>>,
    /// Per-caller management buckets.
    management: KeyedBuckets<Caller>,
    /// Permits for integration calls in flight on the node (`None`: no limit).
    calls: Option<Arc<Semaphore>>,
    /// Keys the hashes of management bearer tokens, so the map never holds a token.
    token_hasher: RandomState,
}

/// Which limit refused a new connection (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` connections are open.
    MaxConnections,
    /// `limits.new_connections` is exhausted.
    NewConnections,
}

impl Refused {
    /// The setting that refused.
    pub fn setting(self) -> &'static str {
        match self {
            Self::MaxConnections => "limits.max_connections",
            Self::NewConnections => "limits.new_connections",
        }
    }
}

/// Who is calling the management API, for its per-caller bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A caller that presented a valid bearer token: a keyed hash of the token.
    Token(u64),
    /// Anyone else, by peer address.
    Peer(IpAddr),
    /// Neither is known (no peer address); all such callers share one bucket.
    Unknown,
}

/// What the throttles say about one client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Route it.
    Pass,
    /// Drop it and answer with a `Too Many Requests` frame.
    Throttled,
    /// Drop it and close the connection with 1008: it kept sending while throttled.
    Abusive,
}

impl Limits {
    /// Builds the node's limits from `[limits]`.
    pub fn new(settings: &LimitsSettings) -> Self {
        let now = Instant::now();
        let bucket = |rate: Rate| (!rate.is_off()).then(|| Mutex::new(bucket_for(rate, now)));
        let semaphore = |cap: usize| (cap > 0).then(|| Arc::new(Semaphore::new(cap)));
        let keys = settings.max_tracked_keys;
        Self {
            settings: settings.clone(),
            messages: bucket(settings.messages),
            node_messages_off: settings.messages.is_off()
                && settings.route_messages.is_off()
                && settings.routes.values().all(Rate::is_off)
                && settings.api_key_messages.is_off(),
            // Routes are few (the configuration names them), so every one is tracked.
            routes: KeyedBuckets::new(settings.route_messages, usize::MAX),
            api_keys: KeyedBuckets::new(settings.api_key_messages, keys),
            new_connections: bucket(settings.new_connections),
            connections: semaphore(settings.max_connections),
            management: KeyedBuckets::new(settings.management_requests, keys),
            calls: semaphore(settings.max_inflight_per_node),
            token_hasher: RandomState::new(),
        }
    }

    /// Admits a new connection (the top of the handshake pipeline): takes a connection
    /// permit, then a new-connection token. The returned [`ConnLimits`] holds the permit
    /// and goes with the session; dropping it frees the slot. The connection's API key is
    /// its `x-api-key` header until an authorizer sets [`ConnLimits::api_key`].
    pub fn admit(self: &Arc<Self>, headers: &HeaderMap) -> Result<ConnLimits, Refused> {
        let permit = match &self.connections {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refused::MaxConnections)?,
            ),
            None => None,
        };
        if !take(self.new_connections.as_ref(), Instant::now()) {
            return Err(Refused::NewConnections);
        }
        let api_key = headers
            .get("x-api-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .filter(|k| !k.is_empty())
            .map(|k| Arc::from(truncate(&k, MAX_API_KEY_LEN)));
        let now = Instant::now();
        let rate = self.settings.connection_messages;
        Ok(ConnLimits {
            limits: self.clone(),
            _permit: permit,
            api_key,
            bucket: (!rate.is_off()).then(|| bucket_for(rate, now)),
            streak: 0,
            streak_started: now,
        })
    }

    /// Takes a management token for `caller`; `false` means answer 429.
    pub fn management_call(&self, caller: &Caller) -> bool {
        self.management.try_take(caller, Instant::now())
    }

    /// The [`Caller`] key of a bearer token (a keyed hash: the token itself is not kept).
    pub fn token_caller(&self, token: &str) -> Caller {
        Caller::Token(self.token_hasher.hash_one(token))
    }

    /// Per-API-key buckets, for an authorizer that gives keys rates of their own
    /// ([`KeyedBuckets::try_take_at`]).
    pub fn api_keys(&self) -> &KeyedBuckets<Arc<str>> {
        &self.api_keys
    }

    /// Connection permits free now (`None`: no limit).
    pub fn free_connection_slots(&self) -> Option<usize> {
        self.connections.as_ref().map(|s| s.available_permits())
    }

    /// Integration-call permits free now (`None`: no limit).
    pub fn free_call_slots(&self) -> Option<usize> {
        self.calls.as_ref().map(|s| s.available_permits())
    }

    /// A gate for one session's integration calls (the per-node cap).
    pub fn call_gate<T: Send + 'static>(&self) -> CallGate<T> {
        CallGate {
            semaphore: self.calls.clone(),
            parked: None,
        }
    }

    fn route_rate(&self, route: &str) -> Rate {
        self.settings
            .routes
            .get(route)
            .copied()
            .unwrap_or(self.settings.route_messages)
    }
}

/// One connection's share of the limits: its connection permit, its message bucket, its
/// API key and how long it has been throttled without a pause. Owned by the session.
#[derive(Debug)]
pub struct ConnLimits {
    limits: Arc<Limits>,
    /// Held for the connection's life; dropping it frees a `max_connections` slot.
    _permit: Option<OwnedSemaphorePermit>,
    /// The key whose bucket this connection's messages draw from, if any. An authorizer
    /// that validates keys replaces it (AWS: `x-api-key` or `usageIdentifierKey`).
    pub api_key: Option<Arc<str>>,
    /// The connection's own message bucket (`None`: no per-connection limit).
    bucket: Option<TokenBucket>,
    /// Successive throttled messages since the last one let through.
    streak: u32,
    /// When the current streak began.
    streak_started: Instant,
}

impl ConnLimits {
    /// Decides about one message whose route is `route` (`None` when no route matched or
    /// the body was refused): the connection's bucket first, then its API key's, then the
    /// gateway-wide bucket, then the route's. The first refusal wins; tokens an earlier
    /// bucket gave are spent (the message was received).
    pub fn check_message(&mut self, route: Option<&str>) -> Verdict {
        let limits = &*self.limits;
        if limits.node_messages_off && self.bucket.is_none() {
            return Verdict::Pass;
        }
        let now = Instant::now();
        let pass = self.bucket.as_mut().is_none_or(|b| b.try_take(now))
            && self
                .api_key
                .as_ref()
                .is_none_or(|key| limits.api_keys.try_take(key, now))
            && take(limits.messages.as_ref(), now)
            && route.is_none_or(|route| {
                let rate = limits.route_rate(route);
                rate.is_off() || limits.routes.try_take_at(&Arc::from(route), rate, now)
            });
        if pass {
            self.streak = 0;
            return Verdict::Pass;
        }
        let window = Duration::from_millis(limits.settings.throttled_window_ms);
        if self.streak == 0 || now.saturating_duration_since(self.streak_started) > window {
            self.streak = 0;
            self.streak_started = now;
        }
        self.streak += 1;
        let close_after = limits.settings.close_after_throttled;
        if close_after > 0 && self.streak >= close_after {
            Verdict::Abusive
        } else {
            Verdict::Throttled
        }
    }

    /// The node's limits.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }
}

type Parked<T> = (
    Pin<Box<dyn Future<Output = Option<OwnedSemaphorePermit>> + Send>>,
    Pin<Box<dyn Future<Output = T> + Send>>,
);

/// Holds back one session's integration calls while the node has
/// `limits.max_inflight_per_node` calls in flight. A call that finds no permit is parked;
/// the session stops reading until [`CallGate::ready`] hands it back with a permit, so TCP
/// pushes back on the client (the same policy as the per-connection cap).
pub struct CallGate<T> {
    /// The node's call permits (`None`: no limit).
    semaphore: Option<Arc<Semaphore>>,
    /// The one call waiting for a permit, with its place in the semaphore's queue.
    parked: Option<Parked<T>>,
}

impl<T> std::fmt::Debug for CallGate<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGate")
            .field("limited", &self.semaphore.is_some())
            .field("parked", &self.parked.is_some())
            .finish()
    }
}

impl<T: Send + 'static> CallGate<T> {
    /// Spawns `call` into `set` if a permit is free (it holds the permit until it ends);
    /// otherwise parks it. Only one call can be parked: stop reading while
    /// [`CallGate::is_parked`].
    pub fn start(&mut self, set: &mut JoinSet<T>, call: impl Future<Output = T> + Send + 'static) {
        let Some(semaphore) = &self.semaphore else {
            set.spawn(call);
            return;
        };
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => {
                set.spawn(with_permit(permit, call));
            }
            Err(_) => {
                let semaphore = semaphore.clone();
                self.parked = Some((
                    Box::pin(async move { semaphore.acquire_owned().await.ok() }),
                    Box::pin(call),
                ));
            }
        }
    }

    /// Whether a call is waiting for a permit.
    pub fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Waits for the parked call's permit; returns the call, ready to spawn. Pending
    /// forever when nothing is parked (guard the `select!` branch with `is_parked`).
    /// Cancel-safe: dropping it keeps the call parked and its place in the queue.
    pub fn ready(&mut self) -> impl Future<Output = impl Future<Output = T> + Send + 'static> + '_ {
        std::future::poll_fn(move |cx| {
            let Some((permit, _)) = self.parked.as_mut() else {
                return std::task::Poll::Pending;
            };
            let permit = std::task::ready!(permit.as_mut().poll(cx));
            let (_, call) = self.parked.take().expect("parked");
            std::task::Poll::Ready(async move {
                let _permit = permit;
                call.await
            })
        })
    }
}

async fn with_permit<T>(permit: OwnedSemaphorePermit, call: impl Future<Output = T>) -> T {
    let _permit = permit;
    call.await
}

/// A full bucket for `rate` (which must be on); a burst of 0 is read by [`Rate::capacity`].
fn bucket_for(rate: Rate, now: Instant) -> TokenBucket {
    TokenBucket::new(rate.rate, rate.capacity(), now)
}

/// Whether `bucket` was made for `rate` (a changed rate needs a new bucket).
fn made_for(bucket: &TokenBucket, rate: Rate) -> bool {
    bucket.has_shape(rate.rate, rate.capacity())
}

fn take(bucket: Option<&Mutex<TokenBucket>>, now: Instant) -> bool {
    bucket.is_none_or(|b| b.lock().unwrap_or_else(|p| p.into_inner()).try_take(now))
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
