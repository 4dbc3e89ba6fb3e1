//! The [`Platform`] trait as the local platform serves it: an instance's credentials (files
//! under its directory), its members (sidecar processes) and its endpoints (proxies in the
//! controller).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use toygres_common::names::validate_instance_name;

use super::layout::{remove_dir_if_empty, remove_path};
use super::record::{AllRecords, EndpointsRecord, MemberRecord};
use super::{process, record, secrets, store_secrets, tls, LocalPlatform};
use crate::endpoints::{BreakerState, ProxyTargets};
use crate::platform::{
    validate_member_of, EndpointRoutes, Endpoints, MemberAddress, MemberArchive, MemberHandle,
    MemberInfo, MemberSpec, Platform, PlatformError, SecretRef, SecretRefs, SecretValue,
};

/// `data_dir` with `suffix` appended to its name: a sibling directory.
fn sibling(data_dir: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = data_dir.as_os_str().to_os_string();
    name.push(suffix);
    name.into()
}

/// Where [`Platform::set_data_aside`] keeps a member's data directory (beside it; not the
/// sidecar's own `.discarded`, which it would put back as a standby).
fn aside_dir(data_dir: &Path) -> std::path::PathBuf {
    sibling(data_dir, ".before-restore")
}

impl LocalPlatform {
    /// Marks the member stopped (so nothing restarts it) and stops its sidecar and Postgres.
    async fn stop_recorded(&self, record: &mut MemberRecord) -> Result<(), PlatformError> {
        record.stopped = true;
        self.write_member(record)?;
        let pid = record
            .pid
            .filter(|pid| process::is_sidecar_of(*pid, &record.data_dir))
            .or_else(|| process::find_sidecar_of(&record.data_dir));
        process::stop_member(pid, &record.data_dir, self.delete_timeout())
            .await
            .with_context(|| format!("stop member {}", record.spec.member))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Platform for LocalPlatform {
    async fn ensure_instance_secrets(&self, instance: &str) -> Result<SecretRefs, PlatformError> {
        validate_instance_name(instance)?;
        let _lock = self.lock(instance).await;
        let refs = secrets::ensure(&self.layout, instance)?;
        tls::ensure_ca(&self.layout, instance)?;
        Ok(refs)
    }

    async fn delete_instance_secrets(&self, instance: &str) -> Result<(), PlatformError> {
        validate_instance_name(instance)?;
        let _lock = self.lock(instance).await;
        remove_path(&self.layout.secrets_dir(instance))?;
        remove_path(&self.layout.keyring_dir(instance))?;
        remove_dir_if_empty(&self.layout.instance_dir(instance));
        Ok(())
    }

    async fn read_secret(&self, secret: &SecretRef) -> Result<SecretValue, PlatformError> {
        validate_instance_name(&secret.instance)?;
        secrets::read(&self.layout, secret)?
            .ok_or_else(|| PlatformError::not_found("secret", secret.to_string()))
    }

    async fn replace_secret(
        &self,
        secret: &SecretRef,
        value: &SecretValue,
    ) -> Result<(), PlatformError> {
        validate_instance_name(&secret.instance)?;
        secrets::replace(&self.layout, secret, value)?;
        Ok(())
    }

    fn secret_location(&self, secret: &SecretRef) -> Option<String> {
        validate_instance_name(&secret.instance).ok()?;
        Some(
            self.layout
                .secret_file(&secret.instance, secret.name)
                .display()
                .to_string(),
        )
    }

    fn passfile_location(&self, secret: &SecretRef) -> Option<String> {
        validate_instance_name(&secret.instance).ok()?;
        secrets::passfile_user(secret.name)?;
        Some(
            secrets::passfile(&self.layout, secret)
                .display()
                .to_string(),
        )
    }

    async fn instance_ca(&self, instance: &str) -> Result<String, PlatformError> {
        validate_instance_name(instance)?;
        let path = tls::ca_file(&self.layout, instance);
        match std::fs::read_to_string(&path) {
            Ok(pem) => Ok(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PlatformError::not_found("instance CA", instance))
            }
            Err(e) => Err(anyhow::Error::from(e)
                .context(format!("read {}", path.display()))
                .into()),
        }
    }

    fn ca_file_location(&self, instance: &str) -> Option<String> {
        validate_instance_name(instance).ok()?;
        Some(tls::ca_file(&self.layout, instance).display().to_string())
    }

    fn ro_breakers(&self, instance: &str) -> BTreeMap<String, BreakerState> {
        self.ro_breaker_states(instance)
    }

    async fn put_store_secret(
        &self,
        name: &str,
        values: &BTreeMap<String, SecretValue>,
    ) -> Result<(), PlatformError> {
        Ok(store_secrets::put(&self.layout, name, values)?)
    }

    async fn store_secret_keys(&self, name: &str) -> Result<Option<Vec<String>>, PlatformError> {
        Ok(store_secrets::keys(&self.layout, name)?)
    }

    async fn put_backup_keyring(
        &self,
        instance: &str,
        archive: &MemberArchive,
    ) -> Result<Option<String>, PlatformError> {
        validate_instance_name(instance)?;
        let _lock = self.lock(instance).await;
        // Written in place: the members see it at once.
        self.write_keyring(archive, instance).map(|()| None)
    }

    async fn delete_store_secret(&self, name: &str) -> Result<(), PlatformError> {
        Ok(store_secrets::delete(&self.layout, name)?)
    }

    fn default_backup_store(&self) -> Option<String> {
        Some(format!("file://{}", self.layout.backups_dir().display()))
    }

    async fn create_member(&self, spec: &MemberSpec) -> Result<MemberHandle, PlatformError> {
        spec.validate()?;
        let _lock = self.lock(&spec.instance).await;
        for secret in spec.secrets.all() {
            let path = self.layout.secret_file(&secret.instance, secret.name);
            if !path.is_file() {
                return Err(PlatformError::not_found("secret", secret.to_string()));
            }
        }
        let path = self.layout.member_record(&spec.instance, &spec.member);
        let mut member = match record::read::<MemberRecord>(&path)? {
            Some(existing) => existing,
            None => {
                let _allocation = self.allocate_ports();
                let reserved = AllRecords::scan(&self.layout.instances_dir())?.ports();
                let listeners = record::bind_free_ports(2, &reserved)?;
                let pg_port = record::port_of(&listeners[0])?;
                let api_port = record::port_of(&listeners[1])?;
                drop(listeners);
                let mut new = MemberRecord::new(
                    spec,
                    pg_port,
                    api_port,
                    self.layout.data_dir(&spec.instance, &spec.member),
                    self.layout.run_dir(&spec.instance, &spec.member, pg_port)?,
                    self.layout.log_file(&spec.instance, &spec.member),
                );
                new.network = self.network_for(&spec.member)?;
                self.layout
                    .create_dir(&self.layout.member_dir(&spec.instance, &spec.member))?;
                // Recorded before the start, so a crash in between cannot lose the ports or
                // start a second sidecar on the same data later.
                self.write_member(&new)?;
                new
            }
        };
        let running = member
            .pid
            .is_some_and(|pid| process::is_sidecar_of(pid, &member.data_dir));
        if !running {
            // Started again after kill_member or a death: the newest spec wins (its bootstrap
            // only matters while the data directory is still empty).
            member.spec.bootstrap = spec.bootstrap.clone();
            member.spec.secrets = spec.secrets.clone();
            member.spec.placement = spec.placement.clone();
        }
        if member.stopped || !running {
            member.stopped = false;
            self.write_member(&member)?;
        }
        if !running {
            if let Some(archive) = &spec.archive {
                self.write_keyring(archive, &spec.instance)?;
            }
            self.ensure_running(&mut member).await?;
        }
        Ok(MemberHandle {
            instance: member.spec.instance.clone(),
            member: member.spec.member.clone(),
            address: Self::address_of(&member),
        })
    }

    async fn delete_member(
        &self,
        instance: &str,
        member: &str,
        keep_data: bool,
    ) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        let _lock = self.lock(instance).await;
        let member_dir = self.layout.member_dir(instance, member);
        let data_dir = self.layout.data_dir(instance, member);
        let path = self.layout.member_record(instance, member);
        let recorded = record::read::<MemberRecord>(&path)?;
        let mut run_dirs = vec![member_dir.join("run")];
        let pid = match &recorded {
            Some(existing) => {
                // Marked first, so an adopt() after a crash mid-way does not restart it.
                let mut stopping = existing.clone();
                stopping.stopped = true;
                self.write_member(&stopping)?;
                run_dirs.push(existing.run_dir.clone());
                existing.pid
            }
            None => None,
        };
        let pid = pid
            .filter(|pid| process::is_sidecar_of(*pid, &data_dir))
            .or_else(|| process::find_sidecar_of(&data_dir));
        process::stop_member(pid, &data_dir, self.delete_timeout())
            .await
            .with_context(|| format!("stop member {member}"))?;
        // The record goes before the data: a crash in between leaves files that a retry
        // removes, never a record that would start a fresh, empty member.
        remove_path(&path)?;
        for run_dir in run_dirs {
            remove_path(&run_dir)?;
        }
        if keep_data {
            // A bootstrap cut short is no data worth keeping.
            let mut unfinished = data_dir.as_os_str().to_os_string();
            unfinished.push(".bootstrap");
            remove_path(Path::new(&unfinished))?;
            tracing::info!(instance, member, "deleted the member, keeping its data");
        } else {
            remove_path(&member_dir)?;
            remove_path(&tls::member_dir(&self.layout, instance, member).dir)?;
            tracing::info!(
                instance,
                member,
                "deleted the member, its data and certificates"
            );
        }
        remove_dir_if_empty(&self.layout.home().join("run"));
        remove_dir_if_empty(&self.layout.instance_dir(instance));
        Ok(())
    }

    fn sets_data_aside(&self) -> bool {
        true
    }

    async fn set_data_aside(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        let _lock = self.lock(instance).await;
        let path = self.layout.member_record(instance, member);
        let mut record = record::read::<MemberRecord>(&path)?
            .ok_or_else(|| PlatformError::not_found("member", member))?;
        self.stop_recorded(&mut record).await?;
        let aside = aside_dir(&record.data_dir);
        // A retry after the move finds nothing left to move.
        if record.data_dir.join("PG_VERSION").exists() {
            remove_path(&aside)?;
            std::fs::rename(&record.data_dir, &aside)
                .with_context(|| format!("set {member}'s data directory aside"))?;
            // A re-clone's leftover would be put back by the sidecar in place of the restore.
            remove_path(&sibling(&record.data_dir, ".discarded"))?;
        }
        tracing::info!(instance, member, aside = %aside.display(), "set the data directory aside");
        Ok(())
    }

    async fn end_data_aside(
        &self,
        instance: &str,
        member: &str,
        put_back: bool,
    ) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        let _lock = self.lock(instance).await;
        let path = self.layout.member_record(instance, member);
        let mut record = record::read::<MemberRecord>(&path)?
            .ok_or_else(|| PlatformError::not_found("member", member))?;
        let aside = aside_dir(&record.data_dir);
        if !put_back {
            remove_path(&aside)?;
            tracing::info!(instance, member, "removed the data directory set aside");
            return Ok(());
        }
        // A retry after the move back finds nothing set aside.
        if aside.join("PG_VERSION").exists() {
            self.stop_recorded(&mut record).await?;
            remove_path(&record.data_dir)?;
            remove_path(&sibling(&record.data_dir, ".bootstrap"))?;
            std::fs::rename(&aside, &record.data_dir)
                .with_context(|| format!("put {member}'s data directory back"))?;
            tracing::warn!(instance, member, "put the data directory set aside back");
        }
        if !record.data_dir.join("PG_VERSION").exists() {
            // Started now, the member would bootstrap a new, empty cluster in its place.
            return Err(PlatformError::Invalid(format!(
                "{member} has no data directory to put back (none was set aside)"
            )));
        }
        Ok(())
    }

    async fn member_address(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<MemberAddress, PlatformError> {
        let record = self.member_record(instance, member).await?;
        Ok(Self::address_of(&record))
    }

    async fn kill_member(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        let _lock = self.lock(instance).await;
        let mut record =
            record::read::<MemberRecord>(&self.layout.member_record(instance, member))?
                .ok_or_else(|| PlatformError::not_found("member", member))?;
        record.stopped = true;
        self.write_member(&record)?;
        // Fenced before the kill: whoever starts it again (create_member, to rejoin it) finds
        // Postgres kept stopped until it is made a standby.
        if record.data_dir.join("PG_VERSION").exists() {
            let marker = record
                .data_dir
                .join(toygres_common::sidecar_api::FENCE_MARKER_FILE);
            std::fs::write(&marker, b"")
                .with_context(|| format!("fence member {member}: write {}", marker.display()))?;
        }
        let pid = record
            .pid
            .filter(|pid| process::is_sidecar_of(*pid, &record.data_dir))
            .or_else(|| process::find_sidecar_of(&record.data_dir));
        process::kill_member(pid, &record.data_dir)
            .await
            .with_context(|| format!("kill member {member}"))?;
        tracing::warn!(instance, member, "killed the member");
        Ok(())
    }

    async fn list_members(&self, instance: &str) -> Result<Vec<MemberInfo>, PlatformError> {
        validate_instance_name(instance)?;
        let mut members = Vec::new();
        for dir in record::subdirectories(&self.layout.instance_dir(instance))? {
            let Some(record) = record::read::<MemberRecord>(&dir.join("member.json"))? else {
                continue;
            };
            members.push(MemberInfo {
                state: Self::state_of(&record),
                address: Self::address_of(&record),
                placement: record.spec.placement,
                member: record.spec.member,
            });
        }
        members.sort_by(|a, b| a.member.cmp(&b.member));
        Ok(members)
    }

    async fn ensure_endpoints(&self, instance: &str) -> Result<Endpoints, PlatformError> {
        validate_instance_name(instance)?;
        let _lock = self.lock(instance).await;
        let path = self.layout.endpoints_record(instance);
        if let Some(existing) = record::read::<EndpointsRecord>(&path)? {
            if !self.proxy_running(instance) {
                let targets = self.resolve_routes(instance, &existing.routes);
                self.serve_endpoints(&existing, targets, None).await?;
            }
            return Ok(Self::endpoints_of(&existing));
        }
        let (new, rw, ro) = {
            let _allocation = self.allocate_ports();
            let reserved = AllRecords::scan(&self.layout.instances_dir())?.ports();
            let mut listeners = record::bind_free_ports(2, &reserved)?;
            let (Some(ro), Some(rw)) = (listeners.pop(), listeners.pop()) else {
                return Err(anyhow::anyhow!("bind the endpoints' ports").into());
            };
            let new = EndpointsRecord::new(instance, record::port_of(&rw)?, record::port_of(&ro)?);
            self.layout
                .create_dir(&self.layout.instance_dir(instance))?;
            record::write(&path, &new)?;
            (new, rw, ro)
        };
        self.serve_endpoints(&new, ProxyTargets::default(), Some((rw, ro)))
            .await?;
        Ok(Self::endpoints_of(&new))
    }

    async fn route_endpoint(
        &self,
        instance: &str,
        routes: &EndpointRoutes,
    ) -> Result<(), PlatformError> {
        validate_instance_name(instance)?;
        for member in routes.rw.iter().chain(&routes.ro) {
            validate_member_of(instance, member)?;
            if !self.layout.member_record(instance, member).is_file() {
                return Err(PlatformError::not_found("member", member.clone()));
            }
        }
        let _lock = self.lock(instance).await;
        let path = self.layout.endpoints_record(instance);
        let mut endpoints = record::read::<EndpointsRecord>(&path)?
            .ok_or_else(|| PlatformError::not_found("endpoints", instance))?;
        let targets = self.resolve_routes(instance, routes);
        if endpoints.routes != *routes {
            endpoints.routes = routes.clone();
            record::write(&path, &endpoints)?;
        }
        let routed = match self.proxies.lock() {
            Ok(map) => map.get(instance).map(|proxy| proxy.route(targets.clone())),
            Err(poisoned) => poisoned
                .into_inner()
                .get(instance)
                .map(|proxy| proxy.route(targets.clone())),
        };
        if routed.is_none() {
            self.serve_endpoints(&endpoints, targets, None).await?;
        }
        Ok(())
    }

    async fn delete_endpoints(&self, instance: &str) -> Result<(), PlatformError> {
        validate_instance_name(instance)?;
        let _lock = self.lock(instance).await;
        let proxy = match self.proxies.lock() {
            Ok(mut map) => map.remove(instance),
            Err(poisoned) => poisoned.into_inner().remove(instance),
        };
        if let Some(proxy) = proxy {
            proxy.stop().await;
        }
        remove_path(&self.layout.endpoints_record(instance))?;
        remove_dir_if_empty(&self.layout.instance_dir(instance));
        Ok(())
    }
}
