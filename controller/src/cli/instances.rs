//! `toygres create`, `get` and `delete`: one instance's life from the command line.

use toygres_common::backup_api::{BackupConfigRequest, RetentionSettings};
use toygres_common::controller_api::{
    ConnectionInfo, CreateInstanceRequest, InstanceDetail, InstanceSize, MemberView,
    OperationAccepted, MAX_REPLICAS,
};
use toygres_common::domain::Role;

use super::args::{InstanceArgs, OpArgs, OutputFormat};
use super::client::ControllerClient;
use super::operation::{fail_unless_succeeded, wait};
use super::params::{memory_mb, parse_settings};
use super::table::columns;

/// The flags of `toygres create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// The instance's name: lowercase letters, digits and '-', starting with a letter, at most 40
    pub name: String,
    /// Standbys besides the primary
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=i64::from(MAX_REPLICAS)))]
    pub replicas: i64,
    /// How standbys acknowledge commits
    #[arg(long, value_parser = ["sync", "async"], default_value = "async")]
    pub replication: String,
    /// No backups and no WAL archiving (on by default, into the platform's backup store)
    #[arg(long, conflicts_with = "backup_store")]
    pub no_backup: bool,
    /// The backup store (`file:///path`, `s3://bucket/prefix`, …) instead of the platform's
    #[arg(long)]
    pub backup_store: Option<String>,
    /// The store secret holding the store's credentials (registered with `toygres secret set`;
    /// on Kubernetes, a Secret's name)
    #[arg(long, value_name = "SECRET", conflicts_with = "no_backup")]
    pub backup_credentials: Option<String>,
    /// Encrypt WAL and backups with the key in this store secret (its
    /// TOYGRES_BACKUP_ENCRYPTION_KEY, 64 hex digits; registered with `toygres secret set`)
    #[arg(long, value_name = "SECRET", conflicts_with = "no_backup")]
    pub backup_encryption_key: Option<String>,
    /// Cron expression of scheduled base backups [default: Sundays at 01:00 UTC]
    #[arg(long, conflicts_with = "no_backup")]
    pub backup_schedule: Option<String>,
    /// How WAL and base backups are compressed [default: zstd]
    #[arg(long, value_parser = toygres_common::backup_api::COMPRESSIONS, conflicts_with = "no_backup")]
    pub backup_compression: Option<String>,
    /// Retention: keep the newest backup of each of the last N days [default: 7]
    #[arg(long, value_name = "N", conflicts_with = "no_backup")]
    pub keep_daily: Option<u32>,
    /// Retention: keep the newest backup of each of the last N ISO weeks [default: 4]
    #[arg(long, value_name = "N", conflicts_with = "no_backup")]
    pub keep_weekly: Option<u32>,
    /// Retention: keep the newest backup of each of the last N months [default: 3]
    #[arg(long, value_name = "N", conflicts_with = "no_backup")]
    pub keep_monthly: Option<u32>,
    /// Retention: also keep every backup of the last DAYS days, and the one before them (a
    /// recovery window)
    #[arg(long, value_name = "DAYS", conflicts_with = "no_backup")]
    pub recovery_window_days: Option<u32>,
    /// The application database [default: the instance's name]
    #[arg(long)]
    pub database: Option<String>,
    /// The role that owns the application database, what applications log in as [default: the
    /// instance's name]
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub ro: super::ro::CreateRoFlags,
    /// A Postgres parameter to start with, as key=value (repeat it for more)
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// A tuning profile sized to --memory and --cpus (oltp, analytics, general, development)
    #[arg(long, requires_all = ["memory", "cpus"])]
    pub profile: Option<String>,
    /// The instance's declared memory (e.g. 4GB, 512MB)
    #[arg(long, requires = "cpus")]
    pub memory: Option<String>,
    /// The instance's declared CPUs
    #[arg(long, requires = "memory")]
    pub cpus: Option<u32>,
    /// The storage the data lives on (ssd, hdd, san)
    #[arg(long, requires = "memory")]
    pub storage: Option<String>,
    #[command(flatten)]
    pub op: OpArgs,
}

/// The flags of `toygres delete`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    pub name: String,
    /// Keep the members' data directories
    #[arg(long)]
    pub keep_data: bool,
    #[command(flatten)]
    pub op: OpArgs,
}

/// Creates an instance, waits for it with a progress display, and prints how to connect.
pub async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let keep = [
        args.keep_daily,
        args.keep_weekly,
        args.keep_monthly,
        args.recovery_window_days,
    ];
    let retention = keep.iter().any(Option::is_some).then(|| {
        let defaults = RetentionSettings::default();
        RetentionSettings {
            daily: args.keep_daily.unwrap_or(defaults.daily),
            weekly: args.keep_weekly.unwrap_or(defaults.weekly),
            monthly: args.keep_monthly.unwrap_or(defaults.monthly),
            window_days: args.recovery_window_days,
        }
    });
    let request = CreateInstanceRequest {
        name: args.name.clone(),
        replicas: args.replicas,
        replication: Some(args.replication.clone()),
        ha: None,
        backup: (args.no_backup
            || args.backup_store.is_some()
            || args.backup_credentials.is_some()
            || args.backup_encryption_key.is_some()
            || args.backup_schedule.is_some()
            || args.backup_compression.is_some()
            || retention.is_some())
        .then(|| BackupConfigRequest {
            enabled: Some(!args.no_backup),
            store_url: args.backup_store.clone(),
            credentials_secret: args.backup_credentials.clone(),
            encryption_secret: args.backup_encryption_key.clone(),
            base_schedule: args.backup_schedule.clone(),
            compression: args.backup_compression.clone(),
            retention,
            ..BackupConfigRequest::default()
        }),
        database: args.database.clone(),
        owner: args.owner.clone(),
        ro: args.ro.patch(),
        parameters: parse_settings(&args.params)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        profile: args.profile.clone(),
        size: match (&args.memory, args.cpus) {
            (Some(memory), Some(cpus)) => Some(InstanceSize {
                memory_mb: memory_mb(memory)?,
                cpus,
                storage: args.storage.clone(),
            }),
            _ => None,
        },
    };
    let accepted: OperationAccepted = client.post("/v1/instances", &request).await?;
    let table = args.op.output == OutputFormat::Table;
    if args.op.no_wait {
        return print_accepted(&accepted, args.op.output);
    }
    if table {
        eprintln!(
            "Creating instance {} (operation {})",
            accepted.instance, accepted.operation_id
        );
    }
    let operation = wait(&client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    let detail: InstanceDetail = client.get(&format!("/v1/instances/{}", args.name)).await?;
    match args.op.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
        OutputFormat::Table => {
            eprintln!(
                "Instance {} is running ({:.1} s).",
                args.name, operation.elapsed_seconds
            );
            print!("{}", render_connection(&detail));
        }
    }
    Ok(())
}

/// Prints an instance.
pub async fn get(args: InstanceArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let detail: InstanceDetail = client.get(&format!("/v1/instances/{}", args.name)).await?;
    match args.output {
        OutputFormat::Json => {
            let mut json = serde_json::to_value(&detail)?;
            super::backup_summary::add_backup_json(&client, &args.name, &mut json).await;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        OutputFormat::Table => {
            print!("{}", render_instance(&detail));
            if let Some(section) = super::backup_summary::backup_section(&client, &args.name).await
            {
                print!("{section}");
            }
        }
    }
    Ok(())
}

/// Deletes an instance and waits until it is gone.
pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let path = if args.keep_data {
        format!("/v1/instances/{}?keep_data=true", args.name)
    } else {
        format!("/v1/instances/{}", args.name)
    };
    let accepted: OperationAccepted = client.delete(&path).await?;
    if args.op.no_wait {
        return print_accepted(&accepted, args.op.output);
    }
    let table = args.op.output == OutputFormat::Table;
    let operation = wait(&client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    match args.op.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&operation)?),
        OutputFormat::Table => println!("Instance {} deleted.", args.name),
    }
    Ok(())
}

fn print_accepted(accepted: &OperationAccepted, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(accepted)?),
        OutputFormat::Table => println!(
            "Operation {} ({}) started; follow it with: toygres operation wait {}",
            accepted.operation_id, accepted.kind, accepted.operation_id
        ),
    }
    Ok(())
}

/// How to connect, never with the password: applications connect as the owner of the
/// application database, with URIs that name a password file; otherwise it says where the
/// password is.
pub fn render_connection(detail: &InstanceDetail) -> String {
    let Some(connection) = &detail.connection else {
        return "No endpoints yet.\n".to_string();
    };
    let Some(app) = &connection.app else {
        return render_superuser_connection(connection);
    };
    let mut out = format!(
        "Database:    {} (owner {})\nRead-write:  {}\nRead-only:   {}\nMulti-host:  {}\n",
        app.database, app.user, app.rw, app.ro, app.multi_host
    );
    match (&app.passfile, &app.password_location) {
        (Some(passfile), _) => out.push_str(&format!(
            "Password:    read by libpq from {passfile} (named in the URIs)\n"
        )),
        (None, Some(location)) => out.push_str(&format!("Password:    in {location}\n")),
        (None, None) => {}
    }
    out.push_str(&format!(
        "Session:     toygres psql {name} [--ro] [--superuser]\n",
        name = detail.summary.name
    ));
    out
}

/// The superuser's connection, for an instance made before instances had an application
/// database.
fn render_superuser_connection(connection: &ConnectionInfo) -> String {
    let mut out = format!(
        "Read-write:  {}\nRead-only:   {}\nMulti-host:  {}\n",
        connection.rw, connection.ro, connection.multi_host
    );
    if let Some(location) = &connection.password_location {
        out.push_str(&format!(
            "Password:    in {location}\n             (for example: PGPASSWORD=\"$(cat {location})\" psql '{}')\n",
            connection.rw
        ));
    }
    out
}

/// An instance for people: its state, members and how to connect.
pub fn render_instance(detail: &InstanceDetail) -> String {
    let s = &detail.summary;
    let mut out = format!(
        "Name:         {}\nState:        {}\nHealth:       {}\nReplication:  {} ({} replica{})\n",
        s.name,
        s.state,
        s.health,
        s.replication_mode,
        detail.replicas,
        if detail.replicas == 1 { "" } else { "s" }
    );
    if let Some(size) = &detail.size {
        out.push_str(&format!(
            "Size:         {} MiB memory, {} CPU{}, {} storage\n",
            size.memory_mb,
            size.cpus,
            if size.cpus == 1 { "" } else { "s" },
            size.storage.as_deref().unwrap_or("ssd")
        ));
    }
    if let Some(operation) = &detail.last_operation {
        out.push_str(&format!("Operation:    {operation}\n"));
    }
    out.push('\n');
    let mut rows = vec![[
        "MEMBER",
        "ROLE",
        "STATE",
        "HEALTH",
        "ADDRESS",
        "LAG",
        "SYNC",
        "LAST CHECK",
    ]
    .map(String::from)];
    for m in &detail.members {
        rows.push([
            m.name.clone(),
            m.role.clone(),
            m.state.clone(),
            m.health.clone(),
            m.address.clone().unwrap_or_else(|| "-".into()),
            lag_cell(m),
            m.sync_state.clone().unwrap_or_else(|| "-".into()),
            last_check(m.last_check_age_seconds),
        ]);
    }
    out.push_str(&columns(&rows));
    out.push('\n');
    if let Some(ro) = &detail.ro {
        out.push_str(&super::ro::render_endpoint(ro));
        out.push('\n');
    }
    out.push_str(&render_connection(detail));
    out
}

/// A member's lag for a table: `-` for the primary, `?` when unknown.
pub(super) fn lag_cell(m: &MemberView) -> String {
    match (m.parsed_role(), m.lag_bytes) {
        (Role::Primary, _) => "-".into(),
        (_, Some(lag)) => format!("{lag} B"),
        (_, None) => "?".into(),
    }
}

/// "2 seconds ago", "never".
pub fn last_check(age_seconds: Option<f64>) -> String {
    match age_seconds {
        None => "never".into(),
        Some(age) => {
            let age = age.max(0.0).round() as u64;
            match age {
                1 => "1 second ago".into(),
                a if a < 120 => format!("{a} seconds ago"),
                a => format!("{} minutes ago", a / 60),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_check_reads_like_a_person_would_say_it() {
        assert_eq!(last_check(None), "never");
        assert_eq!(last_check(Some(1.2)), "1 second ago");
        assert_eq!(last_check(Some(2.4)), "2 seconds ago");
        assert_eq!(last_check(Some(600.0)), "10 minutes ago");
    }
}
