//! Names of the files Postgres archives and restores: WAL segments (`TTTTTTTTXXXXXXXXYYYYYYYY`),
//! timeline history files (`TTTTTTTT.history`), partial segments left by a promotion
//! (`….partial`) and backup history files (`….XXXXXXXX.backup`). Anything else is refused, so a
//! stray argument can never become an odd object key.

use anyhow::bail;

/// The default (and initdb's) WAL segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// What kind of file a WAL archive name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFileKind {
    /// A complete WAL segment.
    Segment { timeline: u32, log: u32, seg: u32 },
    /// A timeline history file.
    History,
    /// The last, incomplete segment of an old timeline, archived at promotion.
    Partial,
    /// A backup history file.
    Backup,
}

/// A validated WAL archive file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFileName {
    name: String,
    kind: WalFileKind,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn hex32(s: &str) -> u32 {
    u32::from_str_radix(s, 16).unwrap_or(0)
}

impl WalFileName {
    /// Checks that `name` is a file name Postgres archives.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        let kind = if is_hex(name, 24) {
            WalFileKind::Segment {
                timeline: hex32(&name[0..8]),
                log: hex32(&name[8..16]),
                seg: hex32(&name[16..24]),
            }
        } else if let Some(tli) = name.strip_suffix(".history") {
            if !is_hex(tli, 8) {
                bail!("{name:?} is not a WAL file name");
            }
            WalFileKind::History
        } else if let Some(seg) = name.strip_suffix(".partial") {
            if !is_hex(seg, 24) {
                bail!("{name:?} is not a WAL file name");
            }
            WalFileKind::Partial
        } else if let Some(rest) = name.strip_suffix(".backup") {
            match rest.split_once('.') {
                Some((seg, offset)) if is_hex(seg, 24) && is_hex(offset, 8) => WalFileKind::Backup,
                _ => bail!("{name:?} is not a WAL file name"),
            }
        } else {
            bail!(
                "{name:?} is not a WAL file name (a segment, .history, .partial or .backup file)"
            );
        };
        Ok(Self {
            name: name.to_string(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> WalFileKind {
        self.kind
    }

    /// The names of the `n` segments after this one on the same timeline (empty unless this is a
    /// segment).
    pub fn following_segments(&self, segment_size: u64, n: usize) -> Vec<String> {
        let WalFileKind::Segment { timeline, log, seg } = self.kind else {
            return Vec::new();
        };
        let per_log = (0x1_0000_0000u64 / segment_size.max(1)).max(1);
        let mut number = u64::from(log) * per_log + u64::from(seg);
        (0..n)
            .map(|_| {
                number += 1;
                format!(
                    "{timeline:08X}{:08X}{:08X}",
                    number / per_log,
                    number % per_log
                )
            })
            .collect()
    }

    /// Whether this segment comes before `other` on the same timeline, or lies on another
    /// timeline (either way it is no longer ahead of replay).
    pub fn is_behind(&self, other: &WalFileName) -> bool {
        match (self.kind, other.kind) {
            (
                WalFileKind::Segment {
                    timeline: t1,
                    log: l1,
                    seg: s1,
                },
                WalFileKind::Segment {
                    timeline: t2,
                    log: l2,
                    seg: s2,
                },
            ) => t1 != t2 || (l1, s1) < (l2, s2),
            _ => false,
        }
    }
}

impl std::fmt::Display for WalFileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_recognised_and_others_refused() {
        let seg = WalFileName::parse("000000010000000A000000FF").unwrap();
        assert_eq!(
            seg.kind(),
            WalFileKind::Segment {
                timeline: 1,
                log: 10,
                seg: 255
            }
        );
        assert_eq!(
            WalFileName::parse("00000002.history").unwrap().kind(),
            WalFileKind::History
        );
        assert_eq!(
            WalFileName::parse("000000010000000000000003.partial")
                .unwrap()
                .kind(),
            WalFileKind::Partial
        );
        assert_eq!(
            WalFileName::parse("000000010000000000000002.00000028.backup")
                .unwrap()
                .kind(),
            WalFileKind::Backup
        );
        for bad in [
            "",
            "RECOVERYXLOG",
            "000000010000000a000000ff",
            "00000001000000000000000",
            "../00000001000000000000000",
            "0000000X.history",
            "000000010000000000000002.backup",
            "000000010000000000000001/x",
        ] {
            let err = WalFileName::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a WAL file name"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn following_segments_wrap_into_the_next_log_file() {
        let seg = WalFileName::parse("0000000300000001000000FE").unwrap();
        assert_eq!(
            seg.following_segments(DEFAULT_SEGMENT_SIZE, 3),
            vec![
                "0000000300000001000000FF",
                "000000030000000200000000",
                "000000030000000200000001"
            ]
        );
        // 1 GiB segments: four per log file.
        let big = WalFileName::parse("000000010000000000000003").unwrap();
        assert_eq!(
            big.following_segments(1 << 30, 1),
            vec!["000000010000000100000000"]
        );
        assert!(WalFileName::parse("00000002.history")
            .unwrap()
            .following_segments(DEFAULT_SEGMENT_SIZE, 3)
            .is_empty());
    }

    #[test]
    fn older_segments_and_other_timelines_are_behind() {
        let p = |s| WalFileName::parse(s).unwrap();
        let current = p("000000020000000000000010");
        assert!(p("00000002000000000000000F").is_behind(&current));
        assert!(p("000000010000000000000011").is_behind(&current));
        assert!(!p("000000020000000000000011").is_behind(&current));
        assert!(!p("000000020000000000000010").is_behind(&current));
    }
}
