//! The simulated members of `toygres-sidecar fleet`: what each one is (role, timeline, WAL
//! position, whom it follows, fenced or killed) and the answers a real sidecar would give for it.
//! Pure and synchronous: the routes lock the fleet, ask, and answer.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use toygres_common::names::PgAddress;
use toygres_common::sidecar_api::{
    format_lsn, DiskStatus, PromoteResponse, ReplicationRequest, Role, StandbyStatus, Status,
    SyncMethod, SyncPolicy,
};

/// WAL a simulated primary writes per second (a light, steady load).
const WAL_BYTES_PER_SEC: u64 = 64 * 1024;
/// Where a new instance's WAL starts (`0/3000000`, as after initdb).
const FIRST_LSN: u64 = 0x300_0000;

/// How a simulated member starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum SimBootstrap {
    /// A new primary.
    Init,
    /// A standby of the member at `primary`.
    Standby { primary: PgAddress },
}

/// `POST /fleet/members`: a member to simulate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub instance: String,
    pub member: String,
    /// The Postgres address it claims (nothing listens there).
    pub pg: PgAddress,
    pub bootstrap: SimBootstrap,
    /// The file holding the instance's sidecar token, which its API requires.
    pub token_file: String,
}

/// A simulated member as `GET /fleet/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub instance: String,
    pub member: String,
    pub pg: PgAddress,
    /// `running`, `fenced` or `killed`.
    pub state: String,
}

/// One simulated member.
#[derive(Debug, Clone)]
pub struct SimMember {
    pub instance: String,
    pub name: String,
    pub pg: PgAddress,
    pub token: String,
    role: Role,
    fenced: bool,
    /// Its sidecar is gone: every request fails as if the connection were refused.
    pub killed: bool,
    timeline: u32,
    /// Primary: the position at `since`; standby: the last position replayed.
    lsn: u64,
    since: Instant,
    /// Standby: the member it follows.
    following: Option<String>,
    /// Standby: when it last heard from its primary.
    last_contact: Option<Instant>,
    sync: Option<SyncPolicy>,
    sync_names: String,
    system_identifier: String,
}

/// Every simulated member, by name.
#[derive(Debug, Default)]
pub struct Fleet {
    pub members: BTreeMap<String, SimMember>,
}

/// A refusal, as the real sidecar words it: `409 conflict`, `400 invalid_request` or
/// `503 unavailable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Conflict(String),
    Invalid(String),
}

impl Fleet {
    /// Adds a member (idempotent: an existing one is left as it is, and a killed one starts
    /// again, as `create_member` does after `kill_member`).
    pub fn register(&mut self, request: Register, token: String) -> Result<(), Refusal> {
        if let Some(existing) = self.members.get_mut(&request.member) {
            existing.killed = false;
            existing.token = token;
            return Ok(());
        }
        let now = Instant::now();
        let (role, following, timeline, lsn, system_identifier) = match &request.bootstrap {
            SimBootstrap::Init => (
                Role::Primary,
                None,
                1,
                FIRST_LSN,
                format!(
                    "{}",
                    7_000_000_000_000_000_000u64 + self.members.len() as u64
                ),
            ),
            SimBootstrap::Standby { primary } => {
                let upstream = self.by_pg(primary).ok_or_else(|| {
                    Refusal::Invalid(format!("no simulated member listens at {primary}"))
                })?;
                let upstream = &self.members[&upstream];
                (
                    Role::Standby,
                    Some(upstream.name.clone()),
                    upstream.timeline,
                    upstream.position(now),
                    upstream.system_identifier.clone(),
                )
            }
        };
        self.members.insert(
            request.member.clone(),
            SimMember {
                instance: request.instance,
                name: request.member,
                pg: request.pg,
                token,
                role,
                fenced: false,
                killed: false,
                timeline,
                lsn,
                since: now,
                following,
                last_contact: None,
                sync: None,
                sync_names: String::new(),
                system_identifier,
            },
        );
        Ok(())
    }

    /// The member listening at `pg`.
    pub fn by_pg(&self, pg: &PgAddress) -> Option<String> {
        self.members
            .values()
            .find(|m| m.pg == *pg)
            .map(|m| m.name.clone())
    }

    /// The members of `instance` (all of them when `None`), for the platform.
    pub fn list(&self, instance: Option<&str>) -> Vec<Listed> {
        self.members
            .values()
            .filter(|m| instance.is_none_or(|i| m.instance == i))
            .map(|m| Listed {
                instance: m.instance.clone(),
                member: m.name.clone(),
                pg: m.pg.clone(),
                state: if m.killed {
                    "killed"
                } else if m.fenced {
                    "fenced"
                } else {
                    "running"
                }
                .into(),
            })
            .collect()
    }

    /// Whether `member` serves as a primary others can stream from.
    fn serves_primary(&self, member: &str) -> bool {
        self.members
            .get(member)
            .is_some_and(|m| !m.killed && !m.fenced && m.role == Role::Primary)
    }

    /// Brings every standby's replay up to its primary's position (streaming is instant here)
    /// and notes the contact; a standby whose primary is gone keeps what it had.
    pub fn stream(&mut self) {
        let now = Instant::now();
        let positions: BTreeMap<String, (u64, u32)> = self
            .members
            .values()
            .filter(|m| self.serves_primary(&m.name))
            .map(|m| (m.name.clone(), (m.position(now), m.timeline)))
            .collect();
        for member in self.members.values_mut() {
            if member.killed || member.fenced || member.role != Role::Standby {
                continue;
            }
            let upstream = member.following.as_ref().and_then(|p| positions.get(p));
            if let Some((lsn, timeline)) = upstream {
                member.lsn = member.lsn.max(*lsn);
                member.timeline = *timeline;
                member.last_contact = Some(now);
            }
        }
    }

    /// `GET /v1/status` of `member`.
    pub fn status(&mut self, member: &str) -> Option<Status> {
        self.stream();
        let now = Instant::now();
        let m = self.members.get(member)?;
        let running = !m.fenced;
        let streaming = m.role == Role::Standby
            && running
            && m.following
                .as_deref()
                .is_some_and(|p| self.serves_primary(p));
        let standbys = if m.role == Role::Primary && running {
            self.standbys_of(m, now)
        } else {
            Vec::new()
        };
        let upstream = m
            .following
            .as_ref()
            .and_then(|p| self.members.get(p))
            .map(|p| p.pg.clone());
        let standby = m.role == Role::Standby;
        Some(Status {
            member: m.name.clone(),
            role: m.role,
            running,
            fenced: m.fenced,
            pid: running.then_some(4242),
            // A stopped server answers none of what is asked of Postgres itself.
            timeline: running.then_some(m.timeline),
            system_identifier: running.then(|| m.system_identifier.clone()),
            current_lsn: (running && !standby).then(|| format_lsn(m.position(now))),
            receive_lsn: (running && standby).then(|| format_lsn(m.lsn)),
            replay_lsn: (running && standby).then(|| format_lsn(m.lsn)),
            wal_receiver_status: streaming.then(|| "streaming".to_string()),
            primary: if standby { upstream } else { None },
            lag_bytes: (running && standby).then_some(0),
            lag_seconds: (running && standby).then_some(0.0),
            standbys,
            synchronous_standby_names: running.then(|| m.sync_names.clone()),
            synchronous_commit: running.then(|| "on".into()),
            pending_restart: Vec::new(),
            postgres_restarts: 0,
            server_version: running.then(|| "15.18 (simulated)".into()),
            primary_last_contact_seconds: if streaming {
                m.last_contact.map(|t| now.duration_since(t).as_secs_f64())
            } else {
                None
            },
            sync_policy: m.sync.clone(),
            sync_degraded: false,
            archive: None,
            disk: Some(DiskStatus {
                total_bytes: 100 << 30,
                available_bytes: 60 << 30,
            }),
        })
    }

    /// The standbys streaming from `primary`, with their sync states.
    fn standbys_of(&self, primary: &SimMember, now: Instant) -> Vec<StandbyStatus> {
        let position = format_lsn(primary.position(now));
        let mut ranked = 0;
        self.members
            .values()
            .filter(|s| {
                !s.killed
                    && !s.fenced
                    && s.role == Role::Standby
                    && s.following.as_deref() == Some(&primary.name)
            })
            .map(|s| {
                let sync_state = match &primary.sync {
                    Some(policy) if policy.standbys.contains(&s.name) => match policy.method {
                        SyncMethod::Any => "quorum",
                        SyncMethod::First => {
                            ranked += 1;
                            if ranked <= policy.num_sync {
                                "sync"
                            } else {
                                "potential"
                            }
                        }
                    },
                    _ => "async",
                };
                StandbyStatus {
                    application_name: s.name.clone(),
                    client_addr: Some("127.0.0.1".into()),
                    state: "streaming".into(),
                    sync_state: sync_state.into(),
                    sent_lsn: Some(position.clone()),
                    flush_lsn: Some(position.clone()),
                    replay_lsn: Some(position.clone()),
                    lag_bytes: Some(0),
                    replay_lag_seconds: None,
                }
            })
            .collect()
    }

    /// `POST /v1/promote`: a standby becomes a primary on a new timeline.
    pub fn promote(
        &mut self,
        member: &str,
        force: bool,
        sync: Option<SyncPolicy>,
    ) -> Result<PromoteResponse, Refusal> {
        self.stream();
        let upstream_serves = {
            let m = self.get(member)?;
            if m.fenced {
                return Err(Refusal::Conflict("postgres is not running".into()));
            }
            if m.role == Role::Primary {
                return Err(Refusal::Conflict("this server is already a primary".into()));
            }
            m.following
                .as_deref()
                .is_some_and(|p| self.serves_primary(p))
        };
        if upstream_serves && !force {
            return Err(Refusal::Conflict(
                "this standby still streams from a primary that answers; promote with force".into(),
            ));
        }
        let next_timeline = self
            .members
            .values()
            .filter(|m| m.instance == self.members[member].instance)
            .map(|m| m.timeline)
            .max()
            .unwrap_or(1)
            + 1;
        let m = self.members.get_mut(member).expect("checked above");
        m.role = Role::Primary;
        m.timeline = next_timeline;
        m.following = None;
        m.last_contact = None;
        m.since = Instant::now();
        let sync_set = sync.is_some();
        m.sync = sync;
        Ok(PromoteResponse {
            timeline: m.timeline,
            lsn: format_lsn(m.lsn),
            duration_ms: 60,
            sync_set,
        })
    }

    /// `POST /v1/demote`: follow the primary at `primary` (a rewind when it was a primary).
    pub fn demote(&mut self, member: &str, primary: &PgAddress) -> Result<String, Refusal> {
        let upstream = self
            .by_pg(primary)
            .filter(|p| self.serves_primary(p))
            .ok_or_else(|| Refusal::Conflict(format!("{primary} is not a primary")))?;
        let m = self.get_mut(member)?;
        let method = if m.role == Role::Primary {
            "rewind"
        } else {
            "none"
        };
        m.role = Role::Standby;
        m.fenced = false;
        m.following = Some(upstream);
        m.sync = None;
        m.sync_names.clear();
        Ok(method.into())
    }

    /// `POST /v1/fence` (`true`) and `POST /v1/unfence` (`false`).
    pub fn set_fenced(&mut self, member: &str, fenced: bool) -> Result<String, Refusal> {
        let now = Instant::now();
        let m = self.get_mut(member)?;
        if fenced && !m.fenced && m.role == Role::Primary {
            // Its position stops where it was.
            m.lsn = m.position(now);
            m.since = now;
        }
        if !fenced && m.fenced {
            m.since = now;
        }
        m.fenced = fenced;
        Ok(if fenced {
            "postgres stopped and fenced".into()
        } else {
            "postgres started".into()
        })
    }

    /// `PUT /v1/replication`.
    pub fn set_replication(
        &mut self,
        member: &str,
        request: &ReplicationRequest,
    ) -> Result<String, Refusal> {
        let upstream = match &request.primary {
            Some(pg) => Some(
                self.by_pg(pg)
                    .filter(|p| self.serves_primary(p))
                    .ok_or_else(|| Refusal::Conflict(format!("{pg} is not a primary")))?,
            ),
            None => None,
        };
        let m = self.get_mut(member)?;
        if m.fenced {
            return Err(Refusal::Conflict("postgres is not running".into()));
        }
        if let Some(upstream) = upstream {
            if m.role != Role::Standby {
                return Err(Refusal::Conflict("only a standby follows a primary".into()));
            }
            m.following = Some(upstream);
        }
        if let Some(policy) = &request.sync {
            m.sync = Some(policy.clone());
            m.sync_names = sync_names(policy);
        } else if let Some(names) = &request.synchronous_standby_names {
            m.sync = None;
            m.sync_names = names.clone();
        }
        Ok("replication settings applied".into())
    }

    /// The member, or `404`-worthy absence.
    pub fn get(&self, member: &str) -> Result<&SimMember, Refusal> {
        self.members
            .get(member)
            .ok_or_else(|| Refusal::Invalid(format!("no simulated member {member}")))
    }

    fn get_mut(&mut self, member: &str) -> Result<&mut SimMember, Refusal> {
        self.members
            .get_mut(member)
            .ok_or_else(|| Refusal::Invalid(format!("no simulated member {member}")))
    }
}

impl SimMember {
    /// Whether it serves in `role` now.
    pub fn role_is(&self, role: Role) -> bool {
        self.role == role
    }

    /// A primary's WAL position now (it writes at a steady rate while it serves).
    fn position(&self, now: Instant) -> u64 {
        if self.role != Role::Primary || self.fenced || self.killed {
            return self.lsn;
        }
        let ms = u64::try_from(now.duration_since(self.since).as_millis()).unwrap_or(u64::MAX);
        self.lsn + ms.saturating_mul(WAL_BYTES_PER_SEC) / 1000
    }
}

/// `synchronous_standby_names` for a policy, as the sidecar writes it.
fn sync_names(policy: &SyncPolicy) -> String {
    if policy.standbys.is_empty() {
        return String::new();
    }
    let method = match policy.method {
        SyncMethod::First => "FIRST",
        SyncMethod::Any => "ANY",
    };
    let names: Vec<String> = policy.standbys.iter().map(|s| format!("\"{s}\"")).collect();
    format!("{method} {} ({})", policy.num_sync, names.join(", "))
}

/// The fleet, shared by the routes.
pub type SharedFleet = std::sync::Arc<std::sync::Mutex<Fleet>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(port: u16) -> PgAddress {
        PgAddress {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn pair() -> Fleet {
        let mut fleet = Fleet::default();
        for (member, port, bootstrap) in [
            ("db-0", 1, SimBootstrap::Init),
            ("db-1", 2, SimBootstrap::Standby { primary: pg(1) }),
        ] {
            let request = Register {
                instance: "db".into(),
                member: member.into(),
                pg: pg(port),
                bootstrap,
                token_file: String::new(),
            };
            fleet.register(request, "t".into()).unwrap();
        }
        fleet
    }

    #[test]
    fn a_standby_streams_from_its_primary() {
        let mut fleet = pair();
        let primary = fleet.status("db-0").unwrap();
        assert_eq!(primary.role, Role::Primary);
        assert_eq!(primary.standbys.len(), 1);
        assert_eq!(primary.standbys[0].application_name, "db-1");
        let standby = fleet.status("db-1").unwrap();
        assert_eq!(standby.wal_receiver_status.as_deref(), Some("streaming"));
        assert_eq!(standby.primary, Some(pg(1)));
        assert!(standby.primary_last_contact_seconds.is_some());
    }

    #[test]
    fn a_promoted_standby_is_a_primary_on_a_new_timeline() {
        let mut fleet = pair();
        // Refused while its primary serves, as the real sidecar refuses it.
        assert!(matches!(
            fleet.promote("db-1", false, None),
            Err(Refusal::Conflict(_))
        ));
        fleet.members.get_mut("db-0").unwrap().killed = true;
        let standby = fleet.status("db-1").unwrap();
        assert_eq!(standby.wal_receiver_status, None);
        assert_eq!(standby.primary_last_contact_seconds, None);
        let promoted = fleet.promote("db-1", false, None).unwrap();
        assert_eq!(promoted.timeline, 2);
        let status = fleet.status("db-1").unwrap();
        assert_eq!(status.role, Role::Primary);
        assert_eq!(status.timeline, Some(2));
        assert!(status.current_lsn.is_some());
        assert!(matches!(
            fleet.promote("db-1", false, None),
            Err(Refusal::Conflict(_))
        ));
    }

    #[test]
    fn a_fenced_former_primary_rejoins_as_a_standby() {
        let mut fleet = pair();
        fleet.set_fenced("db-0", true).unwrap();
        assert!(!fleet.status("db-0").unwrap().running);
        fleet.promote("db-1", false, None).unwrap();
        assert_eq!(fleet.demote("db-0", &pg(2)).unwrap(), "rewind");
        let rejoined = fleet.status("db-0").unwrap();
        assert_eq!(rejoined.role, Role::Standby);
        assert_eq!(rejoined.timeline, Some(2));
        let policy = SyncPolicy {
            mode: toygres_common::sidecar_api::SyncMode::Strict,
            method: SyncMethod::First,
            num_sync: 1,
            standbys: vec!["db-0".into()],
            degrade_timeout_secs: 10,
        };
        let request = ReplicationRequest {
            sync: Some(policy),
            ..ReplicationRequest::default()
        };
        fleet.set_replication("db-1", &request).unwrap();
        let primary = fleet.status("db-1").unwrap();
        assert_eq!(primary.standbys[0].sync_state, "sync");
        assert_eq!(
            primary.synchronous_standby_names.as_deref(),
            Some("FIRST 1 (\"db-0\")")
        );
    }
}
