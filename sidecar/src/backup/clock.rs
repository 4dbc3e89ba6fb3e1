//! Wall-clock times as backups record them: microseconds since the Unix epoch, written as
//! RFC 3339 in UTC, and read back from RFC 3339 or Postgres's timestamptz text.

use anyhow::{bail, Context};

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(micros: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (y, m, d, sod / 3600, sod % 3600 / 60, sod % 60, frac)
}

/// `2026-11-23T06:15:00.123456Z`.
pub fn rfc3339(micros: i64) -> String {
    let (y, m, d, h, mi, s, frac) = split(micros);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:06}Z")
}

/// `20261123T061500Z`: the stem of a backup id.
pub fn id_stamp(micros: i64) -> String {
    let (y, m, d, h, mi, s, _) = split(micros);
    format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

fn digits(s: &str, what: &str) -> anyhow::Result<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        bail!("expected the {what} as digits, found {s:?}");
    }
    s.parse().with_context(|| format!("read the {what}"))
}

/// Reads `YYYY-MM-DD[T ]HH:MM:SS[.ffffff]` followed by a time zone (`Z`, `UTC`, `±HH`,
/// `±HHMM` or `±HH:MM`, optionally after a space) into microseconds since the epoch. A time
/// without a zone is refused: it would depend on the server's setting.
pub fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    let fail = || format!("{text:?} is not a timestamp like 2026-11-23 06:15:00.5+00");
    let t = text.trim();
    if t.len() < 19 {
        bail!(fail());
    }
    let (date, rest) = t.split_at(10);
    let mut parts = date.split('-');
    let (y, m, d) = match (parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d)) => (
            digits(y, "year").with_context(fail)?,
            digits(m, "month").with_context(fail)?,
            digits(d, "day").with_context(fail)?,
        ),
        _ => bail!(fail()),
    };
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix(' '))
        .with_context(fail)?;
    if rest.len() < 8 || &rest[2..3] != ":" || &rest[5..6] != ":" {
        bail!(fail());
    }
    let h = digits(&rest[0..2], "hour").with_context(fail)?;
    let mi = digits(&rest[3..5], "minute").with_context(fail)?;
    let s = digits(&rest[6..8], "second").with_context(fail)?;
    let mut rest = &rest[8..];
    let mut frac = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            bail!(fail());
        }
        let mut digits6 = f[..n.min(6)].to_string();
        while digits6.len() < 6 {
            digits6.push('0');
        }
        frac = digits6.parse().with_context(fail)?;
        rest = &f[n..];
    }
    let zone = rest.trim_start();
    let offset_secs = match zone {
        "Z" | "z" | "UTC" | "utc" | "GMT" => 0,
        "" => bail!("{text:?} has no time zone; add one (Z or +00)"),
        _ => {
            let sign = match &zone[..1] {
                "+" => 1,
                "-" => -1,
                _ => bail!(fail()),
            };
            let z = zone[1..].replace(':', "");
            let (zh, zm) = match z.len() {
                2 => (digits(&z, "zone hours")?, 0),
                4 => (
                    digits(&z[..2], "zone hours")?,
                    digits(&z[2..], "zone minutes")?,
                ),
                _ => bail!(fail()),
            };
            sign * (zh * 3600 + zm * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        bail!(fail());
    }
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    Ok(secs * 1_000_000 + frac)
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
