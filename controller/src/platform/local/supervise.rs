//! Keeping the members running: [`LocalPlatform::adopt`] takes over what an earlier controller
//! left and starts again what died; the supervisor runs it periodically and renews the members'
//! certificates before they expire.

use std::sync::Arc;
use std::time::Duration;

use super::adoption::{AdoptReport, Adoption};
use super::record::{self, AllRecords, EndpointsRecord, MemberRecord};
use super::{member_host, process, tls, LocalPlatform};

/// How long telling one adopted sidecar where to report may take.
const REPOINT_TIMEOUT: Duration = Duration::from_secs(5);

impl LocalPlatform {
    /// Takes over what an earlier controller left: adopts every recorded member whose sidecar
    /// still runs, restarts those that died (except the ones stopped on purpose), and serves every
    /// recorded instance's endpoints with their last routes. Safe to call again at any time: it
    /// also serves as a periodic "restart what died" pass.
    pub async fn adopt(&self) -> anyhow::Result<AdoptReport> {
        let all = AllRecords::scan(&self.layout.instances_dir())?;
        let mut report = AdoptReport::default();
        for recorded in all.members {
            let lock = self.lock(&recorded.spec.instance).await;
            // Re-read under the lock: an operation may have changed it since the scan.
            let path = self
                .layout
                .member_record(&recorded.spec.instance, &recorded.spec.member);
            let outcome = match record::read::<MemberRecord>(&path) {
                Ok(Some(current)) if current.stopped => Adoption::LeftStopped,
                Ok(Some(mut current)) => match self.ensure_running(&mut current).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        tracing::error!(
                            member = current.spec.member,
                            "restart the member's sidecar: {e:#}"
                        );
                        Adoption::Failed {
                            error: format!("{e:#}"),
                        }
                    }
                },
                Ok(None) => continue,
                Err(e) => Adoption::Failed {
                    error: format!("{e:#}"),
                },
            };
            drop(lock);
            report
                .members
                .push((recorded.spec.instance, recorded.spec.member, outcome));
        }
        for endpoints in all.endpoints {
            let _lock = self.lock(&endpoints.instance).await;
            if self.proxy_running(&endpoints.instance) {
                continue;
            }
            let path = self.layout.endpoints_record(&endpoints.instance);
            let served = match record::read::<EndpointsRecord>(&path) {
                Ok(Some(current)) => {
                    let targets = self.resolve_routes(&current.instance, &current.routes);
                    self.serve_endpoints(&current, targets, None).await
                }
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            match served {
                Ok(()) => report.endpoints.push(endpoints.instance),
                Err(e) => {
                    tracing::error!(
                        instance = endpoints.instance,
                        "serve the instance's endpoints: {e:#}"
                    );
                    report
                        .failed_endpoints
                        .push((endpoints.instance, format!("{e:#}")));
                }
            }
        }
        self.point_reports_here(&report).await;
        for (instance, member, outcome) in &report.members {
            match outcome {
                Adoption::Restarted { pid } => {
                    tracing::warn!(
                        instance,
                        member,
                        pid,
                        "the member's sidecar was gone; started it again"
                    )
                }
                Adoption::Failed { .. } => {}
                Adoption::Adopted { .. } | Adoption::LeftStopped => {
                    tracing::debug!(instance, member, ?outcome, "adopted a member")
                }
            }
        }
        Ok(report)
    }

    /// Points the reports of the adopted sidecars not yet known to report here at this
    /// controller's API (`PUT /v1/notify`): a sidecar started by an earlier controller keeps
    /// the `--notify-url` it was started with, which may name another port or plain HTTP where
    /// this controller serves HTTPS, and its reports would be lost. A sidecar that cannot be
    /// told is tried again at the next pass, but for one too old to know the route (404), which
    /// reports where it did until it is restarted.
    async fn point_reports_here(&self, report: &AdoptReport) {
        let Some(notify) = &self.config.notify else {
            return;
        };
        let pending: Vec<(&str, &str, i32)> = {
            let known = self
                .reporting_here
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            report
                .members
                .iter()
                .filter_map(|(instance, member, outcome)| match outcome {
                    Adoption::Adopted { pid } if !known.contains(pid) => {
                        Some((instance.as_str(), member.as_str(), *pid))
                    }
                    _ => None,
                })
                .collect()
        };
        if pending.is_empty() {
            return;
        }
        let ca_pem = match &notify.ca_file {
            None => None,
            Some(file) => match std::fs::read_to_string(file) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    tracing::error!(
                        "read {} to point the members' reports here: {e}",
                        file.display()
                    );
                    return;
                }
            },
        };
        let target = toygres_common::sidecar_api::NotifyTarget {
            url: notify.url.clone(),
            ca_pem,
        };
        let tell = pending.iter().map(|(instance, member, pid)| {
            let target = &target;
            async move {
                let client =
                    crate::platform::sidecar_client(self, instance, member, REPOINT_TIMEOUT)
                        .await
                        .map_err(|e| e.to_string())?;
                match client.set_notify_target(target).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.status() == Some(404) => {
                        tracing::warn!(
                            instance,
                            member,
                            pid,
                            "the member's sidecar is too old to be told where to report; it \
                             reports where it did until it is restarted"
                        );
                        Ok(false)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        });
        let told = futures::future::join_all(tell).await;
        let mut known = self
            .reporting_here
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ((instance, member, pid), outcome) in pending.iter().zip(told) {
            match outcome {
                Ok(repointed) => {
                    if repointed {
                        tracing::info!(
                            instance,
                            member,
                            pid,
                            url = notify.url,
                            "the adopted sidecar reports here now"
                        );
                    }
                    known.insert(*pid);
                }
                Err(e) => tracing::warn!(
                    instance,
                    member,
                    pid,
                    "point the adopted sidecar's reports here: {e}"
                ),
            }
        }
    }

    /// Runs [`LocalPlatform::adopt`] every `interval` in the background, so a member whose
    /// sidecar dies is started again (as a kubelet restarts a container); the interval is also
    /// the delay between two starts of a sidecar that keeps dying. The task ends when the
    /// platform is dropped.
    pub fn spawn_supervisor(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let platform = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(platform) = platform.upgrade() else {
                    return;
                };
                if let Err(e) = platform.adopt().await {
                    tracing::error!("supervise the local members: {e:#}");
                }
                if let Err(e) = platform.renew_certificates().await {
                    tracing::error!("renew the local members' certificates: {e:#}");
                }
            }
        })
    }

    /// Issues new certificates to every member whose certificates are due for renewal
    /// ([`tls::renew_member_if_due`]); returns the `(instance, member)` pairs renewed. A member
    /// whose certificates were never issued is left to its next start.
    pub async fn renew_certificates(&self) -> anyhow::Result<Vec<(String, String)>> {
        let all = AllRecords::scan(&self.layout.instances_dir())?;
        let mut renewed = Vec::new();
        for recorded in all.members {
            let (instance, member) = (&recorded.spec.instance, &recorded.spec.member);
            let _lock = self.lock(instance).await;
            let files = tls::member_dir(&self.layout, instance, member);
            // (A member lacking only the files added since, `rewind.crt`, is renewed.)
            if !files.missing_required().is_empty() {
                continue;
            }
            let path = self.layout.member_record(instance, member);
            let Ok(Some(current)) = record::read::<MemberRecord>(&path) else {
                continue;
            };
            match tls::renew_member_if_due(&self.layout, instance, member, member_host(&current)) {
                Ok(true) => {
                    tracing::info!(instance, member, "renewed the member's certificates");
                    renewed.push((instance.clone(), member.clone()));
                }
                Ok(false) => {}
                Err(e) => tracing::error!(instance, member, "renew the certificates: {e:#}"),
            }
        }
        Ok(renewed)
    }

    /// Makes sure the member's sidecar runs: adopts a live one (the recorded pid, or one found
    /// by its data directory), else starts it. Updates the record.
    pub(super) async fn ensure_running(
        &self,
        record: &mut MemberRecord,
    ) -> anyhow::Result<Adoption> {
        if let Some(pid) = record
            .pid
            .filter(|pid| process::is_sidecar_of(*pid, &record.data_dir))
        {
            return Ok(Adoption::Adopted { pid });
        }
        if let Some(pid) = process::find_sidecar_of(&record.data_dir) {
            tracing::info!(
                member = record.spec.member,
                pid,
                "found the member's sidecar running unrecorded; adopting it"
            );
            record.pid = Some(pid);
            self.write_member(record)?;
            return Ok(Adoption::Adopted { pid });
        }
        let pid = self.start_sidecar(record)?;
        Ok(Adoption::Restarted { pid })
    }
}
