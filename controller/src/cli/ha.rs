//! `toygres ha show|set NAME`: an instance's automatic-failover and synchronous-replication
//! settings.

use toygres_common::controller_api::{HaSettings, HaSettingsPatch, SyncModeSetting};

use super::args::{ClientArgs, InstanceArgs, OutputFormat};
use super::settings::{self, show_or_set};

/// The flags of `toygres ha`.
#[derive(Debug, Clone, clap::Args)]
pub struct HaArgs {
    #[command(subcommand)]
    pub command: HaCommand,
}

/// The subcommands of `toygres ha`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum HaCommand {
    /// Show the settings
    Show(InstanceArgs),
    /// Change some settings (the others stay)
    Set(SetArgs),
}

/// The sync modes, as flags spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncModeArg {
    Strict,
    Degrade,
}

/// `toygres ha set NAME [--failover on|off] …`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    pub name: String,
    /// Automatic failover on or off
    #[arg(long, value_name = "BOOL")]
    pub failover_enabled: Option<bool>,
    /// Milliseconds between two checks of a primary that stopped answering
    #[arg(long, value_name = "MS")]
    pub check_interval_ms: Option<u64>,
    /// Failed checks in a row before the primary counts as down
    #[arg(long, value_name = "N")]
    pub failure_threshold: Option<u32>,
    /// Milliseconds one check may take
    #[arg(long, value_name = "MS")]
    pub check_timeout_ms: Option<u64>,
    /// Milliseconds within which a standby must have heard from the primary to hold back a
    /// failover
    #[arg(long, value_name = "MS")]
    pub standby_contact_window_ms: Option<u64>,
    /// Async mode: the most WAL (bytes) a standby may miss to be promoted automatically
    #[arg(long, value_name = "BYTES")]
    pub max_lag_bytes: Option<u64>,
    /// Seconds after a failover during which no other automatic failover happens
    #[arg(long, value_name = "SECS")]
    pub cooldown_secs: Option<u64>,
    /// Sync mode: strict (writes wait for a standby) or degrade (go async after a timeout)
    #[arg(long, value_enum)]
    pub sync_mode: Option<SyncModeArg>,
    /// Sync mode: how many standbys confirm each commit
    #[arg(long, value_name = "N")]
    pub num_sync: Option<u32>,
    /// Sync mode: any N standbys (quorum, ANY n) instead of the first N (FIRST n)
    #[arg(long, value_name = "BOOL")]
    pub quorum: Option<bool>,
    /// Sync mode degrade: seconds without enough standbys before commits stop waiting
    #[arg(long, value_name = "SECS")]
    pub degrade_timeout_secs: Option<u64>,
    /// A query each health round runs on every member (false or an error: the member fails
    /// its check); "" removes it
    #[arg(long, value_name = "SQL")]
    pub health_query: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres ha …`.
pub async fn run(args: HaArgs) -> anyhow::Result<()> {
    let (settings, output): (HaSettings, _) = match args.command {
        HaCommand::Show(args) => {
            let settings = show_or_set::<_, HaSettingsPatch>(&args.client, &args.name, "ha", None);
            (settings.await?, args.output)
        }
        HaCommand::Set(args) => {
            let patch = HaSettingsPatch {
                failover_enabled: args.failover_enabled,
                check_interval_ms: args.check_interval_ms,
                failure_threshold: args.failure_threshold,
                check_timeout_ms: args.check_timeout_ms,
                standby_contact_window_ms: args.standby_contact_window_ms,
                max_lag_bytes: args.max_lag_bytes,
                cooldown_secs: args.cooldown_secs,
                sync_mode: args.sync_mode.map(|m| match m {
                    SyncModeArg::Strict => SyncModeSetting::Strict,
                    SyncModeArg::Degrade => SyncModeSetting::Degrade,
                }),
                num_sync: args.num_sync,
                quorum: args.quorum,
                degrade_timeout_secs: args.degrade_timeout_secs,
                health_query: args.health_query,
            };
            let settings = show_or_set(&args.client, &args.name, "ha", Some(patch));
            (settings.await?, args.output)
        }
    };
    settings::print(&settings, output, render)
}

fn render(s: &HaSettings) -> String {
    let rows = [
        ("failover_enabled", s.failover_enabled.to_string()),
        ("check_interval_ms", s.check_interval_ms.to_string()),
        ("failure_threshold", s.failure_threshold.to_string()),
        ("check_timeout_ms", s.check_timeout_ms.to_string()),
        (
            "standby_contact_window_ms",
            s.standby_contact_window_ms.to_string(),
        ),
        ("max_lag_bytes", s.max_lag_bytes.to_string()),
        ("cooldown_secs", s.cooldown_secs.to_string()),
        (
            "sync_mode",
            match s.sync_mode {
                SyncModeSetting::Strict => "strict".into(),
                SyncModeSetting::Degrade => "degrade".into(),
            },
        ),
        ("num_sync", s.num_sync.to_string()),
        ("quorum", s.quorum.to_string()),
        ("degrade_timeout_secs", s.degrade_timeout_secs.to_string()),
        (
            "health_query",
            s.health_query.clone().unwrap_or_else(|| "-".into()),
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<22}{v}\n")).collect()
}
