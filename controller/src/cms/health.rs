//! The health tables of the CMS, written in batches (issue 17): a round's (or a whole fast-path
//! pass's) member health, check history and instance health in three statements whatever the
//! number of members, the last-check time of quiet instances in one, and the check history
//! pruned by count and age by a periodic sweep instead of after every insert.

use std::time::Duration;

use toygres_common::domain::{InstanceHealth, MemberHealth, Role};

use super::{Cms, CmsError};

/// How many health checks are kept per member (the sweep may leave a minute's more).
pub const HEALTH_HISTORY_PER_MEMBER: i64 = 100;
/// How long a health check is kept.
pub const HEALTH_HISTORY_MAX_AGE: Duration = Duration::from_secs(3600);

/// One probe of one member, as the CMS keeps it.
#[derive(Debug, Clone)]
pub struct MemberCheck {
    pub instance: String,
    pub member: String,
    pub healthy: bool,
    pub role: Option<Role>,
    pub timeline: Option<i64>,
    pub lsn: Option<String>,
    pub lag_bytes: Option<i64>,
    pub sync_state: Option<String>,
    pub error: Option<String>,
    pub latency_ms: f64,
    pub details: serde_json::Value,
}

impl Cms {
    /// Records probes of members (their current health, one history row each) and instances'
    /// overall health, in three statements.
    pub async fn record_health_batch(
        &self,
        checks: &[MemberCheck],
        instances: &[(String, InstanceHealth)],
    ) -> Result<(), CmsError> {
        if !checks.is_empty() {
            let column = |f: fn(&MemberCheck) -> Option<String>| -> Vec<Option<String>> {
                checks.iter().map(f).collect()
            };
            let instance = column(|c| Some(c.instance.clone()));
            let member = column(|c| Some(c.member.clone()));
            let health = column(|c| Some(MemberHealth::of_probe(c.healthy).as_str().to_string()));
            let role = column(|c| c.role.map(|r| r.as_str().to_string()));
            let lsn = column(|c| c.lsn.clone());
            let sync_state = column(|c| c.sync_state.clone());
            let error = column(|c| c.error.clone());
            let timeline: Vec<Option<i64>> = checks.iter().map(|c| c.timeline).collect();
            let lag: Vec<Option<i64>> = checks.iter().map(|c| c.lag_bytes).collect();
            self.execute(
                "record members' health",
                "UPDATE toygres.members m
                    SET health = p.health,
                        -- A probe may not name a second primary (a fenced former primary
                        -- still reports its role): only a failover or switchover moves it.
                        role = CASE WHEN p.role = 'primary' AND m.role <> 'primary' THEN m.role
                                    WHEN p.role = 'standby' AND m.role = 'primary' THEN m.role
                                    ELSE coalesce(p.role, m.role) END,
                        timeline = coalesce(p.timeline, m.timeline),
                        lsn = coalesce(p.lsn, m.lsn), lag_bytes = p.lag_bytes,
                        sync_state = p.sync_state, last_error = p.error, last_check_at = now()
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[],
                               $6::text[], $7::int8[], $8::text[], $9::text[])
                        AS p(instance, name, health, role, timeline, lsn, lag_bytes,
                             sync_state, error)
                  WHERE m.instance = p.instance AND m.name = p.name",
                &[
                    &instance,
                    &member,
                    &health,
                    &role,
                    &timeline,
                    &lsn,
                    &lag,
                    &sync_state,
                    &error,
                ],
            )
            .await?;
            let ok: Vec<bool> = checks.iter().map(|c| c.healthy).collect();
            let latency: Vec<f64> = checks.iter().map(|c| c.latency_ms.max(0.0)).collect();
            let details: Vec<serde_json::Value> =
                checks.iter().map(|c| c.details.clone()).collect();
            self.execute(
                "record health checks",
                "INSERT INTO toygres.health_checks (instance, member, ok, latency_ms, details)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::float8[],
                                      $5::jsonb[])",
                &[&instance, &member, &ok, &latency, &details],
            )
            .await?;
        }
        if !instances.is_empty() {
            let names: Vec<&str> = instances.iter().map(|(n, _)| n.as_str()).collect();
            let health: Vec<&str> = instances.iter().map(|(_, h)| h.as_str()).collect();
            self.execute(
                "record instances' health",
                "UPDATE toygres.instances i SET health = p.health, last_check_at = now()
                   FROM unnest($1::text[], $2::text[]) AS p(name, health)
                  WHERE i.name = p.name",
                &[&names, &health],
            )
            .await?;
        }
        Ok(())
    }

    /// Marks the instances (and their members) as checked just now, their recorded health
    /// unchanged: what a quiet fast-path pass writes between two full records.
    pub async fn touch_last_check(&self, instances: &[String]) -> Result<(), CmsError> {
        if instances.is_empty() {
            return Ok(());
        }
        self.execute(
            "record the time of a check",
            "WITH touched AS (
                UPDATE toygres.instances SET last_check_at = now() WHERE name = ANY($1)
             )
             UPDATE toygres.members SET last_check_at = now() WHERE instance = ANY($1)",
            &[&instances],
        )
        .await?;
        Ok(())
    }

    /// Drops the health checks beyond [`HEALTH_HISTORY_PER_MEMBER`] per member and those older
    /// than `max_age`; returns how many went.
    pub async fn prune_health_history(&self, max_age: Duration) -> Result<u64, CmsError> {
        let age_secs = max_age.as_secs_f64();
        let old = self
            .execute(
                "prune old health checks",
                "DELETE FROM toygres.health_checks
                  WHERE at < now() - make_interval(secs => $1)",
                &[&age_secs],
            )
            .await?;
        let beyond = self
            .execute(
                "prune the health-check history",
                "DELETE FROM toygres.health_checks h USING (
                    SELECT id FROM (
                        SELECT id, row_number() OVER (PARTITION BY instance, member
                                                      ORDER BY id DESC) AS n
                          FROM toygres.health_checks
                    ) ranked WHERE n > $1
                 ) extra WHERE h.id = extra.id",
                &[&HEALTH_HISTORY_PER_MEMBER],
            )
            .await?;
        Ok(old + beyond)
    }
}
