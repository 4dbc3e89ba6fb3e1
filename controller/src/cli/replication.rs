//! `toygres replication status|add|remove|switchover|failover NAME`: an instance's standbys,
//! and moving the primary role.

use toygres_common::controller_api::{
    AddReplicaRequest, FailoverRequest, Operation, OperationAccepted, ReplicationStatus,
    SwitchoverRequest,
};

use super::args::{InstanceArgs, OpArgs, OutputFormat};
use super::client::ControllerClient;
use super::instances::{lag_cell, last_check};
use super::operation::{fail_unless_succeeded, wait};
use super::table::columns;

/// The flags of `toygres replication`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationArgs {
    #[command(subcommand)]
    pub command: ReplicationCommand,
}

/// The subcommands of `toygres replication`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ReplicationCommand {
    /// Show the members, their roles, lag and sync state
    Status(InstanceArgs),
    /// Add a standby
    Add(AddArgs),
    /// Remove a standby
    Remove(RemoveArgs),
    /// Hand the primary role to a standby (planned; the primary is healthy)
    Switchover(SwitchoverArgs),
    /// Promote a standby because the primary is down (refused while it is healthy, unless
    /// --force)
    Failover(FailoverArgs),
}

/// `toygres replication switchover NAME [--to MEMBER]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SwitchoverArgs {
    pub name: String,
    /// The standby to promote [default: the most caught-up eligible one]
    #[arg(long)]
    pub to: Option<String>,
    /// What becomes of the old primary: convert_to_replica, stop_and_retain or terminate
    #[arg(long, default_value = "convert_to_replica")]
    pub old_primary_action: String,
    /// Do not wait for the target to catch up before holding writes
    #[arg(long)]
    pub no_wait_for_sync: bool,
    /// Seconds to wait for the target to catch up
    #[arg(long, default_value_t = 60)]
    pub sync_timeout: u64,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres replication failover NAME [--to MEMBER] [--force]`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    pub name: String,
    /// The standby to promote [default: the most caught-up eligible one]
    #[arg(long)]
    pub to: Option<String>,
    /// Fail over even though the primary answers (it is fenced first)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres replication add NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct AddArgs {
    pub name: String,
    /// The new member's name (`<instance>-<n>`) [default: the next free one]
    #[arg(long = "member")]
    pub member: Option<String>,
    /// Placement hint: the zone to run in
    #[arg(long)]
    pub zone: Option<String>,
    /// Placement hint: the pod's size
    #[arg(long)]
    pub size: Option<String>,
    /// sync (may confirm commits; the default in a sync instance) or async (never synchronous)
    #[arg(long, value_parser = ["sync", "async"])]
    pub mode: Option<String>,
    /// Its own lag bound (bytes): beyond it, it leaves the ro endpoint
    #[arg(long, value_name = "BYTES")]
    pub max_lag_bytes: Option<u64>,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres replication remove NAME MEMBER`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoveArgs {
    pub name: String,
    /// The standby to remove (`<instance>-<n>`)
    pub member: String,
    /// Keep its data directory
    #[arg(long)]
    pub keep_data: bool,
    #[command(flatten)]
    pub op: OpArgs,
}

/// Runs `toygres replication …`.
pub async fn run(args: ReplicationArgs) -> anyhow::Result<()> {
    match args.command {
        ReplicationCommand::Status(args) => {
            let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
            let status: ReplicationStatus = client
                .get(&format!("/v1/instances/{}/replicas", args.name))
                .await?;
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                OutputFormat::Table => print!("{}", render_status(&status)),
            }
            Ok(())
        }
        ReplicationCommand::Add(args) => {
            let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
            let request = AddReplicaRequest {
                name: args.member,
                zone: args.zone,
                size: args.size,
                mode: args.mode,
                max_lag_bytes: args.max_lag_bytes,
            };
            let accepted: OperationAccepted = client
                .post(&format!("/v1/instances/{}/replicas", args.name), &request)
                .await?;
            follow(&client, accepted, args.op.no_wait, args.op.output).await
        }
        ReplicationCommand::Remove(args) => {
            let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
            let mut path = format!("/v1/instances/{}/replicas/{}", args.name, args.member);
            if args.keep_data {
                path.push_str("?keep_data=true");
            }
            let accepted: OperationAccepted = client.delete(&path).await?;
            follow(&client, accepted, args.op.no_wait, args.op.output).await
        }
        ReplicationCommand::Switchover(args) => {
            let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
            let request = SwitchoverRequest {
                to: args.to,
                wait_for_sync: Some(!args.no_wait_for_sync),
                sync_timeout_secs: Some(args.sync_timeout),
                old_primary_action: Some(args.old_primary_action),
            };
            let accepted: OperationAccepted = client
                .post(&format!("/v1/instances/{}/switchover", args.name), &request)
                .await?;
            follow(&client, accepted, args.op.no_wait, args.op.output).await
        }
        ReplicationCommand::Failover(args) => {
            let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
            let request = FailoverRequest {
                to: args.to,
                force: args.force,
            };
            let accepted: OperationAccepted = client
                .post(&format!("/v1/instances/{}/failover", args.name), &request)
                .await?;
            follow(&client, accepted, args.op.no_wait, args.op.output).await
        }
    }
}

/// The handover summary of a finished switchover or failover, for the table output.
fn handover_summary(operation: &Operation) -> Option<String> {
    let handover = operation.progress.as_ref()?.handover.as_ref()?;
    let mut line = format!(
        "Primary: {} -> {}",
        handover.old_primary.as_deref().unwrap_or("none"),
        handover.new_primary.as_deref().unwrap_or("none")
    );
    if let Some(lag) = handover.lag_bytes_at_start {
        line.push_str(&format!("; lag at start {lag} B"));
    }
    if let Some(loss) = handover.data_loss_bytes {
        line.push_str(&format!("; data loss {loss} B"));
    }
    Some(line)
}

/// Follows a queued operation until it ends (unless `no_wait`) and prints its outcome.
pub(super) async fn follow(
    client: &ControllerClient,
    accepted: OperationAccepted,
    no_wait: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    if no_wait {
        match output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&accepted)?),
            OutputFormat::Table => println!(
                "Operation {} ({}) queued; follow it with: toygres operation wait {}",
                accepted.operation_id, accepted.kind, accepted.operation_id
            ),
        }
        return Ok(());
    }
    let table = output == OutputFormat::Table;
    let operation = wait(client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&operation)?),
        OutputFormat::Table => {
            println!(
                "Operation {} ({}) succeeded in {:.1} s.",
                operation.id, operation.kind, operation.elapsed_seconds
            );
            if let Some(summary) = handover_summary(&operation) {
                println!("{summary}");
            }
        }
    }
    Ok(())
}

fn render_status(status: &ReplicationStatus) -> String {
    let mut out = format!(
        "Instance {}: {} replication, {} replica{}\n\n",
        status.instance,
        status.replication_mode,
        status.replicas,
        if status.replicas == 1 { "" } else { "s" }
    );
    let mut rows = vec![[
        "MEMBER",
        "ROLE",
        "HEALTH",
        "LAG",
        "SYNC",
        "TIMELINE",
        "LAST CHECK",
    ]
    .map(String::from)];
    for m in &status.members {
        rows.push([
            m.name.clone(),
            m.role.clone(),
            m.health.clone(),
            lag_cell(m),
            m.sync_state.clone().unwrap_or_else(|| "-".into()),
            m.timeline.map_or_else(|| "-".into(), |t| t.to_string()),
            last_check(m.last_check_age_seconds),
        ]);
    }
    out.push_str(&columns(&rows));
    out
}
