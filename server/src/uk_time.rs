//! Times as people in the UK read them: Europe/London, GMT in winter and BST in summer, from the
//! IANA time zone database that jiff compiles in (so a host without `/usr/share/zoneinfo` gives
//! the same answer). The subject access export and its requests' due dates use it; everything
//! stored stays in ms since the Unix epoch.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Europe/London, from the compiled-in database.
fn london() -> TimeZone {
    // The bundled database always holds it; UTC is only a guard against a build without it.
    jiff::tz::db().get("Europe/London").unwrap_or(TimeZone::UTC)
}

/// `ms` since the epoch in London, if it is a time jiff can hold.
fn zoned(ms: i64) -> Option<Zoned> {
    Some(Timestamp::from_millisecond(ms).ok()?.to_zoned(london()))
}

/// A moment for people: `Tuesday 3 March 2026, 14:05 GMT` (`BST` in summer); `-` for a time
/// that cannot be one.
pub fn when(ms: i64) -> String {
    match zoned(ms) {
        Some(z) => z.strftime("%A %-d %B %Y, %H:%M %Z").to_string(),
        None => "-".into(),
    }
}

/// The day in London that `ms` falls on.
pub fn date_of(ms: i64) -> Option<Date> {
    Some(zoned(ms)?.date())
}

/// A day for people: `Tuesday 3 March 2026`.
pub fn day(date: Date) -> String {
    date.strftime("%A %-d %B %Y").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winter_is_gmt_and_summer_is_bst() {
        // 2026-01-15T12:00:00Z and 2026-07-15T12:00:00Z.
        assert_eq!(
            when(1_768_478_400_000),
            "Thursday 15 January 2026, 12:00 GMT"
        );
        assert_eq!(when(1_784_116_800_000), "Wednesday 15 July 2026, 13:00 BST");
    }

    #[test]
    fn the_clocks_going_forward_is_followed() {
        // 2026-03-29T00:59:00Z is 00:59 GMT; 01:01Z is 02:01 BST.
        assert_eq!(when(1_774_745_940_000), "Sunday 29 March 2026, 00:59 GMT");
        assert_eq!(when(1_774_746_060_000), "Sunday 29 March 2026, 02:01 BST");
    }

    #[test]
    fn a_late_evening_in_summer_is_the_next_day_in_utc_but_not_here() {
        // 2026-06-30T23:30:00Z is 1 July 00:30 BST.
        assert_eq!(
            date_of(1_782_862_200_000).map(day).as_deref(),
            Some("Wednesday 1 July 2026")
        );
    }
}
