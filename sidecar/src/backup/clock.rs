//! Wall-clock times as backups record them: microseconds since the Unix epoch, written as
//! RFC 3339 in UTC, and read back from RFC 3339 or Postgres's timestamptz text. The calendar is
//! `jiff`'s; this module only fixes the formats Toygres writes and accepts.

use anyhow::{bail, Context};
use jiff::Timestamp;

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    Timestamp::now().as_microsecond()
}

fn timestamp(micros: i64) -> Timestamp {
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `2026-11-23T06:15:00.123456Z`.
pub fn rfc3339(micros: i64) -> String {
    timestamp(micros)
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// `20261123T061500Z`: the stem of a backup id.
pub fn id_stamp(micros: i64) -> String {
    timestamp(micros).strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Reads `YYYY-MM-DD[T ]HH:MM:SS[.ffffff]` followed by a time zone (`Z`, `UTC`, `±HH`,
/// `±HHMM` or `±HH:MM`, optionally after a space) into microseconds since the epoch. A time
/// without a zone is refused: it would depend on the server's setting.
pub fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    let fail = || format!("{text:?} is not a timestamp like 2026-11-23 06:15:00.5+00");
    let t = text.trim();
    // Seconds are required (ISO 8601 would let them out).
    let b = t.as_bytes();
    if b.len() < 19 || !matches!(b[10], b'T' | b' ') || b[13] != b':' || b[16] != b':' {
        bail!(fail());
    }
    let (clock, zone) = t.split_at(19);
    let zone = zone.trim_start();
    let (fraction, zone) = match zone.strip_prefix('.') {
        Some(f) => {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            (&zone[..n + 1], f[n..].trim_start())
        }
        None => ("", zone),
    };
    let zone = match zone {
        "Z" | "z" | "UTC" | "utc" | "GMT" => "Z",
        "" => bail!("{text:?} has no time zone; add one (Z or +00)"),
        other => other,
    };
    let parsed: Timestamp = format!("{clock}{fraction}{zone}")
        .parse()
        .with_context(fail)?;
    Ok(parsed.as_microsecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = 1_795_414_500_123_456;
        assert_eq!(rfc3339(t), "2026-11-23T06:15:00.123456Z");
        assert_eq!(id_stamp(t), "20261123T061500Z");
        assert_eq!(parse_timestamp(&rfc3339(t)).unwrap(), t);
        assert_eq!(parse_timestamp("2026-11-23 06:15:00.123456+00").unwrap(), t);
        assert_eq!(
            parse_timestamp("2026-11-23 08:15:00.123456+02:00").unwrap(),
            t
        );
        assert_eq!(
            parse_timestamp("2026-11-23 01:15:00.123456 -0500").unwrap(),
            t
        );
        assert_eq!(
            parse_timestamp("2026-11-23T06:15:00Z").unwrap(),
            t - 123_456
        );
        assert_eq!(parse_timestamp("1970-01-01 00:00:00 UTC").unwrap(), 0);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert!(parse_timestamp("2026-11-23 06:15:00")
            .unwrap_err()
            .to_string()
            .contains("no time zone"));
        for bad in ["yesterday", "2026-13-01 00:00:00Z", "2026-11-23 06:15Z"] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }
}
