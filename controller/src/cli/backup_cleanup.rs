//! `toygres backup delete ID`, `toygres backup verify ID` and `toygres backup cleanup NAME
//! [--dry-run]`: delete or verify one backup, or delete those the instance's retention policy
//! does not keep (operations on the instance's actor,
//! followed until they end unless `--no-wait`), or only show what a cleanup would delete.

use toygres_common::backup_api::CleanupPlan;
use toygres_common::controller_api::OperationAccepted;

use super::args::{OpArgs, OutputFormat};
use super::client::ControllerClient;
use super::operation::{fail_unless_succeeded, wait};

/// `toygres backup delete ID` (and `verify ID`).
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// The backup (`bk-…`)
    pub id: String,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres backup cleanup NAME [--dry-run]`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("no_wait", |a| a.conflicts_with("dry_run")))]
pub struct CleanupArgs {
    pub name: String,
    /// Only show what would be kept (and why) and deleted
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub op: OpArgs,
}

/// Runs `toygres backup delete`.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let accepted: OperationAccepted = client.delete(&format!("/v1/backups/{}", args.id)).await?;
    follow(&client, &accepted, args.op.no_wait, args.op.output).await
}

/// Runs `toygres backup verify`.
pub async fn verify(args: DeleteArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let accepted: OperationAccepted = client
        .post(
            &format!("/v1/backups/{}/verify", args.id),
            &serde_json::json!({}),
        )
        .await?;
    follow(&client, &accepted, args.op.no_wait, args.op.output).await
}

/// Runs `toygres backup cleanup`.
pub async fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let path = format!("/v1/instances/{}/backups/cleanup", args.name);
    if !args.dry_run {
        let accepted: OperationAccepted = client.post(&path, &serde_json::json!({})).await?;
        return follow(&client, &accepted, args.op.no_wait, args.op.output).await;
    }
    let plan: CleanupPlan = client.get(&path).await?;
    match args.op.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        OutputFormat::Table => {
            for kept in &plan.keep {
                println!("keep    {}  ({})", kept.id, kept.reasons.join(", "));
            }
            for id in &plan.delete {
                println!("delete  {id}");
            }
        }
    }
    Ok(())
}

/// Waits for the deletion (unless `no_wait`) and prints what it did.
async fn follow(
    client: &ControllerClient,
    accepted: &OperationAccepted,
    no_wait: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let table = output == OutputFormat::Table;
    if no_wait {
        match output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(accepted)?),
            OutputFormat::Table => println!("operation {}", accepted.operation_id),
        }
        return Ok(());
    }
    let operation = wait(client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&operation)?),
        OutputFormat::Table => println!(
            "{}",
            operation
                .progress
                .as_ref()
                .map_or("done", |p| p.message.as_str())
        ),
    }
    Ok(())
}
