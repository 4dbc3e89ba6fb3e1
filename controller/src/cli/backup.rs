//! `toygres backup create|list|get …`: take a backup of an instance (an operation on its actor,
//! followed until it ends unless `--no-wait`) and read the backups the controller recorded.

use toygres_common::backup_api::{BackupAccepted, BackupList, BackupView, CreateBackupRequest};

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;
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
    List(ListArgs),
    /// Show one backup
    Get(GetArgs),
}

/// `toygres backup create NAME [--kind base|logical] [--label L]`.
#[derive(Debug, Clone, clap::Args)]
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
    /// Print the operation and backup ids and return at once
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `toygres backup list NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
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
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let request = CreateBackupRequest {
        kind: Some(args.kind),
        label: args.label,
        databases: args.databases,
    };
    let accepted: BackupAccepted = client
        .post(&format!("/v1/instances/{}/backups", args.name), &request)
        .await?;
    let table = args.output == OutputFormat::Table;
    if args.no_wait {
        match args.output {
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
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&backup)?),
        OutputFormat::Table => print!("{}", render_one(&backup)),
    }
    Ok(())
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
            b.status,
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
        ("status", b.status.clone()),
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
    ];
    rows.iter().map(|(k, v)| format!("{k:<13} {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let text = render_list(std::slice::from_ref(&backup));
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("bk-1") && text.contains("1234") && text.contains("before upgrade"));
        assert!(render_one(&backup).contains("from standby  true"));
    }
}
