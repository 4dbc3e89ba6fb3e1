//! The `fleet-sim` platform (hidden; for benchmarks): the local platform, except that a member is
//! not a sidecar process but a simulated member of a `toygres-sidecar fleet` double, registered
//! there when it is created. Credentials, certificates, member records and endpoints are the
//! local platform's own, so the controller, its CMS and its orchestrations do exactly the work
//! they do for real members; only Postgres is missing (no connection to a member's Postgres
//! works: application access is skipped, see [`Platform::simulated`]).
//!
//! A simulated member's record is marked stopped, so the local supervisor never starts a sidecar
//! for it; whether it runs is the double's to say.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::Deserialize;
use toygres_common::names::{validate_instance_name, PgAddress};

use super::local::record::{self, AllRecords, MemberRecord};
use super::local::LocalPlatform;
use super::{
    validate_member_of, Bootstrap, EndpointRoutes, Endpoints, MemberAddress, MemberHandle,
    MemberInfo, MemberSpec, MemberState, Platform, PlatformError, SecretName, SecretRef,
    SecretRefs, SecretValue,
};
use crate::endpoints::BreakerState;

/// The local platform with members simulated by the double at `url`.
#[derive(Debug)]
pub struct FleetSimPlatform {
    local: Arc<LocalPlatform>,
    /// The double's base URL (`http://127.0.0.1:PORT`).
    url: String,
    http: reqwest::Client,
    /// Held while a new member's Postgres port is chosen and recorded.
    allocation: Mutex<()>,
}

/// A member as the double lists it.
#[derive(Debug, Deserialize)]
struct Listed {
    member: String,
    /// `running`, `fenced` or `killed`.
    state: String,
}

impl FleetSimPlatform {
    /// Members of `local`'s home, simulated by the double at `url`.
    pub fn new(local: Arc<LocalPlatform>, url: &str) -> Self {
        Self {
            local,
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            allocation: Mutex::new(()),
        }
    }

    /// The local platform underneath (its endpoints and records).
    pub fn local(&self) -> &Arc<LocalPlatform> {
        &self.local
    }

    fn address_of(&self, record: &MemberRecord) -> MemberAddress {
        MemberAddress {
            pg: PgAddress {
                host: "127.0.0.1".into(),
                port: record.pg_port,
            },
            api_url: format!("{}/m/{}", self.url, record.spec.member),
        }
    }

    /// Asks the double to simulate the member (again: a killed one runs again).
    async fn register(&self, record: &MemberRecord) -> Result<(), PlatformError> {
        let layout = self.local.layout();
        let bootstrap = match &record.spec.bootstrap {
            Bootstrap::Standby { primary } => {
                serde_json::json!({"mode": "standby", "primary": primary})
            }
            Bootstrap::Init | Bootstrap::Restore(_) => serde_json::json!({"mode": "init"}),
        };
        let body = serde_json::json!({
            "instance": record.spec.instance,
            "member": record.spec.member,
            "pg": {"host": "127.0.0.1", "port": record.pg_port},
            "bootstrap": bootstrap,
            "token_file": layout.secret_file(&record.spec.instance, SecretName::SidecarToken),
        });
        self.send(
            self.http
                .post(format!("{}/fleet/members", self.url))
                .json(&body),
        )
        .await
        .with_context(|| format!("register the simulated member {}", record.spec.member))?;
        Ok(())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.context("reach the simulated fleet")?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            anyhow::bail!("the simulated fleet answered {status}: {text}");
        }
        Ok(response)
    }

    async fn record_of(&self, instance: &str, member: &str) -> Result<MemberRecord, PlatformError> {
        self.local.member_record(instance, member).await
    }
}

#[async_trait::async_trait]
impl Platform for FleetSimPlatform {
    fn simulated(&self) -> bool {
        true
    }

    async fn ensure_instance_secrets(&self, instance: &str) -> Result<SecretRefs, PlatformError> {
        self.local.ensure_instance_secrets(instance).await
    }

    async fn delete_instance_secrets(&self, instance: &str) -> Result<(), PlatformError> {
        self.local.delete_instance_secrets(instance).await
    }

    async fn read_secret(&self, secret: &SecretRef) -> Result<SecretValue, PlatformError> {
        self.local.read_secret(secret).await
    }

    async fn replace_secret(
        &self,
        secret: &SecretRef,
        value: &SecretValue,
    ) -> Result<(), PlatformError> {
        self.local.replace_secret(secret, value).await
    }

    async fn put_store_secret(
        &self,
        name: &str,
        values: &std::collections::BTreeMap<String, SecretValue>,
    ) -> Result<(), PlatformError> {
        self.local.put_store_secret(name, values).await
    }

    async fn store_secret_keys(&self, name: &str) -> Result<Option<Vec<String>>, PlatformError> {
        self.local.store_secret_keys(name).await
    }

    async fn delete_store_secret(&self, name: &str) -> Result<(), PlatformError> {
        self.local.delete_store_secret(name).await
    }

    fn secret_location(&self, secret: &SecretRef) -> Option<String> {
        self.local.secret_location(secret)
    }

    fn passfile_location(&self, secret: &SecretRef) -> Option<String> {
        self.local.passfile_location(secret)
    }

    async fn instance_ca(&self, instance: &str) -> Result<String, PlatformError> {
        self.local.instance_ca(instance).await
    }

    fn ca_file_location(&self, instance: &str) -> Option<String> {
        self.local.ca_file_location(instance)
    }

    fn ro_breakers(&self, instance: &str) -> BTreeMap<String, BreakerState> {
        self.local.ro_breakers(instance)
    }

    fn default_backup_store(&self) -> Option<String> {
        self.local.default_backup_store()
    }

    async fn create_member(&self, spec: &MemberSpec) -> Result<MemberHandle, PlatformError> {
        spec.validate()?;
        let layout = self.local.layout();
        let path = layout.member_record(&spec.instance, &spec.member);
        let member = match record::read::<MemberRecord>(&path)? {
            Some(existing) => existing,
            None => {
                let _allocation = match self.allocation.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let reserved = AllRecords::scan(&layout.instances_dir())?.ports();
                let listeners = record::bind_free_ports(1, &reserved)?;
                let pg_port = record::port_of(&listeners[0])?;
                drop(listeners);
                let member_dir = layout.member_dir(&spec.instance, &spec.member);
                let mut new = MemberRecord::new(
                    spec,
                    pg_port,
                    0,
                    layout.data_dir(&spec.instance, &spec.member),
                    member_dir.join("run"),
                    layout.log_file(&spec.instance, &spec.member),
                );
                // Never started by the local supervisor: the double runs it.
                new.stopped = true;
                layout.create_dir(&member_dir)?;
                record::write(&path, &new)?;
                new
            }
        };
        self.register(&member).await?;
        Ok(MemberHandle {
            instance: member.spec.instance.clone(),
            member: member.spec.member.clone(),
            address: self.address_of(&member),
        })
    }

    async fn delete_member(
        &self,
        instance: &str,
        member: &str,
        _keep_data: bool,
    ) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        self.send(
            self.http
                .delete(format!("{}/fleet/members/{member}", self.url)),
        )
        .await
        .with_context(|| format!("remove the simulated member {member}"))?;
        let dir = self.local.layout().member_dir(instance, member);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::from(e)
                .context(format!("remove {}", dir.display()))
                .into()),
        }
    }

    async fn member_address(
        &self,
        instance: &str,
        member: &str,
    ) -> Result<MemberAddress, PlatformError> {
        Ok(self.address_of(&self.record_of(instance, member).await?))
    }

    async fn kill_member(&self, instance: &str, member: &str) -> Result<(), PlatformError> {
        validate_member_of(instance, member)?;
        self.send(
            self.http
                .post(format!("{}/fleet/members/{member}/kill", self.url)),
        )
        .await
        .with_context(|| format!("kill the simulated member {member}"))?;
        Ok(())
    }

    async fn list_members(&self, instance: &str) -> Result<Vec<MemberInfo>, PlatformError> {
        validate_instance_name(instance)?;
        let listed: Vec<Listed> = self
            .send(
                self.http
                    .get(format!("{}/fleet/members", self.url))
                    .query(&[("instance", instance)]),
            )
            .await?
            .json()
            .await
            .context("read the simulated fleet's members")?;
        let mut members = Vec::new();
        for info in self.local.list_members(instance).await? {
            let state = match listed.iter().find(|l| l.member == info.member) {
                Some(l) if l.state == "killed" => MemberState::Stopped,
                Some(_) => MemberState::Running,
                None => MemberState::Down,
            };
            let record = self.record_of(instance, &info.member).await?;
            members.push(MemberInfo {
                state,
                address: self.address_of(&record),
                ..info
            });
        }
        Ok(members)
    }

    async fn ensure_endpoints(&self, instance: &str) -> Result<Endpoints, PlatformError> {
        self.local.ensure_endpoints(instance).await
    }

    async fn route_endpoint(
        &self,
        instance: &str,
        routes: &EndpointRoutes,
    ) -> Result<(), PlatformError> {
        self.local.route_endpoint(instance, routes).await
    }

    async fn delete_endpoints(&self, instance: &str) -> Result<(), PlatformError> {
        self.local.delete_endpoints(instance).await
    }
}
