//! The durable engine: the duroxide runtime on its store (duroxide-pg in the CMS database, schema
//! `toygres_duroxide`), the client the API starts and reads operations with, and the start-up
//! passes that keep the orchestrations whole after a crash (pending operations started, every
//! live instance given its actor).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duroxide::providers::Provider;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{Client, OrchestrationStatus};
use rand::RngCore as _;
use toygres_common::controller_api::{OperationAccepted, Progress, ValidatedCreateInstance};
use toygres_common::domain::{InstanceState, OperationKind};

use crate::activities::{self, ActivityDeps};
use crate::cms::instances::CreateOutcome;
use crate::cms::{Cms, CmsError};
use crate::metrics::ControllerMetrics;
use crate::orchestrations::create_instance::CreateInstanceInput;
use crate::orchestrations::delete_instance::DeleteInstanceInput;
use crate::orchestrations::instance_actor::{ActorInput, ActorSettings};
use crate::orchestrations::operation::operation_id_from;
use crate::orchestrations::{self, names};
use crate::platform::{Platform, RestoreSource};
use crate::token::hex;

mod actor_operations;
mod backup_keys;
mod backup_retention;
mod backups;
pub mod cms_janitor;
mod credentials;
pub mod health_watch;
pub mod parameters;
mod restore_in_place;
mod restore_wal;
mod ro;
mod store_secrets;

/// The schema of the duroxide store in the CMS database.
pub const DUROXIDE_SCHEMA: &str = "toygres_duroxide";

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The least time between two fetches of a dispatcher that found no work (duroxide's
    /// minimum poll interval). Idle dispatchers wait for wake-ups ([`crate::wake`]).
    pub poll_interval: Duration,
    /// The instance actors' settings.
    pub actor: ActorSettings,
    /// How long one health probe may take.
    pub probe_timeout: Duration,
    /// Probe members outside the actors' history ([`health_watch`]) and let quiet actors sleep
    /// (the default; off: every actor runs a durable round every health interval).
    pub fast_path: bool,
    /// The operator's default backup store (else the platform's).
    pub default_backup: crate::backups::defaults::DefaultBackupArgs,
    /// Orchestration turns run at once (duroxide's orchestration dispatchers).
    pub orchestration_slots: usize,
    /// Activities run at once (duroxide's activity workers).
    pub activity_slots: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(20),
            actor: ActorSettings::default(),
            probe_timeout: Duration::from_secs(3),
            fast_path: true,
            default_backup: Default::default(),
            // The controller passes its configured capacity; engines started by tests keep
            // these.
            orchestration_slots: 4,
            activity_slots: 16,
        }
    }
}

/// Why the engine refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The instance's queue of operations is full.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Cms(#[from] CmsError),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The duroxide runtime and its client.
pub struct Engine {
    runtime: Arc<Runtime>,
    client: Client,
    cms: Arc<Cms>,
    settings: EngineSettings,
    /// The platform's backup store for instances whose create request names none.
    default_backup_store: crate::backups::defaults::DefaultBackupStore,
    /// Where members are (the engine asks a source's primary to archive its WAL before a
    /// restore, and reads how far it archived).
    platform: Arc<dyn Platform>,
    /// The CMS's sweeps and the fast path's prober (when it runs).
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The runtime options: a 30 s orchestration lock (the 5 s default poisons messages against a
/// busy database), a short minimum poll interval and the configured slots.
pub fn runtime_options(settings: &EngineSettings) -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: settings.poll_interval,
        orchestrator_lock_timeout: Duration::from_secs(30),
        orchestrator_lock_renewal_buffer: Duration::from_secs(10),
        // A crashed controller's activities are picked up again once their lock expires:
        // keep that short (locks are renewed while an activity runs).
        worker_lock_timeout: Duration::from_secs(10),
        worker_lock_renewal_buffer: Duration::from_secs(3),
        // A turn holds its slot only while it runs; a turn mostly waits on the CMS, so a fleet
        // wants several per core (every round and failover step queues for one).
        orchestration_concurrency: settings.orchestration_slots.max(1),
        // Waiting activities (a standby's copy, a health probe) hold a worker slot each.
        worker_concurrency: settings.activity_slots.max(1),
        ..RuntimeOptions::default()
    }
}

/// Opens the duroxide-pg store at `url` in its own schema (applying duroxide's migrations).
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Provider>> {
    let mut config = duroxide_pg::ProviderConfig::url(url);
    config.schema_name = Some(DUROXIDE_SCHEMA.into());
    let provider = duroxide_pg::PostgresProvider::new_with_config(config)
        .await
        .context("open the duroxide store in the CMS")?;
    Ok(Arc::new(crate::wake::WakingStore::new(
        Arc::new(provider),
        IDLE_FETCH_MAX_WAIT,
    )))
}

/// The longest an idle dispatcher waits for a wake-up before it asks the store again (the
/// wake-ups cover the work this process queues and the timers it knows of; what is left is
/// work no wake-up announces, such as a crashed controller's expired locks). 250 ms before
/// issue 17's measurements: with 8 orchestration and 16 activity dispatchers that was ~100
/// empty fetches a second on an idle controller.
pub const IDLE_FETCH_MAX_WAIT: Duration = Duration::from_secs(1);

/// A new operation id: `op-` and 16 hex digits.
pub fn new_operation_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    operation_id_from(&hex(&bytes))
}

impl Engine {
    /// Starts the runtime with every orchestration and activity registered.
    pub async fn start(
        store: Arc<dyn Provider>,
        platform: Arc<dyn Platform>,
        cms: Arc<Cms>,
        metrics: Arc<ControllerMetrics>,
        settings: EngineSettings,
    ) -> anyhow::Result<Self> {
        let default_backup_store = crate::backups::defaults::DefaultBackupStore::resolve(
            &settings.default_backup,
            platform.default_backup_store(),
        );
        let deps = Arc::new(ActivityDeps {
            platform: Arc::clone(&platform),
            cms: Arc::clone(&cms),
            metrics,
            poll_interval: Duration::from_millis(100),
            probe_timeout: settings.probe_timeout,
            health_interval_ms: settings.actor.health_interval_ms,
            fast_path: settings.fast_path,
            watched_instances: Default::default(),
            rounds_begun: Default::default(),
            rounds_ended: Default::default(),
            probe_clients: Default::default(),
        });
        let client = Client::new(Arc::clone(&store));
        let mut background = vec![cms_janitor::spawn(Arc::clone(&cms), client.clone())];
        if settings.fast_path {
            background.push(health_watch::spawn(
                Arc::clone(&deps),
                client.clone(),
                settings.actor.max_lag_bytes,
            ));
        }
        let activities = activities::registry(deps)
            .map_err(|e| anyhow::anyhow!("register the activities: {e}"))?;
        let orchestrations = orchestrations::registry()
            .map_err(|e| anyhow::anyhow!("register the orchestrations: {e}"))?;
        let runtime = Runtime::start_with_options(
            Arc::clone(&store),
            activities,
            orchestrations,
            runtime_options(&settings),
        )
        .await;
        Ok(Self {
            runtime,
            client,
            cms,
            settings,
            default_backup_store,
            platform,
            background,
        })
    }

    /// The duroxide client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops the runtime, letting running steps finish for up to `timeout`. What is left
    /// resumes from the store at the next start.
    pub async fn shutdown(&self, timeout: Duration) {
        for task in &self.background {
            task.abort();
        }
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Arc::clone(&self.runtime).shutdown(Some(ms)).await;
    }

    /// Records a new instance and starts its *CreateInstance* operation.
    pub async fn create_instance(
        &self,
        spec: ValidatedCreateInstance,
    ) -> Result<OperationAccepted, EngineError> {
        self.create_instance_from(spec, None).await
    }

    /// Records a new instance and starts its *CreateInstance* operation; with `restore`, its
    /// primary starts from that backup ([`Engine::restore_instance`]).
    pub(super) async fn create_instance_from(
        &self,
        mut spec: ValidatedCreateInstance,
        restore: Option<RestoreSource>,
    ) -> Result<OperationAccepted, EngineError> {
        if let Some(backup) = &mut spec.backup {
            self.complete_backup_config(backup)?;
            if let Some(secret) = &backup.credentials_secret {
                self.check_store_secret(secret).await?;
            }
            if let Some(secret) = &backup.encryption_secret {
                self.check_encryption_secret(secret).await?;
            }
        }
        let operation_id = new_operation_id();
        let input = CreateInstanceInput {
            operation_id: operation_id.clone(),
            spec: spec.clone(),
            actor: self.settings.actor,
            restore,
        };
        let request = serde_json::to_value(&input).context("encode the create request")?;
        match self
            .cms
            .create_instance(&spec, &operation_id, &request)
            .await?
        {
            CreateOutcome::Created => {}
            CreateOutcome::Exists { state } => {
                return Err(EngineError::Conflict(format!(
                    "instance {} already exists (state {state})",
                    spec.name
                )))
            }
        }
        if !spec.parameters.is_empty() {
            // Desired from the start: `params get` shows them, and they follow the instance.
            let desired = spec
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            self.cms
                .set_desired_parameters(&spec.name, &desired)
                .await?;
        }
        self.start_operation(names::CREATE_INSTANCE, &operation_id, &request)
            .await?;
        if let Err(e) = self.ensure_backup_schedule(&spec.name).await {
            // The actor watch starts it later.
            tracing::warn!(instance = %spec.name, "start the backup schedule: {e:#}");
        }
        Ok(OperationAccepted {
            operation_id,
            kind: OperationKind::Create.to_string(),
            instance: spec.name,
        })
    }

    /// Starts the *DeleteInstance* operation of an instance.
    pub async fn delete_instance(
        &self,
        name: &str,
        keep_data: bool,
    ) -> Result<OperationAccepted, EngineError> {
        let instance = self
            .cms
            .get_instance(name)
            .await?
            .filter(|i| i.summary.parsed_state() != Some(InstanceState::Deleted))
            .ok_or_else(|| EngineError::NotFound(format!("instance {name} does not exist")))?;
        // A delete goes first: what waits on the instance's actor is cancelled (what runs stops
        // with the actor; the delete removes every member the platform runs).
        let cancelled = self
            .cms
            .cancel_instance_operations(name, "cancelled: the instance is being deleted")
            .await?;
        if !cancelled.is_empty() {
            tracing::info!(
                instance = name,
                ?cancelled,
                "delete cancels queued operations"
            );
        }
        if let Some((id, kind)) = self.cms.unfinished_operation(name).await? {
            return Err(EngineError::Conflict(format!(
                "instance {name} has an unfinished {kind} operation ({id}); wait for it: \
                 toygres operation wait {id}"
            )));
        }
        let operation_id = new_operation_id();
        let input = DeleteInstanceInput {
            operation_id: operation_id.clone(),
            instance: name.to_string(),
            actor_id: instance.actor_id,
            keep_data,
        };
        let request = serde_json::to_value(&input).context("encode the delete request")?;
        self.cms
            .insert_operation(&operation_id, OperationKind::Delete, name, &request)
            .await?;
        self.start_operation(names::DELETE_INSTANCE, &operation_id, &request)
            .await?;
        Ok(OperationAccepted {
            operation_id,
            kind: OperationKind::Delete.to_string(),
            instance: name.to_string(),
        })
    }

    async fn start_operation(
        &self,
        orchestration: &str,
        operation_id: &str,
        input: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.client
            .start_orchestration(
                orchestrations::operation_instance_id(operation_id),
                orchestration,
                input.to_string(),
            )
            .await
            .with_context(|| format!("start the {orchestration} orchestration"))
    }

    /// The progress an operation's orchestration last reported.
    pub async fn progress(&self, operation_id: &str) -> Option<Progress> {
        let mut status = self
            .client
            .get_orchestration_status(&orchestrations::operation_instance_id(operation_id))
            .await
            .ok()?;
        if matches!(status, OrchestrationStatus::NotFound) {
            // Not started yet: a scheduled change waiting for its time reports there.
            status = self
                .client
                .get_orchestration_status(&orchestrations::scheduled_parameters::scheduled_id(
                    operation_id,
                ))
                .await
                .ok()?;
        }
        let custom = match status {
            OrchestrationStatus::Running { custom_status, .. }
            | OrchestrationStatus::Completed { custom_status, .. }
            | OrchestrationStatus::Failed { custom_status, .. } => custom_status,
            OrchestrationStatus::NotFound => None,
        }?;
        serde_json::from_str(&custom).ok()
    }

    /// Starts the orchestrations of operations the API recorded but could not start (the
    /// controller stopped in between). Already started ones are left alone.
    pub async fn resume_pending_operations(&self) -> anyhow::Result<()> {
        for operation in self.cms.pending_operations().await? {
            let id = orchestrations::operation_instance_id(&operation.id);
            let status = self
                .client
                .get_orchestration_status(&id)
                .await
                .with_context(|| format!("read the status of operation {}", operation.id))?;
            if !matches!(status, OrchestrationStatus::NotFound) {
                continue;
            }
            if operation.kind == OperationKind::Parameters {
                // A scheduled change waits in its own orchestration, which may not have started.
                self.resume_scheduled_wait(&operation.id, &operation.request)
                    .await?;
                continue;
            }
            let orchestration = match operation.kind {
                OperationKind::Create => names::CREATE_INSTANCE,
                OperationKind::Delete => names::DELETE_INSTANCE,
                // Queued on an actor, whose durable queue keeps them (one a line, sorted).
                OperationKind::AddReplica
                | OperationKind::AutoFailover
                | OperationKind::Backup
                | OperationKind::BackupCleanup
                | OperationKind::BackupDelete
                | OperationKind::BackupVerify
                | OperationKind::CredentialsRotate
                | OperationKind::Failover
                | OperationKind::Parameters
                | OperationKind::Rejoin
                | OperationKind::RemoveReplica
                | OperationKind::RestoreInPlace
                | OperationKind::Switchover => continue,
            };
            tracing::info!(
                operation = operation.id,
                instance = operation.instance,
                "starting an operation accepted before the controller stopped"
            );
            self.start_operation(orchestration, &operation.id, &operation.request)
                .await?;
        }
        Ok(())
    }

    /// Makes sure every running instance has a live actor, starting a new one (with a new id)
    /// where it is missing or has ended.
    pub async fn ensure_actors(&self) -> anyhow::Result<()> {
        for instance in self.cms.live_instances().await? {
            // A restore in place runs in the actor: an instance restoring needs one too.
            if !matches!(
                instance.summary.parsed_state(),
                Some(InstanceState::Running | InstanceState::Restoring)
            ) {
                continue;
            }
            let name = &instance.summary.name;
            if let Some(actor_id) = &instance.actor_id {
                let status = self
                    .client
                    .get_orchestration_status(actor_id)
                    .await
                    .with_context(|| format!("read the status of {name}'s actor"))?;
                if matches!(status, OrchestrationStatus::Running { .. }) {
                    continue;
                }
            }
            let actor_id = format!("actor-{name}-{}", new_operation_id());
            self.cms.set_instance_actor(name, &actor_id).await?;
            let input = serde_json::to_string(&ActorInput::new(name, self.settings.actor))
                .context("encode the actor's input")?;
            self.client
                .start_orchestration(&actor_id, names::INSTANCE_ACTOR, input)
                .await
                .with_context(|| format!("start {name}'s actor"))?;
            tracing::info!(instance = name, actor_id, "started the instance's actor");
        }
        Ok(())
    }
}
