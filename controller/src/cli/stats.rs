//! `toygres stats`: the fleet at a glance.

use toygres_common::stats_api::FleetStats;

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;

/// The flags of `toygres stats`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres stats`.
pub async fn run(args: StatsArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let stats: FleetStats = client.get("/v1/stats").await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&stats)?),
        OutputFormat::Table => print!("{}", render(&stats)),
    }
    Ok(())
}

fn counts(counts: &[(String, i64)]) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary as `toygres stats` prints it.
pub fn render(stats: &FleetStats) -> String {
    let mut out = format!(
        "Instances:           {}\nFailovers (24 h):    {}\nBackups (24 h):      {}\nLargest lags:\n",
        counts(&stats.instances_by_health),
        stats.failovers_24h,
        counts(&stats.backups_24h)
    );
    if stats.largest_lags.is_empty() {
        out.push_str("  none\n");
    }
    for lag in &stats.largest_lags {
        out.push_str(&format!(
            "  {:<28}{} B  ({})\n",
            lag.member, lag.lag_bytes, lag.instance
        ));
    }
    out
}
