//! `toygres backup create|list|get|schedule …`: take a backup of an instance (an operation on its actor,
//! followed until it ends unless `--no-wait`) and read the backups the controller recorded.
//! `toygres restore SOURCE --to NEW …` (also `toygres backup restore`): make a new instance from
//! a source's backups. `toygres backup restore-point NAME POINT`: a named point to restore to.
//! `toygres backup rotate-key NAME --new-key SECRET`: encrypt from now on with another key.

use toygres_common::backup_api::{
    BackupAccepted, BackupList, BackupScheduleRequest, BackupScheduleView, BackupView,
    CreateBackupRequest, RestorePointCreate, RestorePointView, RestoreRequest, RotateKeyRequest,
    RotateKeyView,
};
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

use super::args::{ClientArgs, InstanceArgs, OpArgs, OutputFormat};
use super::backup_cleanup::{CleanupArgs, DeleteArgs};
use super::client::ControllerClient;
use super::instances::render_connection;
use super::operation::{fail_unless_succeeded, wait};

/// The flags of `toygres backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: BackupCommand,
}

/// The subcommands of `toygres backup`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupCommand {
    /// Take a backup of an instance (from a healthy standby when there is one)
    Create(CreateArgs),
    /// List an instance's backups, newest first
    List(InstanceArgs),
    /// Show one backup
    Get(GetArgs),
    /// Show, change, suspend or resume an instance's scheduled base and logical backups
    Schedule(ScheduleArgs),
    /// Delete the backups the instance's retention policy does not keep (or, with
    /// --dry-run, show them)
    Cleanup(CleanupArgs),
    /// Delete a backup from the store, with the archived WAL only it needed
    Delete(DeleteArgs),
    /// Verify a base backup: restore it aside on a member, check it and query every database
    Verify(DeleteArgs),
    /// Make a new instance from this one's backups, or replace its data (--in-place), as
    /// `toygres restore`
    Restore(RestoreArgs),
    /// Make a named restore point on the primary (archived at once) for `restore --name`
    RestorePoint(RestorePointArgs),
    /// Encrypt new WAL and backups with the key in another store secret (objects of the old
    /// key stay readable)
    RotateKey(RotateKeyArgs),
}

/// `toygres backup rotate-key NAME --new-key SECRET`.
#[derive(Debug, Clone, clap::Args)]
pub struct RotateKeyArgs {
    pub name: String,
    /// The store secret holding the new key (TOYGRES_BACKUP_ENCRYPTION_KEY, 64 hex digits;
    /// registered with `toygres secret set`): its name, never the key
    #[arg(long, value_name = "SECRET")]
    pub new_key: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `toygres backup restore-point NAME POINT`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestorePointArgs {
    pub name: String,
    /// The restore point's name (1 to 63 bytes, no control characters)
    pub point: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `toygres backup schedule NAME [CRON] [--logical CRON] [--suspend | --resume]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    pub name: String,
    /// The new cron expression of base backups (five fields, or six with seconds first;
    /// `@daily` …)
    pub cron: Option<String>,
    /// The new cron expression of logical backups of every database [default: 0 2 * * *]
    #[arg(long, value_name = "CRON")]
    pub logical: Option<String>,
    /// Stop taking scheduled backups (WAL is still archived)
    #[arg(long, conflicts_with = "resume")]
    pub suspend: bool,
    /// Take scheduled backups again
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `toygres backup create NAME [--kind base|logical] [--label L]`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("no_wait", |a| a.help("Print the operation and backup ids and return at once")))]
pub struct CreateArgs {
    pub name: String,
    /// What to take
    #[arg(long, value_parser = ["base", "logical"], default_value = "base")]
    pub kind: String,
    /// A text to find the backup by
    #[arg(long)]
    pub label: Option<String>,
    /// Logical backups: a database to dump (repeatable) [default: postgres]
    #[arg(long = "database")]
    pub databases: Vec<String>,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres backup get ID`.
#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres backup …`.
pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    match args.command {
        BackupCommand::Create(args) => create(args).await,
        BackupCommand::List(args) => {
            let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
            let list: BackupList = client
                .get(&format!("/v1/instances/{}/backups", args.name))
                .await?;
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                OutputFormat::Table => print!("{}", render_list(&list.backups)),
            }
            Ok(())
        }
        BackupCommand::Schedule(args) => schedule(args).await,
        BackupCommand::Cleanup(args) => super::backup_cleanup::cleanup(args).await,
        BackupCommand::Delete(args) => super::backup_cleanup::delete(args).await,
        BackupCommand::Verify(args) => super::backup_cleanup::verify(args).await,
        BackupCommand::Restore(args) => restore(args).await,
        BackupCommand::RestorePoint(args) => restore_point(args).await,
        BackupCommand::RotateKey(args) => rotate_key(args).await,
        BackupCommand::Get(args) => {
            let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
            let backup: BackupView = client.get(&format!("/v1/backups/{}", args.id)).await?;
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&backup)?),
                OutputFormat::Table => print!("{}", render_one(&backup)),
            }
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let request = CreateBackupRequest {
        kind: Some(args.kind),
        label: args.label,
        databases: args.databases,
    };
    let accepted: BackupAccepted = client
        .post(&format!("/v1/instances/{}/backups", args.name), &request)
        .await?;
    let table = args.op.output == OutputFormat::Table;
    if args.op.no_wait {
        match args.op.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&accepted)?),
            OutputFormat::Table => println!(
                "backup {} (operation {})",
                accepted.backup_id, accepted.operation_id
            ),
        }
        return Ok(());
    }
    if table {
        eprintln!(
            "Backing up {} as {} (operation {})",
            accepted.instance, accepted.backup_id, accepted.operation_id
        );
    }
    let operation = wait(&client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    let backup: BackupView = client
        .get(&format!("/v1/backups/{}", accepted.backup_id))
        .await?;
    match args.op.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&backup)?),
        OutputFormat::Table => print!("{}", render_one(&backup)),
    }
    Ok(())
}

async fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let path = format!("/v1/instances/{}/backups/schedule", args.name);
    let change = BackupScheduleRequest {
        base_schedule: args.cron.clone(),
        logical_schedule: args.logical.clone(),
        suspended: (args.suspend || args.resume).then_some(args.suspend),
    };
    let view: BackupScheduleView = if change == BackupScheduleRequest::default() {
        client.get(&path).await?
    } else {
        client.put(&path, &change).await?
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        OutputFormat::Table => {
            let state = if view.suspended {
                "suspended"
            } else {
                "active"
            };
            println!("schedule          {} ({state})", view.base_schedule);
            println!("next run          {}", or_dash(view.next_run.as_deref()));
            if let Some(logical) = &view.logical_schedule {
                println!("logical schedule  {logical} ({state})");
                println!(
                    "next logical run  {}",
                    or_dash(view.next_logical_run.as_deref())
                );
            }
        }
    }
    Ok(())
}

/// Runs `toygres backup rotate-key`.
async fn rotate_key(args: RotateKeyArgs) -> anyhow::Result<()> {
    toygres_common::backup_api::validate_encryption_secret_name(&args.new_key)
        .map_err(|e| anyhow::anyhow!("--new-key: {}", e.message))?;
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let rotated: RotateKeyView = client
        .post(
            &format!("/v1/instances/{}/backups/rotate-key", args.name),
            &RotateKeyRequest {
                new_secret: args.new_key,
            },
        )
        .await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rotated)?),
        OutputFormat::Table => {
            println!("instance          {}", rotated.instance);
            println!("encryption key    {}", rotated.encryption_secret);
            println!(
                "key id            {}",
                rotated.key_id.as_deref().unwrap_or("-")
            );
            println!(
                "previous keys     {}",
                if rotated.previous_encryption_secrets.is_empty() {
                    "-".to_string()
                } else {
                    rotated.previous_encryption_secrets.join(", ")
                }
            );
            println!("members           {}", rotated.members.join(", "));
            if !rotated.pending.is_empty() {
                println!(
                    "not reached       {} (they take the key when they start)",
                    rotated.pending.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Runs `toygres backup restore-point`.
async fn restore_point(args: RestorePointArgs) -> anyhow::Result<()> {
    toygres_common::backup_api::validate_restore_point_name(&args.point)
        .map_err(anyhow::Error::msg)?;
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let made: RestorePointView = client
        .post(
            &format!("/v1/instances/{}/backups/restore-points", args.name),
            &RestorePointCreate { name: args.point },
        )
        .await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&made)?),
        OutputFormat::Table => {
            println!("restore point  {}", made.name);
            println!("lsn            {}", made.lsn);
            println!("member         {}", made.member);
            println!("archived       {}", made.archived);
        }
    }
    Ok(())
}

/// `toygres restore SOURCE --to NEW [--time T | --lsn L | --xid X | --name POINT] [--backup ID]
/// [--replicas N]`, or `toygres restore NAME --in-place --confirm NAME [target] [--backup ID]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The instance whose backups are restored (not changed unless --in-place)
    pub source: String,
    /// The new instance's name
    #[arg(long, value_name = "NEW", required_unless_present = "in_place")]
    pub to: Option<String>,
    /// Replace the instance's own data instead (its old data is kept until the restored
    /// primary accepts writes; its standbys are cloned again); needs --confirm
    #[arg(
        long,
        conflicts_with_all = ["to", "replicas", "replication", "backup_encryption_key"]
    )]
    pub in_place: bool,
    /// With --in-place: the instance's name again
    #[arg(long, value_name = "NAME", requires = "in_place")]
    pub confirm: Option<String>,
    /// Recover to this time (RFC 3339 with a zone, e.g. 2026-12-04T15:30:00Z)
    #[arg(long, group = "target")]
    pub time: Option<String>,
    /// Recover to this WAL position (e.g. 0/3000060)
    #[arg(long, group = "target")]
    pub lsn: Option<String>,
    /// Recover to just after this transaction commits (txid_current()) [starts from the
    /// oldest backup unless --backup]
    #[arg(long, group = "target", value_parser = clap::value_parser!(u64).range(3..))]
    pub xid: Option<u64>,
    /// Recover to this restore point (`backup restore-point`) [starts from the oldest backup
    /// unless --backup]
    #[arg(long = "name", value_name = "POINT", group = "target", value_parser = point_name)]
    pub restore_point: Option<String>,
    /// Start from this base backup of the source [default: the newest before the target]
    #[arg(long = "backup", value_name = "ID")]
    pub backup_id: Option<String>,
    /// Standbys of the new instance, cloned from its restored primary
    #[arg(long, default_value_t = 0)]
    pub replicas: i64,
    /// Replication mode of the new instance
    #[arg(long, value_parser = ["sync", "async"], default_value = "async")]
    pub replication: String,
    /// The store secret holding the key the source's backups were encrypted with [default:
    /// the source's]; the new instance encrypts with it too
    #[arg(long, value_name = "SECRET")]
    pub backup_encryption_key: Option<String>,
    #[command(flatten)]
    pub op: OpArgs,
}

/// Runs `toygres restore`: waits for the new instance unless `--no-wait`, then prints how to
/// connect to it.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if args.in_place && args.confirm.as_deref() != Some(args.source.as_str()) {
        anyhow::bail!(
            "an in-place restore replaces the data of {0} (its standbys are cloned again): \
             confirm it with --confirm {0}",
            args.source
        );
    }
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let to = args.to.clone().unwrap_or_else(|| args.source.clone());
    let request = RestoreRequest {
        to: args.to.clone().unwrap_or_default(),
        time: args.time.clone(),
        lsn: args.lsn.clone(),
        xid: args.xid,
        restore_point: args.restore_point.clone(),
        backup_id: args.backup_id.clone(),
        replicas: args.replicas,
        replication: (!args.in_place).then(|| args.replication.clone()),
        encryption_secret: args.backup_encryption_key.clone(),
        in_place: args.in_place,
        confirm: args.confirm.clone(),
    };
    let accepted: OperationAccepted = client
        .post(&format!("/v1/instances/{}/restore", args.source), &request)
        .await?;
    let table = args.op.output == OutputFormat::Table;
    if args.op.no_wait {
        match args.op.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&accepted)?),
            OutputFormat::Table => println!("operation {}", accepted.operation_id),
        }
        return Ok(());
    }
    if table && args.in_place {
        eprintln!(
            "Restoring {} in place (operation {})",
            args.source, accepted.operation_id
        );
    } else if table {
        eprintln!(
            "Restoring {} into {} (operation {})",
            args.source, accepted.instance, accepted.operation_id
        );
    }
    let operation = wait(&client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    let detail: InstanceDetail = client.get(&format!("/v1/instances/{to}")).await?;
    match args.op.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
        OutputFormat::Table => {
            if args.in_place {
                eprintln!(
                    "Instance {to} is running, restored in place ({:.1} s).",
                    operation.elapsed_seconds
                );
            } else {
                eprintln!(
                    "Instance {to} is running, restored from {} ({:.1} s).",
                    args.source, operation.elapsed_seconds
                );
            }
            print!("{}", render_connection(&detail));
        }
    }
    Ok(())
}

/// `--name`: a restore point name, checked before anything is sent.
fn point_name(text: &str) -> Result<String, String> {
    toygres_common::backup_api::validate_restore_point_name(text)?;
    Ok(text.to_string())
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// One line per backup.
fn render_list(backups: &[BackupView]) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:<10} {:<12} {:>14} {:<20} {}\n",
        "ID", "KIND", "STATUS", "MEMBER", "STORED BYTES", "STARTED", "LABEL"
    );
    for b in backups {
        out.push_str(&format!(
            "{:<20} {:<8} {:<10} {:<12} {:>14} {:<20} {}\n",
            b.id,
            b.kind,
            if b.abandoned { "abandoned" } else { &b.status },
            or_dash(b.member.as_deref()),
            or_dash(b.stored_bytes),
            b.started_at,
            b.label.as_deref().unwrap_or("")
        ));
    }
    out
}

/// One backup, a field a line.
fn render_one(b: &BackupView) -> String {
    let rows = [
        ("id", b.id.clone()),
        ("instance", b.instance.clone()),
        ("kind", b.kind.clone()),
        (
            "status",
            if b.abandoned {
                format!(
                    "{} (abandoned: an in-place restore went back before it; restores start \
                     from other backups)",
                    b.status
                )
            } else {
                b.status.clone()
            },
        ),
        ("label", or_dash(b.label.as_deref())),
        ("member", or_dash(b.member.as_deref())),
        ("from standby", b.from_standby.to_string()),
        ("store path", or_dash(b.store_path.as_deref())),
        ("raw bytes", or_dash(b.raw_bytes)),
        ("stored bytes", or_dash(b.stored_bytes)),
        ("start lsn", or_dash(b.start_lsn.as_deref())),
        ("stop lsn", or_dash(b.stop_lsn.as_deref())),
        ("timeline", or_dash(b.timeline)),
        ("started", b.started_at.clone()),
        ("finished", or_dash(b.finished_at.as_deref())),
        ("error", or_dash(b.error.as_deref())),
        ("verified", verification_line(b.verification.as_ref())),
    ];
    rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect()
}

/// The last verification in one line: `ok at T (N ms on M): …` or `FAILED at T: …`.
fn verification_line(verification: Option<&serde_json::Value>) -> String {
    let Some(v) = verification else {
        return "-".into();
    };
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
    if v.get("ok").and_then(|x| x.as_bool()) == Some(true) {
        format!(
            "ok at {} ({} ms on {}): {}",
            text("verified_at"),
            v.get("duration_ms").and_then(|x| x.as_u64()).unwrap_or(0),
            text("member"),
            text("message")
        )
    } else {
        format!("FAILED at {}: {}", text("verified_at"), text("message"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verification_is_one_line() {
        assert_eq!(verification_line(None), "-");
        let ok = serde_json::json!({"ok": true, "message": "3 databases", "duration_ms": 812,
            "member": "db-1", "verified_at": "2026-12-04T22:00:00Z"});
        assert_eq!(
            verification_line(Some(&ok)),
            "ok at 2026-12-04T22:00:00Z (812 ms on db-1): 3 databases"
        );
        let bad = serde_json::json!({"ok": false, "message": "sha256 mismatch",
            "verified_at": "2026-12-04T22:00:00Z"});
        assert_eq!(
            verification_line(Some(&bad)),
            "FAILED at 2026-12-04T22:00:00Z: sha256 mismatch"
        );
    }

    #[test]
    fn a_backup_list_shows_one_line_per_backup() {
        let backup = BackupView {
            id: "bk-1".into(),
            instance: "db".into(),
            kind: "base".into(),
            label: Some("before upgrade".into()),
            status: "succeeded".into(),
            operation_id: None,
            member: Some("db-1".into()),
            from_standby: true,
            store_path: None,
            raw_bytes: None,
            stored_bytes: Some(1234),
            start_lsn: None,
            stop_lsn: None,
            timeline: None,
            started_at: "2026-12-04T13:00:00Z".into(),
            finished_at: None,
            error: None,
            verification: None,
            abandoned: false,
        };
        let text = render_list(std::slice::from_ref(&backup));
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("bk-1") && text.contains("1234") && text.contains("before upgrade"));
        assert!(render_one(&backup).contains("from standby  true"));
        let abandoned = BackupView {
            abandoned: true,
            ..backup
        };
        assert!(render_list(std::slice::from_ref(&abandoned)).contains(" abandoned "));
        assert!(render_one(&abandoned).contains("succeeded (abandoned"));
    }
}
