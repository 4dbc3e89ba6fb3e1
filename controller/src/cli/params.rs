//! `toygres params get|set|reset|describe`: an instance's Postgres parameters — the values set
//! and where each is applied, changes (validated by the controller, applied by an operation
//! followed until it ends unless `--no-wait`), and the catalog: each setting's category
//! (dynamic, reload, restart, immutable), type, unit, range, allowed values, default and current
//! value, and whether Toygres lets users set it (and why not).

use std::collections::BTreeMap;

use toygres_common::controller_api::OperationAccepted;
use toygres_common::parameters_api::{
    AppliedState, ApplyMode, CatalogEntry, InstanceParameters, ParameterCatalog, ParameterCategory,
    SetInstanceParameters,
};

use super::args::{ClientArgs, OutputFormat};
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
    Get(GetArgs),
    /// Set parameters: NAME key=value …
    Set(SetArgs),
    /// Reset parameters to Postgres's defaults: NAME key …
    Reset(ResetArgs),
    /// Describe the instance's settings (all, or one)
    Describe(DescribeArgs),
}

/// `toygres params get NAME`.
#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// When restart-class changes apply, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApplyArg {
    Immediate,
    OnNextRestart,
}

/// `toygres params set NAME key=value … [--apply immediate|on-next-restart]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    pub name: String,
    /// Settings as key=value
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// When restart-class settings take effect
    #[arg(long, value_enum, default_value_t = ApplyArg::Immediate)]
    pub apply: ApplyArg,
    /// Return once the change is accepted
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `toygres params reset NAME key …`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResetArgs {
    pub name: String,
    /// Settings to reset
    #[arg(required = true, value_name = "KEY")]
    pub settings: Vec<String>,
    /// Return once the change is accepted
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
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
            let apply = match args.apply {
                ApplyArg::Immediate => ApplyMode::Immediate,
                ApplyArg::OnNextRestart => ApplyMode::OnNextRestart,
            };
            let request = SetInstanceParameters { parameters, apply };
            change(
                &args.name,
                &request,
                args.no_wait,
                &args.client,
                args.output,
            )
            .await
        }
        ParamsCommand::Reset(args) => {
            let request = SetInstanceParameters {
                parameters: args.settings.iter().map(|k| (k.clone(), None)).collect(),
                apply: ApplyMode::Immediate,
            };
            change(
                &args.name,
                &request,
                args.no_wait,
                &args.client,
                args.output,
            )
            .await
        }
        ParamsCommand::Describe(args) => describe(args).await,
    }
}

/// `key=value` arguments as a request's settings.
fn parse_settings(settings: &[String]) -> anyhow::Result<BTreeMap<String, Option<String>>> {
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
    let table = output == OutputFormat::Table;
    if no_wait {
        match output {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&accepted)?),
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
    let operation = wait(&client, &accepted.operation_id, table).await?;
    fail_unless_succeeded(&operation)?;
    let parameters: InstanceParameters = client
        .get(&format!("/v1/instances/{name}/parameters"))
        .await?;
    print_parameters(&parameters, output)
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
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
