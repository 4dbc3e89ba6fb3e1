//! Whether the standbys' word holds back an automatic failover, pure (no duroxide, no I/O).
//!
//! A primary that failed its checks may only be cut off from the controller: a standby that
//! still receives from it says it lives. But a frozen or hung primary keeps its replication
//! connections open, and a standby's WAL receiver reports "streaming" until its
//! `wal_receiver_timeout` ends the stream. So only *fresh* evidence counts: a standby vetoes the
//! failover only if its last message from the primary (`pg_stat_wal_receiver`'s
//! `last_msg_receipt_time`, kept fresh by the primary's keepalives) is younger than the
//! instance's window. A standby that cannot be asked, or cannot say when it last heard, does
//! not veto.

use toygres_common::names::PgAddress;

use crate::activities::ha::MemberSurvey;

/// What the standbys said about a primary that failed its checks.
#[derive(Debug, Clone, PartialEq)]
pub struct StandbyEvidence {
    /// The standby that heard from the primary within the window, and how long ago (ms):
    /// it vetoes the failover.
    pub witness: Option<(String, u64)>,
    /// One clause per standby, for the event that says which evidence decided.
    pub summary: String,
}

/// Reads the surveys of the standbys of the primary at `primary_address`: the freshest
/// standby that heard from it within `window_ms` is the witness.
pub fn weigh_standbys(
    surveys: &[MemberSurvey],
    primary_address: Option<&PgAddress>,
    window_ms: u64,
) -> StandbyEvidence {
    let mut witness: Option<(String, u64)> = None;
    let mut clauses = Vec::new();
    for survey in surveys {
        let name = &survey.member;
        let follows = primary_address.is_some() && survey.upstream.as_ref() == primary_address;
        let age_ms = survey
            .primary_last_contact_seconds
            .map(|s| (s.max(0.0) * 1000.0).round() as u64);
        let clause = if !survey.reachable {
            format!(
                "{name} did not answer ({})",
                survey.error.as_deref().unwrap_or("unreachable")
            )
        } else if !follows {
            format!("{name} does not follow it")
        } else if !survey.streaming {
            format!("{name} does not stream from it")
        } else {
            match age_ms {
                None => format!("{name} streams but cannot say when it last heard from it"),
                Some(age) if age <= window_ms => {
                    if witness.as_ref().is_none_or(|(_, best)| age < *best) {
                        witness = Some((name.clone(), age));
                    }
                    format!("{name} heard from it {age} ms ago")
                }
                Some(age) => format!("{name} last heard from it {age} ms ago (stale)"),
            }
        };
        clauses.push(clause);
    }
    let summary = if clauses.is_empty() {
        "no standby to ask".to_string()
    } else {
        clauses.join("; ")
    };
    StandbyEvidence { witness, summary }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn address(port: u16) -> PgAddress {
        PgAddress {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn standby(name: &str, upstream: u16, streaming: bool, age_s: Option<f64>) -> MemberSurvey {
        MemberSurvey {
            member: name.into(),
            reachable: true,
            running: true,
            streaming,
            upstream: Some(address(upstream)),
            primary_last_contact_seconds: age_s,
            ..MemberSurvey::default()
        }
    }

    #[test]
    fn only_a_standby_that_heard_from_the_primary_within_the_window_vetoes() {
        let primary = address(5432);
        let cases: Vec<(&str, Vec<MemberSurvey>, Option<&str>)> = vec![
            (
                "fresh",
                vec![standby("db-1", 5432, true, Some(0.4))],
                Some("db-1"),
            ),
            ("stale", vec![standby("db-1", 5432, true, Some(4.0))], None),
            (
                "no receipt time",
                vec![standby("db-1", 5432, true, None)],
                None,
            ),
            (
                "not streaming",
                vec![standby("db-1", 5432, false, Some(0.1))],
                None,
            ),
            (
                "another upstream",
                vec![standby("db-1", 6000, true, Some(0.1))],
                None,
            ),
            (
                "unreachable",
                vec![MemberSurvey {
                    member: "db-1".into(),
                    error: Some("no answer within 500ms".into()),
                    ..MemberSurvey::default()
                }],
                None,
            ),
            (
                "the freshest of two",
                vec![
                    standby("db-1", 5432, true, Some(1.5)),
                    standby("db-2", 5432, true, Some(0.2)),
                ],
                Some("db-2"),
            ),
            ("nobody", vec![], None),
        ];
        for (case, surveys, expected) in cases {
            let evidence = weigh_standbys(&surveys, Some(&primary), 2_000);
            assert_eq!(
                evidence.witness.as_ref().map(|(m, _)| m.as_str()),
                expected,
                "{case}: {}",
                evidence.summary
            );
        }
    }

    #[test]
    fn the_summary_says_what_each_standby_said() {
        let primary = address(5432);
        let surveys = vec![
            standby("db-1", 5432, true, Some(3.0)),
            MemberSurvey {
                member: "db-2".into(),
                error: Some("no answer within 500ms".into()),
                ..MemberSurvey::default()
            },
        ];
        let evidence = weigh_standbys(&surveys, Some(&primary), 2_000);
        assert_eq!(
            evidence.summary,
            "db-1 last heard from it 3000 ms ago (stale); db-2 did not answer (no answer within \
             500ms)"
        );
        assert!(weigh_standbys(&surveys, None, 2_000).witness.is_none());
    }
}
