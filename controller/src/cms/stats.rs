//! The fleet summary of `GET /v1/stats`: read from the CMS in one pass of small queries.

use toygres_common::stats_api::{FleetStats, MemberLag};

use super::{get, Cms, CmsError};

/// How many of the largest lags the summary lists.
const LARGEST_LAGS: i64 = 5;

impl Cms {
    /// The live instances by health, the changes of primary and the backups of the last 24
    /// hours, and the largest standby lags.
    pub async fn fleet_stats(&self) -> Result<FleetStats, CmsError> {
        let what = "read the fleet's stats";
        let failovers = self
            .query(
                what,
                "SELECT count(*) FROM toygres.events
                  WHERE kind = 'primary-changed' AND at > now() - interval '24 hours'",
                &[],
            )
            .await?;
        let backups = self
            .query(
                what,
                "SELECT status, count(*) FROM toygres.backups
                  WHERE status <> 'running' AND finished_at > now() - interval '24 hours'
                  GROUP BY status ORDER BY status",
                &[],
            )
            .await?;
        let lags = self
            .query(
                what,
                "SELECT m.instance, m.name, m.lag_bytes FROM toygres.members m
                   JOIN toygres.instances i ON i.name = m.instance
                  WHERE i.state NOT IN ('deleting', 'deleted') AND m.role = 'standby'
                    AND m.lag_bytes IS NOT NULL
                  ORDER BY m.lag_bytes DESC, m.name LIMIT $1",
                &[&LARGEST_LAGS],
            )
            .await?;
        Ok(FleetStats {
            instances_by_health: self.count_instances_by_health().await?,
            failovers_24h: match failovers.first() {
                Some(row) => get(row, 0, what)?,
                None => 0,
            },
            backups_24h: backups
                .iter()
                .map(|row| Ok((get(row, 0, what)?, get(row, 1, what)?)))
                .collect::<Result<_, CmsError>>()?,
            largest_lags: lags
                .iter()
                .map(|row| {
                    Ok(MemberLag {
                        instance: get(row, 0, what)?,
                        member: get(row, 1, what)?,
                        lag_bytes: get(row, 2, what)?,
                    })
                })
                .collect::<Result<_, CmsError>>()?,
        })
    }
}
