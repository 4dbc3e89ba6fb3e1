//! Pushed detection: what a sidecar tells the controller the moment something happens to its
//! member (its Postgres died, its WAL receiver lost the primary, it fenced itself, the
//! controller went silent), and the controller's answer (check now; you were superseded).
//!
//! The sidecar authenticates with a *report token* derived from the instance's sidecar token
//! and the member's name ([`report_token`], HMAC-SHA256): the controller derives the same from
//! the token it already holds, so no new secret is stored or handed out, the sidecar never sends
//! the token that commands sidecars, and one member's report token does not speak for another.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sidecar_api::Role;

/// What happened to the member.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    /// Its Postgres exited unexpectedly.
    PostgresDied,
    /// A standby's WAL receiver stopped streaming or heard nothing for a while.
    PrimaryLost,
    /// It fenced itself (isolation lease).
    Fenced,
    /// A primary has not heard from the controller for a while (asks whether it still is one).
    ControllerSilent,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::PostgresDied => "postgres-died",
            ReportKind::PrimaryLost => "primary-lost",
            ReportKind::Fenced => "fenced",
            ReportKind::ControllerSilent => "controller-silent",
        }
    }
}

/// `POST /v1/instances/{name}/members/{member}/report`, sent by the member's sidecar.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    pub kind: ReportKind,
    /// A line for the events log (no secrets: the sidecar writes what its log says).
    #[serde(default)]
    pub detail: String,
    /// What the member believes it is, and on which timeline.
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub timeline: Option<u32>,
}

/// The controller's answer to a report.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAnswer {
    /// The instance's actor was asked to check now (`false`: one was asked just before).
    pub checking: bool,
    /// The member the controller records as the primary.
    pub primary: Option<String>,
    /// The reporting member believes it is the primary, but another member was promoted on a
    /// newer timeline: it must fence itself.
    pub superseded: bool,
}

/// The longest `detail` the controller keeps.
pub const MAX_DETAIL: usize = 500;

/// Whether `member`, reporting `role` on `timeline`, was superseded by `recorded_primary`
/// (recorded on `primary_timeline`): it calls itself a primary, another member is the recorded
/// primary, and that one's timeline is newer. Without both timelines nothing is decided.
pub fn superseded(
    member: &str,
    role: Option<Role>,
    timeline: Option<u32>,
    recorded_primary: Option<&str>,
    primary_timeline: Option<u32>,
) -> bool {
    match (role, timeline, recorded_primary, primary_timeline) {
        (Some(Role::Primary), Some(mine), Some(primary), Some(theirs)) => {
            primary != member && theirs > mine
        }
        _ => false,
    }
}

/// The bearer token `member`'s sidecar reports with: HMAC-SHA256 of the member's name under the
/// instance's sidecar token, in hex.
pub fn report_token(sidecar_token: &str, member: &str) -> String {
    let message = format!("toygres-member-report:{member}");
    hmac_sha256(sidecar_token.trim().as_bytes(), message.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// HMAC (RFC 2104) with SHA-256.
fn hmac_sha256(secret: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut key = [0u8; BLOCK];
    if secret.len() > BLOCK {
        key[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_token_is_an_hmac_bound_to_the_member() {
        // RFC 4231, test cases 2 and 6 (a key longer than the block).
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let a = report_token("0123456789abcdef0123", "db-0");
        assert_eq!(a.len(), 64);
        assert_eq!(a, report_token("0123456789abcdef0123\n", "db-0"));
        assert_ne!(a, report_token("0123456789abcdef0123", "db-1"));
        assert_ne!(a, report_token("0123456789abcdef0124", "db-0"));
        assert!(!a.contains("0123456789abcdef0123"));
    }

    #[test]
    fn only_a_primary_behind_a_newer_timeline_is_superseded() {
        let p = Some(Role::Primary);
        assert!(superseded("db-0", p, Some(1), Some("db-1"), Some(2)));
        // Same timeline (a record not yet refreshed), itself, unknown timelines: no.
        assert!(!superseded("db-0", p, Some(2), Some("db-1"), Some(2)));
        assert!(!superseded("db-0", p, Some(1), Some("db-0"), Some(2)));
        assert!(!superseded("db-0", p, None, Some("db-1"), Some(2)));
        assert!(!superseded("db-0", p, Some(1), Some("db-1"), None));
        assert!(!superseded("db-0", p, Some(1), None, Some(2)));
        // A standby is never told to fence.
        assert!(!superseded(
            "db-0",
            Some(Role::Standby),
            Some(1),
            Some("db-1"),
            Some(2)
        ));
    }
}
