//! `PUT /v1/replication`: synchronous replication settings on a primary, and the primary a
//! standby follows. Values are written to `toygres.conf`, checked by Postgres's own parser
//! (`pg_file_settings`) before they are kept, and applied with a reload. A synchronous
//! replication policy ([`super::sync`]) replaces `synchronous_standby_names` with a value the
//! sidecar computes and keeps up to date itself.

use std::path::Path;

use toygres_common::names::PgAddress;
use toygres_common::sidecar_api::ReplicationRequest;

use super::files::{self, SYNCHRONOUS_COMMIT_VALUES};
use super::member::{Member, OpError};
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
            check_member_address(&self.cfg, primary)?;
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

/// Refuses a primary that is not a member of this member's own instance: following a server
/// sends it the replication password, and a rewind the superuser's (issue 14). The members are
/// known without being told:
///
/// - on the local platform (a `member.json` beside the data directory): the address of a
///   sibling member's record of the same instance (its `pg_port`, on loopback or on the host
///   its `network` names);
/// - on Kubernetes (`KUBERNETES_SERVICE_HOST` set): a name in the instance's headless domain,
///   `<instance>-<n>-0.<instance>-members[.<namespace>…]` (the pod of member `<instance>-<n>`),
///   or an IP address. The Kubernetes platform hands out pod IPs, and the sidecar cannot yet
///   check an IP against the members Service's EndpointSlices, so on Kubernetes an IP is
///   accepted (a known gap of issue 14);
/// - a sidecar run by hand, outside both, has no member list and follows what it is told.
pub fn check_member_address(
    cfg: &super::settings::MemberSettings,
    address: &PgAddress,
) -> Result<(), OpError> {
    let Some(instance) = instance_of(&cfg.member_name) else {
        return Ok(());
    };
    let member_dir = cfg.data_dir.parent();
    let allowed = match member_dir {
        Some(dir) if dir.join("member.json").is_file() => {
            dir.parent().is_some_and(|instance_dir| {
                sibling_addresses(instance_dir, instance)
                    .iter()
                    .any(|(host, port)| {
                        *port == address.port
                            && match host {
                                Some(host) => *host == address.host,
                                None => is_loopback(&address.host),
                            }
                    })
            })
        }
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            in_members_domain(instance, &address.host)
                || address.host.parse::<std::net::IpAddr>().is_ok()
        }
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(OpError::invalid(
            "not_a_member",
            format!("{address} is not a member of instance {instance}; refusing to connect to it"),
        ))
    }
}

/// The instance of member `<instance>-<n>`.
fn instance_of(member: &str) -> Option<&str> {
    let (instance, n) = member.rsplit_once('-')?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then_some(instance)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Postgres addresses of the members recorded under the local platform's instance
/// directory: the host of the record's `network` (none: loopback) and its `pg_port`.
fn sibling_addresses(instance_dir: &Path, instance: &str) -> Vec<(Option<String>, u16)> {
    let Ok(entries) = std::fs::read_dir(instance_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| instance_of(&e.file_name().to_string_lossy()) == Some(instance))
        .filter_map(|e| std::fs::read(e.path().join("member.json")).ok())
        .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(|record| record["instance"] == instance)
        .filter_map(|record| {
            let port = u16::try_from(record["pg_port"].as_u64()?).ok()?;
            let host = record["network"]["host"].as_str().map(str::to_string);
            Some((host, port))
        })
        .collect()
}

/// `<instance>-<n>.<instance>-members`, optionally followed by the rest of a cluster domain.
fn in_members_domain(instance: &str, host: &str) -> bool {
    let Some((pod, rest)) = host.split_once('.') else {
        return false;
    };
    let domain = format!("{instance}-members");
    let service_matches = rest == domain || rest.starts_with(&format!("{domain}."));
    // A member `<instance>-<n>` runs as the StatefulSet's pod `<instance>-<n>-0`.
    let member = pod.strip_suffix("-0").unwrap_or(pod);
    instance_of(member) == Some(instance) && service_matches
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    #[test]
    fn the_headless_domain_names_only_the_instances_members() {
        assert!(in_members_domain("side", "side-1.side-members"));
        assert!(in_members_domain("side", "side-1-0.side-members.db.svc"));
        assert!(in_members_domain(
            "side",
            "side-12.side-members.db.svc.cluster.local"
        ));
        assert!(!in_members_domain("side", "evil.example.com"));
        assert!(!in_members_domain("side", "side-1.side-membersx"));
        assert!(!in_members_domain("side", "other-1.other-members"));
        assert!(!in_members_domain("side", "side-x.side-members"));
        assert!(!in_members_domain("side", "10.0.0.7"));
    }

    #[test]
    fn local_members_are_the_sibling_records_of_the_same_instance() {
        let dir = tempfile::tempdir().unwrap();
        let write = |member: &str, instance: &str, port: u16, host: Option<&str>| {
            let path = dir.path().join(member);
            std::fs::create_dir_all(&path).unwrap();
            let mut record = serde_json::json!({"instance": instance, "pg_port": port});
            if let Some(host) = host {
                record["network"] = serde_json::json!({"host": host, "netns": "ns"});
            }
            std::fs::write(path.join("member.json"), record.to_string()).unwrap();
        };
        write("side-0", "side", 5001, None);
        write("side-1", "side", 5002, Some("10.231.7.3"));
        write("sidecar-0", "sidecar", 5003, None);
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        let mut addresses = sibling_addresses(dir.path(), "side");
        addresses.sort_unstable();
        assert_eq!(
            addresses,
            [(None, 5001), (Some("10.231.7.3".to_string()), 5002)]
        );
        assert_eq!(instance_of("side-0"), Some("side"));
        assert_eq!(instance_of("my-db-3"), Some("my-db"));
        assert_eq!(instance_of("nodash"), None);
    }
}
