//! `toygres secret set|get|delete NAME`: the credentials of an object store, registered with
//! the controller under a name that `toygres create --backup-credentials NAME` refers to. The
//! values are read from a file (never from the command line) and are never printed back.

use toygres_common::store_secret_api::{parse_env_file, StoreSecretRequest, StoreSecretView};

use super::args::{ClientArgs, OutputFormat};
use super::client::ControllerClient;

/// `toygres secret`.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SecretCommand {
    /// Register (or replace) a store secret from an env file of AWS_…, AZURE_… or GOOGLE_…
    /// settings (KEY=VALUE lines)
    Set(SetArgs),
    /// Show a store secret's setting names (never their values)
    Get(NameArgs),
    /// Remove a store secret no instance uses
    Delete(NameArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// The secret's name (lowercase letters, digits, '-' and '.')
    pub name: String,
    /// The file holding the settings, one KEY=VALUE a line
    #[arg(long, value_name = "FILE")]
    pub from_env_file: std::path::PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Runs `toygres secret …`.
pub async fn run(args: SecretArgs) -> anyhow::Result<()> {
    let home = std::env::var_os("HOME");
    let (view, output, verb): (StoreSecretView, _, _) = match args.command {
        SecretCommand::Set(a) => {
            let text = std::fs::read_to_string(&a.from_env_file)
                .map_err(|e| anyhow::anyhow!("read {}: {e}", a.from_env_file.display()))?;
            let values = parse_env_file(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.from_env_file.display()))?;
            let client = ControllerClient::from_args(&a.client, home)?;
            let view = client
                .put(
                    &format!("/v1/secrets/{}", a.name),
                    &StoreSecretRequest { values },
                )
                .await?;
            (view, a.output, "stored")
        }
        SecretCommand::Get(a) => {
            let client = ControllerClient::from_args(&a.client, home)?;
            let view = client.get(&format!("/v1/secrets/{}", a.name)).await?;
            (view, a.output, "")
        }
        SecretCommand::Delete(a) => {
            let client = ControllerClient::from_args(&a.client, home)?;
            let view = client.delete(&format!("/v1/secrets/{}", a.name)).await?;
            (view, a.output, "deleted")
        }
    };
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        OutputFormat::Table => {
            if !verb.is_empty() {
                println!("{verb} store secret {}", view.name);
            } else {
                println!("store secret {}", view.name);
            }
            for key in &view.keys {
                println!("  {key}");
            }
        }
    }
    Ok(())
}
