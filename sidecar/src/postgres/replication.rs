//! `PUT /v1/replication`: synchronous replication settings on a primary, and the primary a
//! standby follows. Values are written to `toygres.conf`, checked by Postgres's own parser
//! (`pg_file_settings`) before they are kept, and applied with a reload. A synchronous
//! replication policy ([`super::sync`]) replaces `synchronous_standby_names` with a value the
//! sidecar computes and keeps up to date itself.

use toygres_common::sidecar_api::ReplicationRequest;

use super::files::{self, SYNCHRONOUS_COMMIT_VALUES};
use super::member::{Member, OpError};
use super::membership::check_member_address;
use super::{sql, sync};

impl Member {
    /// Applies a replication change; fields left out keep their value.
    pub async fn set_replication(&self, req: &ReplicationRequest) -> Result<String, OpError> {
        if req.synchronous_standby_names.is_none()
            && req.synchronous_commit.is_none()
            && req.primary.is_none()
            && req.sync.is_none()
        {
            return Err(OpError::invalid("invalid_request", "nothing to change"));
        }
        if req.sync.is_some() && req.synchronous_standby_names.is_some() {
            return Err(OpError::invalid(
                "invalid_request",
                "give either sync (a policy) or synchronous_standby_names, not both",
            ));
        }
        if let Some(policy) = &req.sync {
            sync::validate_policy(policy, &self.cfg.member_name)?;
        }
        if let Some(level) = &req.synchronous_commit {
            if !SYNCHRONOUS_COMMIT_VALUES.contains(&level.as_str()) {
                return Err(OpError::invalid(
                    "invalid_value",
                    format!(
                        "synchronous_commit must be one of {}, not {level:?}",
                        SYNCHRONOUS_COMMIT_VALUES.join(", ")
                    ),
                ));
            }
        }
        if let Some(names) = &req.synchronous_standby_names {
            if names.contains(['\0', '\n', '\r', '\'', '\\']) {
                return Err(OpError::invalid(
                    "invalid_value",
                    "synchronous_standby_names must be one line without quotes or backslashes",
                ));
            }
        }
        let mut ops = self.ops.lock().await;
        if ops.child.is_none() {
            return Err(OpError::Conflict("postgres is not running".into()));
        }
        let client = sql::connect_local(&self.cfg)
            .await
            .map_err(|e| OpError::Unavailable(format!("connect to postgres: {e}")))?;
        let standby = self.layout.is_standby();
        if let Some(primary) = &req.primary {
            check_member_address(&self.cfg, primary).await?;
            if !standby {
                return Err(OpError::Conflict(
                    "this server is a primary; use /v1/demote to make it follow another".into(),
                ));
            }
            let remote = sql::connect_remote(&self.cfg, primary).await.map_err(|e| {
                OpError::Unavailable(format!("connect to the new primary {primary}: {e:#}"))
            })?;
            // A standby that went further than the new primary's history cannot follow it:
            // say so at once (the caller rewinds it with /v1/demote) rather than wait.
            match sql::can_follow(&client, &remote).await {
                Ok(sql::Follow::Yes) => {}
                Ok(sql::Follow::Diverged(reason)) => {
                    return Err(OpError::Diverged(format!(
                        "cannot follow {primary} without a rewind: {reason}"
                    )))
                }
                Ok(sql::Follow::NotPrimary) => {
                    return Err(OpError::Conflict(format!("{primary} is not a primary")))
                }
                Err(e) => return Err(OpError::Unavailable(format!("{e:#}"))),
            }
            sql::ensure_slot(&self.cfg, &remote)
                .await
                .map_err(|e| OpError::Unavailable(format!("{e:#}")))?;
        }
        if req.sync.is_some() && standby {
            return Err(OpError::Conflict(
                "this server is a standby; a synchronous replication policy belongs on the primary"
                    .into(),
            ));
        }
        let before = ops.state.clone();
        let mut next = before.clone();
        if let Some(names) = &req.synchronous_standby_names {
            // A value set by hand replaces the policy.
            next.synchronous_standby_names = names.clone();
            next.sync_policy = None;
            next.sync_degraded = false;
        }
        if let Some(policy) = &req.sync {
            // A new policy starts synchronous; the watcher degrades it again if need be.
            next.synchronous_standby_names = sync::standby_names(policy);
            next.sync_policy = Some(policy.clone());
            next.sync_degraded = false;
        }
        if let Some(level) = &req.synchronous_commit {
            next.synchronous_commit = level.clone();
        }
        if let Some(primary) = &req.primary {
            next.primary = Some(primary.clone());
        }
        files::write_config(&self.cfg, &self.bins, &self.layout, &next)?;
        // Postgres parses the files again for pg_file_settings and reports what it would reject.
        let errors = client
            .query(
                "SELECT name, error FROM pg_file_settings \
                 WHERE sourcefile LIKE '%/toygres.conf' AND error IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| OpError::Failed(format!("read pg_file_settings: {e}")))?;
        if let Some(row) = errors.first() {
            files::write_config(&self.cfg, &self.bins, &self.layout, &before)?;
            let name: Option<String> = row.get(0);
            let error: String = row.get(1);
            let name = name.unwrap_or_else(|| "toygres.conf".into());
            let hint = if name == "synchronous_standby_names" {
                " (Postgres could not parse it; standby names with '-' must be double-quoted, \
                 as in ANY 1 (\"db-1\", \"db-2\"))"
            } else {
                ""
            };
            return Err(OpError::invalid(
                "invalid_value",
                format!("{name}: {error}{hint}"),
            ));
        }
        client
            .execute("SELECT pg_reload_conf()", &[])
            .await
            .map_err(|e| OpError::Failed(format!("reload: {e}")))?;
        ops.state = next;
        if req.sync.is_some() || req.synchronous_standby_names.is_some() {
            self.sync.policy_changed();
        }
        drop(ops);
        if req.primary.is_some() {
            self.wait_streaming(None, super::demote::REPOINT_TIMEOUT)
                .await?;
        }
        tracing::info!(?req, "replication settings changed");
        Ok("replication settings applied".into())
    }
}

impl Member {
    /// Drops the replication slot of a standby that left (`member`), so the primary stops
    /// keeping WAL for it. Refused while a standby still streams through it; absent is success.
    pub async fn drop_slot(&self, member: &str) -> Result<bool, OpError> {
        toygres_common::names::validate_member_name(member)
            .map_err(|e| OpError::invalid("invalid_member", e.to_string()))?;
        let slot = toygres_common::names::slot_name_for_member(member);
        let _ops = self.ops.lock().await;
        let client = sql::connect_local(&self.cfg)
            .await
            .map_err(|e| OpError::Unavailable(format!("connect to postgres: {e}")))?;
        let row = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| OpError::Failed(format!("look up slot {slot}: {e}")))?;
        match row {
            None => Ok(false),
            Some(r) if r.get::<_, bool>(0) => Err(OpError::Conflict(format!(
                "slot {slot} is in use: {member} still streams through it"
            ))),
            Some(_) => {
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                    .map_err(|e| OpError::Failed(format!("drop slot {slot}: {e}")))?;
                tracing::info!(%slot, "replication slot dropped");
                Ok(true)
            }
        }
    }
}
