//! `toygres list`: the instances, as a table or as JSON.

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;
use super::table::columns;
use crate::api::types::{InstanceList, InstanceSummary};

/// The flags of `toygres list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Lists the instances on stdout.
pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    let client = ControllerClient::from_args(&args.client, std::env::var_os("HOME"))?;
    let list: InstanceList = client.get("/v1/instances").await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        OutputFormat::Table if list.instances.is_empty() => eprintln!("No instances."),
        OutputFormat::Table => print!("{}", render_table(&list.instances)),
    }
    Ok(())
}

/// Aligned columns, one line per instance, under a header.
fn render_table(instances: &[InstanceSummary]) -> String {
    let port = |p: Option<u16>| p.map_or_else(|| "-".to_string(), |p| p.to_string());
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".to_string(),
        "HEALTH".to_string(),
        "REPLICATION".to_string(),
        "RW-PORT".to_string(),
        "RO-PORT".to_string(),
        "CREATED".to_string(),
    ]];
    rows.extend(instances.iter().map(|i| {
        [
            i.name.clone(),
            i.state.clone(),
            i.health.clone(),
            i.replication_mode.clone(),
            port(i.rw_port),
            port(i.ro_port),
            i.created_at.clone(),
        ]
    }));
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_marks_missing_ports() {
        let instance = |name: &str, rw_port| InstanceSummary {
            name: name.to_string(),
            state: "running".to_string(),
            health: "healthy".to_string(),
            replication_mode: "sync".to_string(),
            rw_port,
            ro_port: None,
            created_at: "2025-01-02T03:04:05Z".to_string(),
            updated_at: "2025-01-02T03:04:05Z".to_string(),
        };
        let table = render_table(&[instance("orders", Some(6432)), instance("a", None)]);
        assert_eq!(
            table,
            "\
NAME    STATE    HEALTH   REPLICATION  RW-PORT  RO-PORT  CREATED
orders  running  healthy  sync         6432     -        2025-01-02T03:04:05Z
a       running  healthy  sync         -        -        2025-01-02T03:04:05Z
"
        );
    }
}
