//! `toygres params get|set|reset|describe`: an instance's Postgres parameters — the values set
//! and where each is applied, changes (validated by the controller, applied by an operation
//! followed until it ends unless `--no-wait`), and the catalog: each setting's category
//! (dynamic, reload, restart, immutable), type, unit, range, allowed values, default and current
//! value, and whether Toygres lets users set it (and why not).

use std::collections::BTreeMap;

use toygres_common::controller_api::{InstanceSize, OperationAccepted};
use toygres_common::parameters_api::{
    AppliedState, ApplyMode, ApplyProfile, CatalogEntry, InstanceParameters, ParameterCatalog,
    ParameterCategory, PrimaryUpdate, ProfilePlan, SetInstanceParameters,
};

use super::args::{ClientArgs, InstanceArgs, OpArgs, OutputFormat};
use super::client::ControllerClient;
use super::operation::{fail_unless_succeeded, wait};

/// The flags of `toygres params`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParamsArgs {
    #[command(subcommand)]
    pub command: ParamsCommand,
}

/// The subcommands of `toygres params`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ParamsCommand {
    /// Show the values set and whether each member runs them
    Get(InstanceArgs),
    /// Set parameters: NAME key=value …
    Set(SetArgs),
    /// Reset parameters to Postgres's defaults: NAME key …
    Reset(ResetArgs),
    /// Describe the instance's settings (all, or one)
    Describe(DescribeArgs),
    /// Apply a tuning profile sized to the instance: NAME PROFILE [key=value …]
    Profile(ProfileArgs),
}

/// `toygres params profile NAME PROFILE [key=value …] [--dry-run]`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("no_wait", |a| a.help("Return once the change is accepted")))]
pub struct ProfileArgs {
    pub name: String,
    /// oltp, analytics, general or development
    pub profile: String,
    /// Values of your own over the profile's, as key=value
    #[arg(value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Only show what would change
    #[arg(long)]
    pub dry_run: bool,
    /// Size the profile for this memory (e.g. 8GB) instead of the instance's declared size
    #[arg(long, requires = "cpus")]
    pub memory: Option<String>,
    /// … and these CPUs
    #[arg(long, requires = "memory")]
    pub cpus: Option<u32>,
    /// How the primary takes restart-class values
    #[arg(long, value_enum, default_value_t = PrimaryUpdateArg::Switchover)]
    pub primary_update: PrimaryUpdateArg,
    #[command(flatten)]
    pub op: OpArgs,
}

/// How the primary takes a restart-class change, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrimaryUpdateArg {
    /// Switch over to an updated standby, then restart the old primary as a standby
    Switchover,
    /// Restart the primary in place
    Restart,
    /// Update the standbys only; the primary waits for a switchover
    Supervised,
}

/// `toygres params set NAME key=value … [--apply immediate|on-next-restart|at TIME]`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("no_wait", |a| a.help("Return once the change is accepted")))]
pub struct SetArgs {
    pub name: String,
    /// Settings as key=value
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// When the change takes effect: immediate, on-next-restart, or at TIME (RFC 3339)
    #[arg(long, num_args = 1..=2, value_name = "WHEN", default_value = "immediate")]
    pub apply: Vec<String>,
    /// How the primary takes a restart-class change
    #[arg(long, value_enum, default_value_t = PrimaryUpdateArg::Switchover)]
    pub primary_update: PrimaryUpdateArg,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres params reset NAME key …`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("no_wait", |a| a.help("Return once the change is accepted")))]
pub struct ResetArgs {
    pub name: String,
    /// Settings to reset
    #[arg(required = true, value_name = "KEY")]
    pub settings: Vec<String>,
    #[command(flatten)]
    pub op: OpArgs,
}

/// `toygres params describe NAME [PARAM]`.
#[derive(Debug, Clone, clap::Args)]
pub struct DescribeArgs {
    /// The instance
    pub name: String,
    /// One setting to describe in full
    pub param: Option<String>,
    /// Only the settings users may change
    #[arg(long)]
    pub modifiable: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres params …`.
pub async fn run(args: ParamsArgs) -> anyhow::Result<()> {
    match args.command {
        ParamsCommand::Get(args) => get(args).await,
        ParamsCommand::Set(args) => {
            let parameters = parse_settings(&args.settings)?;
            let (apply, apply_at) = parse_apply(&args.apply)?;
            let request = SetInstanceParameters {
                parameters,
                apply,
                apply_at,
                primary_update: args.primary_update.into(),
            };
            change(
                &args.name,
                &request,
                args.op.no_wait,
                &args.op.client,
                args.op.output,
            )
            .await
        }
        ParamsCommand::Reset(args) => {
            let request = SetInstanceParameters {
                parameters: args.settings.iter().map(|k| (k.clone(), None)).collect(),
                apply: ApplyMode::Immediate,
                apply_at: None,
                primary_update: PrimaryUpdate::default(),
            };
            change(
                &args.name,
                &request,
                args.op.no_wait,
                &args.op.client,
                args.op.output,
            )
            .await
        }
        ParamsCommand::Describe(args) => describe(args).await,
        ParamsCommand::Profile(args) => profile(args).await,
    }
}

impl From<PrimaryUpdateArg> for PrimaryUpdate {
    fn from(arg: PrimaryUpdateArg) -> Self {
        match arg {
            PrimaryUpdateArg::Switchover => PrimaryUpdate::Switchover,
            PrimaryUpdateArg::Restart => PrimaryUpdate::Restart,
            PrimaryUpdateArg::Supervised => PrimaryUpdate::Supervised,
        }
    }
}

/// `toygres params profile`: the dry run's diff, or the change followed like `params set`.
async fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    let request = ApplyProfile {
        profile: args.profile.clone(),
        parameters: parse_settings(&args.settings)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        size: match (&args.memory, args.cpus) {
            (Some(memory), Some(cpus)) => Some(InstanceSize {
                memory_mb: memory_mb(memory)?,
                cpus,
                storage: None,
            }),
            _ => None,
        },
        dry_run: args.dry_run,
        primary_update: args.primary_update.into(),
    };
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let path = format!("/v1/instances/{}/parameters/profile", args.name);
    if args.dry_run {
        let plan: ProfilePlan = client.post(&path, &request).await?;
        match args.op.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            OutputFormat::Table => print!("{}", render_plan(&plan)),
        }
        return Ok(());
    }
    let accepted: OperationAccepted = client.post(&path, &request).await?;
    follow(
        &args.name,
        &accepted,
        args.op.no_wait,
        &client,
        args.op.output,
    )
    .await
}

/// A profile's dry run: one line per setting that would change.
fn render_plan(plan: &ProfilePlan) -> String {
    if plan.changes.is_empty() {
        return format!(
            "{} already runs the {} profile's values\n",
            plan.instance, plan.profile
        );
    }
    let mut out = format!("{:<32}{:<20}{}\n", "NAME", "CURRENT", "PROPOSED");
    for c in &plan.changes {
        out.push_str(&format!("{:<32}{:<20}{}\n", c.name, c.current, c.proposed));
    }
    out
}

/// `--apply immediate|on-next-restart|at TIME`.
fn parse_apply(words: &[String]) -> anyhow::Result<(ApplyMode, Option<String>)> {
    match words {
        [w] if w == "immediate" => Ok((ApplyMode::Immediate, None)),
        [w] if w == "on-next-restart" => Ok((ApplyMode::OnNextRestart, None)),
        [w, time] if w == "at" => Ok((ApplyMode::Immediate, Some(time.clone()))),
        _ => anyhow::bail!(
            "--apply takes immediate, on-next-restart or at TIME (RFC 3339), not {:?}",
            words.join(" ")
        ),
    }
}

/// A memory size as people write it (`4GB`, `512MB`, `1TB`; a bare number is MB) in MiB.
pub fn memory_mb(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a memory size like 4GB or 512MB"))?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "MB" | "M" | "MIB" => 1,
        "GB" | "G" | "GIB" => 1024,
        "TB" | "T" | "TIB" => 1024 * 1024,
        _ => anyhow::bail!("{text:?} is not a memory size like 4GB or 512MB"),
    };
    Ok(number * factor)
}

/// `key=value` arguments as a request's settings.
pub fn parse_settings(settings: &[String]) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    settings
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), Some(v.trim().to_string())))
            }
            _ => anyhow::bail!("{s:?} is not key=value"),
        })
        .collect()
}

async fn change(
    name: &str,
    request: &SetInstanceParameters,
    no_wait: bool,
    client_args: &ClientArgs,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(client_args, std::env::var_os("HOME"))?;
    let accepted: OperationAccepted = client
        .put(&format!("/v1/instances/{name}/parameters"), request)
        .await?;
    follow(name, &accepted, no_wait, &client, output).await
}

/// Prints the accepted change's operation, or follows it to its end and shows the values.
async fn follow(
    name: &str,
    accepted: &OperationAccepted,
    no_wait: bool,
    client: &ControllerClient,
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
    if table {
        eprintln!(
            "Changing the parameters of {name} (operation {})",
            accepted.operation_id
        );
    }
    let operation = wait(client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    let parameters: InstanceParameters = client
        .get(&format!("/v1/instances/{name}/parameters"))
        .await?;
    print_parameters(&parameters, output)
}

async fn get(args: InstanceArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let parameters: InstanceParameters = client
        .get(&format!("/v1/instances/{}/parameters", args.name))
        .await?;
    print_parameters(&parameters, args.output)
}

fn print_parameters(parameters: &InstanceParameters, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(parameters)?),
        OutputFormat::Table => print!("{}", render_parameters(parameters)),
    }
    Ok(())
}

/// One line per setting and member.
fn render_parameters(p: &InstanceParameters) -> String {
    if p.parameters.is_empty() {
        return format!(
            "{} runs Postgres's defaults (no parameters set)\n",
            p.instance
        );
    }
    let mut out = format!(
        "{:<32}{:<16}{:<20}{:<16}{}\n",
        "NAME", "VALUE", "MEMBER", "RUNS", "STATE"
    );
    for d in &p.parameters {
        for m in &d.members {
            let state = match m.state {
                AppliedState::Applied => "applied",
                AppliedState::PendingRestart => "pending restart",
                AppliedState::NotApplied => "not applied",
                AppliedState::Unknown => "unknown",
            };
            out.push_str(&format!(
                "{:<32}{:<16}{:<20}{:<16}{}\n",
                d.name,
                d.value,
                m.member,
                m.current.as_deref().unwrap_or("-"),
                state
            ));
        }
    }
    out
}

async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let catalog: ParameterCatalog = client
        .get(&format!("/v1/instances/{}/parameters/catalog", args.name))
        .await?;
    if let Some(param) = &args.param {
        let entry = catalog.get(param).ok_or_else(|| {
            anyhow::anyhow!(
                "{param} is not a setting of instance {} (PostgreSQL {})",
                args.name,
                catalog.postgres_version
            )
        })?;
        match args.output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(entry)?),
            OutputFormat::Table => print!("{}", render_entry(entry)),
        }
        return Ok(());
    }
    let entries: Vec<&CatalogEntry> = catalog
        .parameters
        .iter()
        .filter(|e| !args.modifiable || e.modifiable)
        .collect();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        OutputFormat::Table => print!("{}", render_table(&entries)),
    }
    Ok(())
}

fn category(c: ParameterCategory) -> &'static str {
    match c {
        ParameterCategory::Dynamic => "dynamic",
        ParameterCategory::Reload => "reload",
        ParameterCategory::Restart => "restart",
        ParameterCategory::Immutable => "immutable",
    }
}

/// One line per setting.
fn render_table(entries: &[&CatalogEntry]) -> String {
    let mut out = format!(
        "{:<40}{:<11}{:<9}{:<6}{:<24}{}\n",
        "NAME", "CATEGORY", "TYPE", "UNIT", "CURRENT", "MODIFIABLE"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<40}{:<11}{:<9}{:<6}{:<24}{}\n",
            e.name,
            category(e.category),
            e.vartype,
            e.unit.as_deref().unwrap_or("-"),
            e.current,
            if e.modifiable { "yes" } else { "no" }
        ));
    }
    out
}

/// Every field of one setting.
fn render_entry(e: &CatalogEntry) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows = vec![
        ("name", e.name.clone()),
        ("category", category(e.category).to_string()),
        ("type", e.vartype.clone()),
        ("unit", dash(&e.unit)),
        ("min", dash(&e.min)),
        ("max", dash(&e.max)),
        ("default", dash(&e.default)),
        ("current", e.current.clone()),
        ("pending_restart", e.pending_restart.to_string()),
        ("modifiable", e.modifiable.to_string()),
        ("description", e.description.clone()),
    ];
    if !e.enum_values.is_empty() {
        rows.insert(6, ("values", e.enum_values.join(", ")));
    }
    if let Some(reason) = &e.reason {
        rows.push(("reason", reason.clone()));
    }
    rows.iter().map(|(k, v)| format!("{k:<17}{v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_key_value_pairs() {
        let parsed = parse_settings(&["work_mem=64MB".into(), "jit = off".into()]).unwrap();
        assert_eq!(parsed["work_mem"].as_deref(), Some("64MB"));
        assert_eq!(parsed["jit"].as_deref(), Some("off"));
        assert!(parse_settings(&["work_mem".into()]).is_err());
        assert!(parse_settings(&["=1".into()]).is_err());
    }

    #[test]
    fn memory_sizes_read_as_mebibytes() {
        assert_eq!(memory_mb("4GB").unwrap(), 4096);
        assert_eq!(memory_mb("512MB").unwrap(), 512);
        assert_eq!(memory_mb("2048").unwrap(), 2048);
        assert!(memory_mb("lots").is_err());
        assert!(memory_mb("4PB").is_err());
    }

    #[test]
    fn apply_takes_a_mode_or_a_time() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_apply(&words(&["on-next-restart"])).unwrap(),
            (ApplyMode::OnNextRestart, None)
        );
        let at = "2030-01-01T03:00:00Z";
        assert_eq!(
            parse_apply(&words(&["at", at])).unwrap(),
            (ApplyMode::Immediate, Some(at.to_string()))
        );
        for bad in [&["at"][..], &["soon"], &["immediate", "x"]] {
            assert!(parse_apply(&words(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_setting_shows_its_range_values_and_refusal_reason() {
        let entry = CatalogEntry {
            name: "shared_preload_libraries".into(),
            category: ParameterCategory::Restart,
            context: "postmaster".into(),
            vartype: "string".into(),
            unit: None,
            min: None,
            max: None,
            enum_values: vec![],
            default: Some(String::new()),
            current: String::new(),
            pending_restart: false,
            description: "Lists shared libraries to preload into server.".into(),
            modifiable: false,
            reason: Some("loads a shared library".into()),
        };
        let text = render_entry(&entry);
        assert!(text.contains("category         restart\n"), "{text}");
        assert!(text.contains("modifiable       false\n"), "{text}");
        assert!(
            text.contains("reason           loads a shared library\n"),
            "{text}"
        );
        let table = render_table(&[&entry]);
        assert!(table.lines().nth(1).unwrap().ends_with("no"), "{table}");
    }
}
