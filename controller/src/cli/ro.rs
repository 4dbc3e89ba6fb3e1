//! `toygres ro show|set NAME`: an instance's read-only endpoint rule (lag bounds with their
//! re-entry mark, fallback, balancing), and the `--ro-*` flags of `toygres create`.

use toygres_common::ro_api::{
    RoBackendState, RoBalance, RoEndpointView, RoFallback, RoSettings, RoSettingsPatch,
};

use super::args::{ClientArgs, InstanceArgs, OutputFormat};
use super::settings::{self, show_or_set};

/// The flags of `toygres ro`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoArgs {
    #[command(subcommand)]
    pub command: RoCommand,
}

/// The subcommands of `toygres ro`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RoCommand {
    /// Show the rule
    Show(InstanceArgs),
    /// Change some of it (the rest stays)
    Set(SetArgs),
}

/// What ro does without a qualifying standby, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FallbackArg {
    Primary,
    Refuse,
}

/// How ro spreads connections, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BalanceArg {
    RoundRobin,
    LeastConnections,
}

/// `toygres ro set NAME [--max-lag-bytes N] …`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    pub name: String,
    /// A standby further behind than this many bytes leaves ro (0: the controller's bound)
    #[arg(long, value_name = "BYTES")]
    pub max_lag_bytes: Option<u64>,
    /// A standby whose replay is further behind than this many seconds leaves ro (0: no bound)
    #[arg(long, value_name = "SECS")]
    pub max_lag_seconds: Option<u64>,
    /// A standby that left comes back once its lag is at most this percentage of each bound
    #[arg(long, value_name = "PERCENT")]
    pub reenter_percent: Option<u8>,
    /// With no standby qualifying: lead ro to the primary, or refuse
    #[arg(long, value_enum)]
    pub fallback: Option<FallbackArg>,
    /// How ro spreads connections over the standbys
    #[arg(long, value_enum)]
    pub balance: Option<BalanceArg>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// The `--ro-*` flags of `toygres create`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CreateRoFlags {
    /// ro: a standby further behind than this many bytes leaves the ro endpoint
    #[arg(long, value_name = "BYTES")]
    pub ro_max_lag_bytes: Option<u64>,
    /// ro: a standby whose replay is further behind than this many seconds leaves ro
    #[arg(long, value_name = "SECS")]
    pub ro_max_lag_seconds: Option<u64>,
    /// ro: with no standby qualifying, lead ro to the primary (default) or refuse
    #[arg(long, value_enum)]
    pub ro_fallback: Option<FallbackArg>,
    /// ro: how connections are spread over the standbys
    #[arg(long, value_enum)]
    pub ro_balance: Option<BalanceArg>,
}

impl CreateRoFlags {
    /// The rule the flags ask for, `None` when they ask for nothing.
    pub fn patch(&self) -> Option<RoSettingsPatch> {
        let patch = RoSettingsPatch {
            max_lag_bytes: self.ro_max_lag_bytes,
            max_lag_seconds: self.ro_max_lag_seconds,
            reenter_percent: None,
            fallback: self.ro_fallback.map(fallback),
            balance: self.ro_balance.map(balance),
        };
        (patch != RoSettingsPatch::default()).then_some(patch)
    }
}

fn fallback(arg: FallbackArg) -> RoFallback {
    match arg {
        FallbackArg::Primary => RoFallback::Primary,
        FallbackArg::Refuse => RoFallback::Refuse,
    }
}

fn balance(arg: BalanceArg) -> RoBalance {
    match arg {
        BalanceArg::RoundRobin => RoBalance::RoundRobin,
        BalanceArg::LeastConnections => RoBalance::LeastConnections,
    }
}

/// Runs `toygres ro …`.
pub async fn run(args: RoArgs) -> anyhow::Result<()> {
    let (settings, output): (RoSettings, _) = match args.command {
        RoCommand::Show(args) => {
            let settings = show_or_set::<_, RoSettingsPatch>(&args.client, &args.name, "ro", None);
            (settings.await?, args.output)
        }
        RoCommand::Set(args) => {
            let patch = RoSettingsPatch {
                max_lag_bytes: args.max_lag_bytes,
                max_lag_seconds: args.max_lag_seconds,
                reenter_percent: args.reenter_percent,
                fallback: args.fallback.map(fallback),
                balance: args.balance.map(balance),
            };
            let settings = show_or_set(&args.client, &args.name, "ro", Some(patch));
            (settings.await?, args.output)
        }
    };
    settings::print(&settings, output, render)
}

/// The rule as `toygres ro show` prints it.
pub fn render(s: &RoSettings) -> String {
    let or = |v: Option<u64>, none: &str| v.map_or_else(|| none.to_string(), |v| v.to_string());
    let rows = [
        ("max_lag_bytes", or(s.max_lag_bytes, "controller default")),
        ("max_lag_seconds", or(s.max_lag_seconds, "-")),
        ("reenter_percent", s.reenter_percent.to_string()),
        (
            "fallback",
            match s.fallback {
                RoFallback::Primary => "primary".into(),
                RoFallback::Refuse => "refuse".into(),
            },
        ),
        (
            "balance",
            match s.balance {
                RoBalance::RoundRobin => "round-robin".into(),
                RoBalance::LeastConnections => "least-connections".into(),
            },
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<18}{v}\n")).collect()
}

/// The ro endpoint section of `toygres get`: where ro leads and each standby's state and why.
pub fn render_endpoint(view: &RoEndpointView) -> String {
    let leads_to: Vec<&str> = view
        .backends
        .iter()
        .filter(|b| matches!(b.state, RoBackendState::In | RoBackendState::HalfOpen))
        .map(|b| b.member.as_str())
        .collect();
    let mut out = String::from("Read-only endpoint: ");
    if view.fallback_to_primary {
        out.push_str("falls back to the primary (no standby qualifies)\n");
    } else if view.refusing {
        out.push_str("refuses connections (no standby qualifies, fallback: refuse)\n");
    } else {
        out.push_str(&format!("leads to {}\n", leads_to.join(", ")));
    }
    for backend in &view.backends {
        let lag = match (backend.lag_bytes, backend.lag_seconds) {
            (Some(bytes), Some(seconds)) => format!("  (lag {bytes} B, {seconds:.1} s)"),
            (Some(bytes), None) => format!("  (lag {bytes} B)"),
            (None, _) => String::new(),
        };
        out.push_str(&format!(
            "  {:<24}{}{lag}\n",
            backend.member,
            backend.state.describe()
        ));
    }
    out
}
