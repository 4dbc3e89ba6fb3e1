//! The command line: `toygres controller` (the controller itself, see [`crate::controller`]) and
//! the client subcommands, which talk to a running controller's API.

pub mod client;
pub mod ha;
pub mod instances;
pub mod list;
pub mod operation;
pub mod replication;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ControllerArgs;

/// `toygres`: PostgreSQL as a service.
#[derive(Debug, Parser)]
#[command(
    name = "toygres",
    version,
    about = "PostgreSQL as a service: the controller and its CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: the CMS database and the HTTP API
    Controller(ControllerArgs),
    /// Create an instance: a primary and its standbys; waits and prints how to connect
    Create(instances::CreateArgs),
    /// List instances
    List(list::ListArgs),
    /// Show an instance: its members, their health, and how to connect
    Get(instances::GetArgs),
    /// Delete an instance
    Delete(instances::DeleteArgs),
    /// An instance's standbys: status, add, remove
    Replication(replication::ReplicationArgs),
    /// Show or wait for an operation
    Operation(operation::OperationArgs),
    /// Show or change an instance's automatic-failover and synchronous-replication settings
    Ha(ha::HaArgs),
}

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
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people
    Table,
    /// JSON for programs
    Json,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_takes_an_output_format() {
        let cli = Cli::try_parse_from(["toygres", "list", "-o", "json"]).unwrap();
        match cli.command {
            Command::List(args) => assert_eq!(args.output, OutputFormat::Json),
            other => panic!("expected list, got {other:?}"),
        }
        assert!(Cli::try_parse_from(["toygres", "list", "-o", "yaml"]).is_err());
    }
}
