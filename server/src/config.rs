//! The server's settings that are not limits (limits live in `casenote_protocol::limits`, with
//! their reasons): the late-entry window, the offline lease sent to devices, the live channel's
//! caps and timeouts, the connection cap and timeouts, the TLS configuration if the server
//! terminates TLS itself, and the open-file limit the cap is derived from. Builders let tests
//! shorten timeouts.
//!
//! It may use the protocol and read (and raise) the process's open-file limit; nothing else
//! (it holds a rustls configuration, made by `cli/tls.rs`, without looking inside).

use casenote_protocol::{limits, wire};
use std::sync::Arc;
use std::time::Duration;

/// Server settings that are not limits (limits live in `casenote_protocol::limits`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Filing a note more than this long after it happened needs a late-entry reason
    /// (`serve --late-entry-hours N`).
    pub late_entry_after_ms: i64,
    /// The live channel's settings (`GET /v1/live`).
    pub live: LiveSettings,
    /// The offline lease sent to devices in every sync answer (`serve --lock-after-hours`,
    /// `--wipe-after-days`).
    pub lease: wire::Lease,
    /// The connection cap and timeouts ([`crate::api`]'s accept loop).
    pub connections: ConnectionSettings,
    /// The built web app served at `/app/` (`serve --app-dir`); none: `/app/` is 404.
    pub app_dir: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            late_entry_after_ms: limits::LATE_ENTRY_AFTER_MS_DEFAULT,
            live: LiveSettings::default(),
            lease: wire::Lease::default(),
            connections: ConnectionSettings::default(),
            app_dir: None,
        }
    }
}

impl Config {
    /// This configuration with other live-channel settings.
    pub fn with_live(mut self, live: LiveSettings) -> Self {
        self.live = live;
        self
    }

    /// This configuration with another offline lease for devices.
    pub fn with_lease(mut self, lease: wire::Lease) -> Self {
        self.lease = lease;
        self
    }

    /// This configuration serving the web app built in `dir` at `/app/`.
    pub fn with_app_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.app_dir = Some(dir);
        self
    }

    /// This configuration with other connection settings.
    pub fn with_connections(mut self, connections: ConnectionSettings) -> Self {
        self.connections = connections;
        self
    }

    /// This configuration with another late-entry window.
    pub fn with_late_entry_after_ms(mut self, ms: i64) -> Self {
        self.late_entry_after_ms = ms;
        self
    }
}

/// The live channel's settings; [`Default`] takes them from `casenote_protocol::limits`. Tests
/// shorten the timeouts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LiveSettings {
    pub connections_max: usize,
    /// Connections one device may hold; a newer one replaces its oldest.
    pub per_device_max: usize,
    pub broadcast_events: usize,
    pub send_timeout: Duration,
    pub ping_interval: Duration,
    /// Least time between two events on one connection; what comes meanwhile is folded into
    /// the next.
    pub event_interval: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            connections_max: limits::LIVE_CONNECTIONS_MAX,
            per_device_max: limits::LIVE_CONNECTIONS_PER_DEVICE_MAX,
            broadcast_events: limits::LIVE_BROADCAST_EVENTS_MAX,
            send_timeout: Duration::from_millis(limits::LIVE_SEND_TIMEOUT_MS),
            ping_interval: Duration::from_millis(limits::LIVE_PING_INTERVAL_MS),
            event_interval: Duration::from_millis(limits::LIVE_EVENT_INTERVAL_MS),
        }
    }
}

impl LiveSettings {
    /// These settings with another least time between two events on one connection.
    pub fn with_event_interval(mut self, interval: Duration) -> Self {
        self.event_interval = interval;
        self
    }

    /// These settings with another send timeout.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// These settings with at most `max` connections in all (at least 1).
    pub fn with_connections_max(mut self, max: usize) -> Self {
        self.connections_max = max.max(1);
        self
    }

    /// These settings with at most `max` connections per device (at least 1).
    pub fn with_per_device_max(mut self, max: usize) -> Self {
        self.per_device_max = max.max(1);
        self
    }

    /// These settings with another broadcast capacity.
    pub fn with_broadcast_events(mut self, events: usize) -> Self {
        self.broadcast_events = events.max(1);
        self
    }
}

/// Connection settings; [`Default`] takes them from `casenote_protocol::limits`. Tests shorten
/// the timeouts and set a small cap.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionSettings {
    /// The connection cap; `None` derives it from the open-file limit ([`connections_cap`]).
    pub connections_max: Option<usize>,
    pub header_read_timeout: Duration,
    pub body_stall_timeout: Duration,
    pub write_stall_timeout: Duration,
    /// TLS terminated by the server itself (`serve --tls-cert --tls-key`); `None`: plain HTTP,
    /// as behind a proxy that terminates it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most requests served at once, the live channel and the probes aside (`api/guard.rs`);
    /// one more is answered 503 `server_busy` with `Retry-After`.
    pub requests_max: usize,
    /// How long a short request may take before it is answered 503 `request_timeout`
    /// (`api/guard.rs` says which routes are exempt, and why).
    pub request_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            connections_max: None,
            header_read_timeout: Duration::from_millis(limits::HTTP_HEADER_READ_TIMEOUT_MS),
            body_stall_timeout: Duration::from_millis(limits::HTTP_BODY_STALL_TIMEOUT_MS),
            write_stall_timeout: Duration::from_millis(limits::HTTP_WRITE_STALL_TIMEOUT_MS),
            tls: None,
            requests_max: limits::HTTP_REQUESTS_IN_FLIGHT_MAX,
            request_timeout: Duration::from_millis(limits::HTTP_REQUEST_TIMEOUT_MS),
        }
    }
}

impl ConnectionSettings {
    /// These settings with a fixed connection cap (at least 1).
    pub fn with_connections_max(mut self, max: usize) -> Self {
        self.connections_max = Some(max.max(1));
        self
    }

    /// These settings with TLS terminated by the server, under `tls`.
    pub fn with_tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These settings with at most `max` requests served at once (at least 1).
    pub fn with_requests_max(mut self, max: usize) -> Self {
        self.requests_max = max.max(1);
        self
    }

    /// These settings with another timeout for short requests.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// These settings with all three timeouts set to `timeout`.
    pub fn with_timeouts(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self.body_stall_timeout = timeout;
        self.write_stall_timeout = timeout;
        self
    }

    /// The connection cap these settings give in this process.
    pub fn cap(&self) -> usize {
        self.connections_max
            .unwrap_or_else(|| connections_cap(open_files_limit()))
    }
}

/// The process's open-file limit (soft), if it can be read.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the process's soft open-file limit towards its hard limit, as far as the server can
/// use (`CONNECTIONS_MAX + FD_RESERVE`): many systems start services at a soft limit of 1,024
/// with a far higher hard one. Returns the soft limit in force afterwards. Called by `serve`.
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let want = (limits::CONNECTIONS_MAX + limits::FD_RESERVE) as u64;
        let now = getrlimit(Resource::Nofile);
        let soft = now.current.unwrap_or(u64::MAX);
        let hard = now.maximum.unwrap_or(u64::MAX);
        if soft < want && hard > soft {
            let raised = Rlimit {
                current: Some(want.min(hard)),
                maximum: now.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::warn!(error = %e, soft, "could not raise the open-file limit");
            }
        }
    }
    open_files_limit()
}

/// The connection cap for an open-file limit of `open_files` (`None`: unknown).
pub fn connections_cap(open_files: Option<u64>) -> usize {
    let budget = open_files
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .map_or(limits::CONNECTIONS_MAX, |n| {
            n.saturating_sub(limits::FD_RESERVE)
        });
    budget.clamp(limits::CONNECTIONS_MIN, limits::CONNECTIONS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit_and_within_its_bounds() {
        assert_eq!(connections_cap(Some(1_024)), 1_024 - limits::FD_RESERVE);
        assert_eq!(connections_cap(Some(1_000_000)), limits::CONNECTIONS_MAX);
        assert_eq!(connections_cap(Some(64)), limits::CONNECTIONS_MIN);
        assert_eq!(connections_cap(None), limits::CONNECTIONS_MAX);
    }
}
