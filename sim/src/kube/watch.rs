//! Watches: every write becomes an event, kept in a bounded history and
//! handed to the open watches of its resource and namespace.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

use super::object;
use super::status::ApiError;

/// Watch events kept for watches that start from an older resourceVersion
/// (older ones get 410 and relist, as from a real API server's watch
/// cache, which keeps 100 per resource by default). Each event holds its
/// object and the one before: at 2,048 the history kept a cluster's whole
/// upgrade alive, and a 100-cluster fleet grew by 300 to 500 MB a wave; at
/// 256 it still grew by 120 MB a wave, every page of it faulted in while
/// the wave's restarts came in. A watch starts from a list a few events
/// old, so 128 is ample.
pub const WATCH_HISTORY_COUNT_MAX: usize = 128;
/// Watch events buffered per watcher before it is cut off (and relists).
const WATCH_BUFFER_COUNT_MAX: usize = 8_192;
/// Watches open at once on one cluster; more are refused with 429, as an
/// API server under load refuses them.
const WATCHERS_COUNT_MAX: usize = 4_096;

/// What a watch event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct WatchEvent {
    /// The resourceVersion it produced.
    pub resource_version: u64,
    /// (group, plural).
    pub resource: (&'static str, &'static str),
    /// What happened.
    pub kind: EventType,
    /// The object after (or, for a deletion, before) the change.
    pub object: Arc<Value>,
    /// The object before the change, for modifications.
    pub old: Option<Arc<Value>>,
}

/// The latest watch events, for watches that start from a resourceVersion.
#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Arc<WatchEvent>>,
    /// Watches from this resourceVersion or later can be served from `events`.
    from: u64,
}

impl History {
    /// Keeps `event`, dropping the oldest beyond [`WATCH_HISTORY_COUNT_MAX`].
    pub fn push(&mut self, event: Arc<WatchEvent>) {
        self.events.push_back(event);
        while self.events.len() > WATCH_HISTORY_COUNT_MAX {
            if let Some(dropped) = self.events.pop_front() {
                self.from = dropped.resource_version;
            }
        }
        assert!(self.events.len() <= WATCH_HISTORY_COUNT_MAX, "the watch history is bounded");
    }

    /// Forgets everything: watches start from `resource_version`.
    pub fn restart_at(&mut self, resource_version: u64) {
        self.events.clear();
        self.from = resource_version;
    }

    /// The events after `resource_version`, or `None` if some are no longer kept.
    #[must_use]
    pub fn since(&self, resource_version: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if resource_version < self.from {
            return None;
        }
        Some(self.events.iter().filter(|event| event.resource_version > resource_version).cloned().collect())
    }
}

/// The start of a watch: the events to send first, and the live feed.
pub type WatchStart = (Vec<Arc<WatchEvent>>, mpsc::Receiver<Arc<WatchEvent>>);

/// The open watches of a cluster, each with what it watches. A write is
/// handed only to the watches of its resource (and namespace): a
/// namespace's watch of Deployments is not woken by every pod of the
/// cluster, as a real API server's watch cache dispatches by resource.
#[derive(Debug, Default)]
pub struct Watchers {
    open: Mutex<Vec<Watcher>>,
}

#[derive(Debug)]
struct Watcher {
    resource: (&'static str, &'static str),
    namespace: Option<String>,
    sender: mpsc::Sender<Arc<WatchEvent>>,
}

impl Watchers {
    /// A live feed of the writes to `resource` (in `namespace`, if given).
    pub fn subscribe(
        &self,
        resource: (&'static str, &'static str),
        namespace: Option<&str>,
    ) -> Result<mpsc::Receiver<Arc<WatchEvent>>, ApiError> {
        let mut open = self.open.lock().expect("watchers lock poisoned");
        open.retain(|watcher| !watcher.sender.is_closed());
        if open.len() >= WATCHERS_COUNT_MAX {
            return Err(ApiError::too_many_requests());
        }
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER_COUNT_MAX);
        open.push(Watcher { resource, namespace: namespace.map(str::to_string), sender });
        Ok(receiver)
    }

    /// Hands `event` to every watch of its resource and namespace. A watch
    /// whose buffer is full is too slow to keep up: it is cut off (its
    /// stream ends after what it has, and its client relists), as is one
    /// whose client went away.
    pub fn send(&self, event: &Arc<WatchEvent>) {
        let mut open = self.open.lock().expect("watchers lock poisoned");
        let namespace = object::namespace(&event.object);
        open.retain(|watcher| {
            if watcher.resource != event.resource || watcher.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                return !watcher.sender.is_closed();
            }
            watcher.sender.try_send(Arc::clone(event)).is_ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(resource: (&'static str, &'static str), namespace: &str, resource_version: u64) -> Arc<WatchEvent> {
        Arc::new(WatchEvent {
            resource_version,
            resource,
            kind: EventType::Added,
            object: Arc::new(json!({"metadata": {"name": "x", "namespace": namespace}})),
            old: None,
        })
    }

    /// A write reaches only the watches of its resource and namespace; a
    /// watch too slow to keep up is cut off after what it has.
    #[test]
    fn writes_reach_the_watches_of_their_resource_and_namespace() {
        const DEPLOYMENTS: (&str, &str) = ("apps", "deployments");
        let watchers = Watchers::default();
        let mut shop = watchers.subscribe(DEPLOYMENTS, Some("shop")).expect("subscribed");
        let mut everywhere = watchers.subscribe(DEPLOYMENTS, None).expect("subscribed");
        let mut pods = watchers.subscribe(("", "pods"), Some("shop")).expect("subscribed");
        watchers.send(&event(DEPLOYMENTS, "shop", 1));
        watchers.send(&event(DEPLOYMENTS, "bank", 2));
        watchers.send(&event(("", "pods"), "bank", 3));
        let versions = |receiver: &mut mpsc::Receiver<Arc<WatchEvent>>| {
            std::iter::from_fn(|| receiver.try_recv().ok()).map(|e| e.resource_version).collect::<Vec<_>>()
        };
        assert_eq!(versions(&mut shop), [1]);
        assert_eq!(versions(&mut everywhere), [1, 2]);
        assert_eq!(versions(&mut pods), Vec::<u64>::new());

        for rv in 0..=WATCH_BUFFER_COUNT_MAX as u64 {
            watchers.send(&event(DEPLOYMENTS, "shop", 10 + rv));
        }
        assert_eq!(versions(&mut shop).len(), WATCH_BUFFER_COUNT_MAX, "a full buffer is kept");
        assert!(shop.is_closed(), "and then the watch is cut off");
        drop(everywhere);
        watchers.send(&event(DEPLOYMENTS, "shop", 1_000_000));
        assert_eq!(watchers.open.lock().expect("lock").len(), 1, "closed watches are let go: only the pods' is left");
    }
}
