//! The change feed: how the server tells listeners that changes are durable. Syncs publish what
//! they stored ([`Feed::publish`], once it is durable: after their flush, or on a store whose
//! commits are durable after their push's commit); each live connection ([`crate::api`]'s
//! WebSocket) subscribes and filters by access. In-process today (a bounded
//! [`tokio::sync::broadcast`]); on several server nodes it is where a node hears what the others
//! committed ([`follow`], through the database's notifications).
//!
//! Slow consumers never hold anyone up: the broadcast does not wait for receivers; one that falls
//! more than `limits::LIVE_BROADCAST_EVENTS_MAX` events behind is told so and resyncs. Admission
//! is counted here too: at most `LiveSettings::connections_max` listeners in all, and at most
//! `limits::LIVE_CONNECTIONS_PER_DEVICE_MAX` per device, a device's newest replacing its oldest
//! (a device that reconnects after its network dropped must not be locked out by the half-dead
//! connection it left behind, and one device can never keep other devices out).
//!
//! It knows nothing of HTTP; it may use tokio's channels, the config and [`crate::sync::Stored`].

use crate::config::LiveSettings;
use crate::sync::Stored;
use casenote_protocol::{DeviceId, DocId, Seq};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{broadcast, oneshot, OwnedSemaphorePermit, Semaphore};

/// What one sync stored, as the broadcast carries it.
#[derive(Debug)]
pub struct Changed {
    pub seq: Seq,
    pub docs: Vec<DocId>,
    /// The device that pushed: it is not told about its own changes.
    pub origin: Option<DeviceId>,
    /// The access epoch, shared by every listener of this event: read by the sync that
    /// published it, once what it stored was durable ([`Stored::epoch`]), or by the watch that
    /// heard it from another node, with the changes (`Committed::epoch`), so that a listener
    /// whose cache decides the event's documents answers on its async worker, without a
    /// blocking task; else (that read failed) read once by the first listener to handle the
    /// event. One store read per event where there was one per listener (on PostgreSQL those
    /// reads took every pooled connection under load). Through [`Changed::epoch_or_read`].
    pub epoch: OnceLock<u64>,
    /// Held by the listener reading the epoch, so the others wait for its read rather than
    /// each making their own: listeners wake together on an event, and before this a W5L edit
    /// on PostgreSQL cost about four epoch reads, a transaction each.
    reading: Mutex<()>,
}

impl Changed {
    /// The event's access epoch: the one already read, or read now by `read` (one caller at a
    /// time; a failed read leaves it for the next caller to try).
    pub fn epoch_or_read<E>(&self, read: impl FnOnce() -> Result<u64, E>) -> Result<u64, E> {
        if let Some(epoch) = self.epoch.get() {
            return Ok(*epoch);
        }
        let _one = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(epoch) = self.epoch.get() {
            return Ok(*epoch);
        }
        let epoch = read()?;
        Ok(*self.epoch.get_or_init(|| epoch))
    }
}

/// The hub every live connection subscribes to.
pub struct Feed {
    tx: broadcast::Sender<Arc<Changed>>,
    permits: Arc<Semaphore>,
    settings: LiveSettings,
    devices: Arc<Mutex<Devices>>,
    next_id: AtomicU64,
}

/// Each device's open connections, oldest first: an id and the way to tell it it was replaced.
type Devices = HashMap<DeviceId, VecDeque<(u64, oneshot::Sender<()>)>>;

impl Feed {
    pub fn new(settings: LiveSettings) -> Self {
        let (tx, _) = broadcast::channel(settings.broadcast_events.max(1));
        Feed {
            tx,
            permits: Arc::new(Semaphore::new(settings.connections_max)),
            settings,
            devices: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Announces what a sync stored (call it only once that is durable: the sync's flush
    /// returned, or the push committed on a store whose commits are durable). Never waits.
    pub fn publish(&self, stored: Stored, origin: Option<DeviceId>) {
        if stored.docs.is_empty() {
            return;
        }
        // No receiver is not an error: nobody is listening.
        let _ = self.tx.send(Arc::new(Changed {
            seq: stored.upto,
            docs: stored.docs,
            origin,
            epoch: stored.epoch.map_or_else(OnceLock::new, OnceLock::from),
            reading: Mutex::new(()),
        }));
    }

    /// Open live connections.
    /// A receiver of what is published from now on, outside the live channel's admission (the
    /// automerge-repo endpoint counts its connections itself).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Changed>> {
        self.tx.subscribe()
    }

    pub fn connections(&self) -> usize {
        self.settings.connections_max - self.permits.available_permits()
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    /// A slot for one more connection of `device`, or `None` when every slot is taken. At the
    /// device's own cap its oldest connection is told to close and its slot goes to this one.
    pub async fn admit(&self, device: DeviceId) -> Option<Admitted> {
        let replaced = self.replace_oldest_beyond_cap(device);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            // The replaced connection lets go of its slot once it has sent its close frame.
            Err(_) if replaced => tokio::time::timeout(
                self.settings.send_timeout,
                self.permits.clone().acquire_owned(),
            )
            .await
            .ok()?
            .ok()?,
            Err(_) => return None,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tell, replaced_rx) = oneshot::channel();
        lock(&self.devices)
            .entry(device)
            .or_default()
            .push_back((id, tell));
        Some(Admitted {
            rx: self.tx.subscribe(),
            permit,
            held: Held {
                devices: self.devices.clone(),
                device,
                id,
            },
            replaced: replaced_rx,
        })
    }

    /// Tells `device`'s oldest connections to close until one more fits under its cap; whether
    /// any was told.
    fn replace_oldest_beyond_cap(&self, device: DeviceId) -> bool {
        let mut devices = lock(&self.devices);
        let Some(held) = devices.get_mut(&device) else {
            return false;
        };
        let mut replaced = false;
        while held.len() >= self.settings.per_device_max.max(1) {
            if let Some((_, tell)) = held.pop_front() {
                let _ = tell.send(());
                replaced = true;
            }
        }
        replaced
    }

    /// Open live connections of `device`.
    pub fn device_connections(&self, device: DeviceId) -> usize {
        lock(&self.devices).get(&device).map_or(0, VecDeque::len)
    }
}

fn lock(devices: &Mutex<Devices>) -> std::sync::MutexGuard<'_, Devices> {
    devices.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's place in its device's list; leaves it when dropped.
pub struct Held {
    devices: Arc<Mutex<Devices>>,
    device: DeviceId,
    id: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut devices = lock(&self.devices);
        if let Some(held) = devices.get_mut(&self.device) {
            held.retain(|(id, _)| *id != self.id);
            if held.is_empty() {
                devices.remove(&self.device);
            }
        }
    }
}

/// A connection that was let in: subscribed to the broadcast from this moment, holding its slot
/// and its place among its device's connections until it is dropped.
pub struct Admitted {
    pub rx: broadcast::Receiver<Arc<Changed>>,
    pub permit: OwnedSemaphorePermit,
    pub held: Held,
    /// Fires when a newer connection of the same device took this one's place.
    pub replaced: oneshot::Receiver<()>,
}

/// Tells this node's devices what other nodes committed to a shared store
/// ([`crate::store::Store::watch`]): a thread of its own blocks on the watch and publishes each
/// batch it hears, as a sync on this node would, with no origin device (the node's own syncs
/// publish their changes themselves; the watch leaves them out). It stops once `stop` is set,
/// within `limits::LIVE_WATCH_WAIT_MS`. While the database cannot be reached it retries every
/// `limits::LIVE_WATCH_RETRY_MS` and reads what it missed from its cursor once back.
pub fn follow(
    mut watch: Box<dyn crate::store::Watch>,
    feed: Arc<Feed>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use casenote_protocol::limits;
    use std::time::Duration;
    std::thread::Builder::new()
        .name("casenote-watch".into())
        .spawn(move || {
            let wait = Duration::from_millis(limits::LIVE_WATCH_WAIT_MS);
            let mut failing = false;
            while !stop.load(Ordering::Relaxed) {
                match watch.wait(wait) {
                    Ok(Some(c)) => {
                        failing = false;
                        let stored = Stored {
                            upto: c.upto,
                            docs: c.docs,
                            epoch: c.epoch,
                        };
                        feed.publish(stored, None);
                    }
                    Ok(None) => failing = false,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "the watch on other nodes' changes failed; retrying");
                        }
                        failing = true;
                        std::thread::sleep(Duration::from_millis(limits::LIVE_WATCH_RETRY_MS));
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    fn changed() -> Changed {
        Changed {
            seq: Seq(1),
            docs: vec![DocId::new_random()],
            origin: None,
            epoch: OnceLock::new(),
            reading: Mutex::new(()),
        }
    }

    #[test]
    fn listeners_waking_together_read_an_events_epoch_once() {
        let event = changed();
        let reads = AtomicUsize::new(0);
        let start = Barrier::new(8);
        let epochs: Vec<u64> = std::thread::scope(|s| {
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        event
                            .epoch_or_read(|| {
                                reads.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                Ok::<u64, ()>(7)
                            })
                            .unwrap()
                    })
                })
                .collect();
            readers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(epochs, vec![7; 8]);
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "each listener read the epoch"
        );
    }

    #[test]
    fn an_event_published_with_the_syncs_epoch_is_not_read_again() {
        let feed = Feed::new(LiveSettings::default());
        let mut rx = feed.subscribe();
        let docs = vec![DocId::new_random()];
        let stored = |epoch| Stored {
            upto: Seq(1),
            docs: docs.clone(),
            epoch,
        };
        feed.publish(stored(Some(9)), None);
        feed.publish(stored(None), None);
        let known = rx.try_recv().unwrap();
        assert_eq!(known.epoch_or_read(|| Err("read")), Ok(9));
        let unknown = rx.try_recv().unwrap();
        assert_eq!(unknown.epoch_or_read(|| Err("read")), Err("read"));
    }

    #[test]
    fn a_failed_epoch_read_leaves_it_for_the_next_listener() {
        let event = changed();
        assert_eq!(event.epoch_or_read(|| Err("busy")), Err("busy"));
        assert_eq!(event.epoch_or_read(|| Ok::<u64, &str>(3)), Ok(3));
        assert_eq!(event.epoch_or_read(|| Err("not read again")), Ok(3));
    }
}
