//! Instants as text: RFC 3339 UTC with milliseconds out (`2026-01-02T03:04:05.000Z`), with or
//! without fractional seconds in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subledger_core::Timestamp;

/// `2026-01-02T03:04:05.000Z`. Instants before 1970 are shown as the epoch.
pub fn format_rfc3339_millis(at: Timestamp) -> String {
    let millis = u64::try_from(at.millis()).unwrap_or(0);
    let instant = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(instant).to_string()
}

/// Parses an RFC 3339 UTC instant (`Z`), with or without fractional seconds; sub-millisecond
/// digits are dropped (instants are kept in milliseconds).
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let instant = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    let since = instant.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok().map(Timestamp)
}

/// The current wall-clock instant (for tools, never for the state machine).
pub fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_with_milliseconds() {
        let at = Timestamp(1_767_323_045_123);
        let text = format_rfc3339_millis(at);
        assert_eq!(text, "2026-01-02T03:04:05.123Z");
        assert_eq!(parse_rfc3339(&text), Some(at));
        assert_eq!(
            parse_rfc3339("2026-01-02T03:04:05Z"),
            Some(Timestamp(1_767_323_045_000))
        );
        assert_eq!(parse_rfc3339("not a date"), None);
        assert_eq!(parse_rfc3339("2026-13-02T03:04:05Z"), None);
    }
}
