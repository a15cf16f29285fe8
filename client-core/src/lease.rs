//! How long a device has been out of touch with the server, counted so that no clock error can
//! wipe it early or keep it alive for free.
//!
//! The wall clock of a device can be wrong either way, and can be set by whoever holds it, so it
//! is never the measure on its own. At each contact the device keeps an [`Anchor`]: the
//! server's time (from the answer), its own wall clock, and a reading of its monotonic clock
//! ([`Uptime`]: time since boot, suspend included, with the boot's id). While the boot is the
//! same, time away is the monotonic time since the anchor: the wall clock plays no part, so
//! setting it forward or back changes nothing. After a reboot the monotonic clock starts again,
//! so the wall clock is all there is: time away is the smaller of "wall clock now minus the
//! server's time at contact" and "wall clock now minus the device's own wall clock at contact"
//! (so a clock that was wrong at contact, or went wrong after it, is not counted against the
//! device twice), never less than the time away already counted. The first check in a new boot
//! re-anchors to that boot, so from then on the monotonic clock counts again.
//!
//! A clock set back therefore buys nothing while the device runs, and after a reboot buys at
//! most what the wall clock lies about; a clock set forward after a reboot can lock the device
//! (harmless: signing in unlocks it) or seal it away, which signing in undoes (see
//! [`crate::store`], key escrow). No reading of any clock deletes an edit.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A reading of the device's monotonic clock: ms since boot, suspend included, and which boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uptime {
    pub boot_id: String,
    pub ms: i64,
}

/// The device's monotonic clock, injected like the wall clock. `None`: the host has none to
/// offer, and the lease falls back to the wall clock.
pub type UptimeClock = Arc<dyn Fn() -> Option<Uptime> + Send + Sync>;

/// The operating system's monotonic clock. On Linux and Android: `CLOCK_BOOTTIME` (it counts
/// suspend, unlike `Instant`) and the kernel's boot id, so a reboot is noticed. Elsewhere: none;
/// an app passes its own (iOS: `CLOCK_MONOTONIC`, which counts sleep, and a boot session id).
pub fn system_uptime() -> UptimeClock {
    Arc::new(read_system_uptime)
}

/// No monotonic clock: the lease counts with the wall clock alone (tests that move a wall clock
/// by hand, hosts without one).
pub fn no_uptime() -> UptimeClock {
    Arc::new(|| None)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_system_uptime() -> Option<Uptime> {
    // The boot does not change while this process runs: read once (it was a file read at every
    // sync, 5% of an idle sync's device time at W3).
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let boot_id = BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
        })
        .clone()?;
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    // `tv_nsec` is an i64 on most targets and a C long on a few.
    #[allow(clippy::unnecessary_cast)]
    let nsec = t.tv_nsec as i64;
    Some(Uptime {
        boot_id,
        ms: t.tv_sec.saturating_mul(1000) + nsec / 1_000_000,
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_system_uptime() -> Option<Uptime> {
    None
}

/// What the device keeps at each contact with the server, and what it has counted since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The server's clock at the contact (ms since the epoch).
    pub server_ms: i64,
    /// The device's wall clock at the contact.
    pub device_ms: i64,
    /// The monotonic clock when this anchor was taken (at the contact, or at the first check in
    /// a later boot), if the device has one.
    pub uptime: Option<Uptime>,
    /// Time away already counted when this anchor was taken (0 at a contact).
    pub counted_ms: i64,
}

impl Anchor {
    /// The anchor of a contact: the server's time in its answer and the device's clocks now.
    pub fn at_contact(server_ms: i64, device_ms: i64, uptime: Option<Uptime>) -> Self {
        Self {
            server_ms,
            device_ms,
            uptime,
            counted_ms: 0,
        }
    }

    /// Time away from the server now (ms, never negative), and, when the boot changed since the
    /// anchor was taken, the anchor to keep from now on (the caller stores it if it can).
    pub fn away(&self, device_ms: i64, uptime: Option<&Uptime>) -> (i64, Option<Anchor>) {
        if let (Some(then), Some(now)) = (&self.uptime, uptime) {
            if then.boot_id == now.boot_id && now.ms >= then.ms {
                return (self.counted_ms.saturating_add(now.ms - then.ms), None);
            }
        }
        let by_wall = device_ms
            .saturating_sub(self.server_ms)
            .min(device_ms.saturating_sub(self.device_ms));
        let away = by_wall.max(self.counted_ms).max(0);
        let reanchor = match uptime {
            Some(now) if self.uptime.as_ref() != Some(now) => Some(Anchor {
                uptime: Some(now.clone()),
                counted_ms: away,
                ..self.clone()
            }),
            _ => None,
        };
        (away, reanchor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn up(boot: &str, ms: i64) -> Option<Uptime> {
        Some(Uptime {
            boot_id: boot.into(),
            ms,
        })
    }

    #[test]
    fn in_the_same_boot_only_the_monotonic_clock_counts() {
        let a = Anchor::at_contact(1_000 * DAY, 1_000 * DAY, up("b1", 5_000));
        for wall in [1_015 * DAY, 635 * DAY, 1_000 * DAY] {
            let (away, re) = a.away(wall, up("b1", 5_000 + 3_600_000).as_ref());
            assert_eq!(away, 3_600_000, "a wall clock of {wall} counted");
            assert!(re.is_none());
        }
    }

    #[test]
    fn a_contact_made_with_the_clock_a_year_behind_counts_from_the_servers_time_after_a_reboot() {
        // The sync ran with the device clock 365 days behind the server's.
        let a = Anchor::at_contact(1_000 * DAY, 635 * DAY, up("b1", 5_000));
        // Rebooted, clock put right, an hour later.
        let (away, re) = a.away(1_000 * DAY + 3_600_000, up("b2", 60_000).as_ref());
        assert_eq!(away, 3_600_000);
        let re = re.expect("a new boot re-anchors");
        assert_eq!(re.counted_ms, away);
        // In the new boot the monotonic clock counts from there, whatever the wall clock says.
        let (later, _) = re.away(0, up("b2", 60_000 + DAY).as_ref());
        assert_eq!(later, 3_600_000 + DAY);
    }

    #[test]
    fn a_clock_wrong_at_contact_and_still_wrong_after_a_reboot_is_not_held_against_the_device() {
        // 15 days ahead at the contact and still after the reboot, two hours later.
        let a = Anchor::at_contact(1_000 * DAY, 1_015 * DAY, up("b1", 5_000));
        let (away, _) = a.away(1_015 * DAY + 7_200_000, up("b2", 1).as_ref());
        assert_eq!(away, 7_200_000);
    }

    #[test]
    fn after_a_reboot_a_clock_set_back_buys_nothing_already_counted() {
        let a = Anchor {
            counted_ms: 2 * DAY,
            ..Anchor::at_contact(1_000 * DAY, 1_000 * DAY, up("b1", 5_000))
        };
        let (away, _) = a.away(900 * DAY, up("b2", 1).as_ref());
        assert_eq!(away, 2 * DAY);
        // And without any monotonic clock: the wall clock, floored the same way.
        let (away, re) = a.away(1_003 * DAY, None);
        assert_eq!((away, re), (3 * DAY, None));
        let (away, _) = a.away(0, None);
        assert_eq!(away, 2 * DAY);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_system_monotonic_clock_reads_and_moves_forward() {
        let first = read_system_uptime().expect("Linux has CLOCK_BOOTTIME and a boot id");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = read_system_uptime().unwrap();
        assert_eq!(first.boot_id, second.boot_id);
        assert!(second.ms >= first.ms + 15, "{first:?} then {second:?}");
        assert_eq!(first.boot_id.len(), 36, "a uuid: {}", first.boot_id);
    }
}
