//! What every client subcommand takes: where the controller is, and how to print.

use std::path::PathBuf;

use clap::ValueEnum;

/// How a client subcommand finds the controller. In local mode none of these is needed: the
/// controller writes its address and token under `$TOYGRES_HOME`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The controller's home, where its address and token files are [default: $HOME/.toygres]
    #[arg(long, env = "TOYGRES_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The controller's API URL [default: read from $TOYGRES_HOME/controller.addr]
    #[arg(long, env = "TOYGRES_URL", value_name = "URL")]
    pub url: Option<String>,

    /// File holding the API token [default: $TOYGRES_HOME/controller.token]
    #[arg(long, env = "TOYGRES_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The CA certificate an https:// controller's certificate must come from [default:
    /// $TOYGRES_HOME/tls/ca.crt]
    #[arg(long, env = "TOYGRES_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people
    Table,
    /// JSON for programs
    Json,
}

/// What every command that starts an operation takes: whether to wait for it, where the
/// controller is, and how to print. A command whose `--no-wait` reads differently says so with
/// `#[command(mut_arg("no_wait", …))]`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpArgs {
    /// Print the operation id and return at once
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// What every command that reads one instance's settings or state takes: the instance's name,
/// where the controller is, and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct InstanceArgs {
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}
