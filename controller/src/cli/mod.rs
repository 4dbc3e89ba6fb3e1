//! The command line: `toygres controller` (the controller itself, see [`crate::controller`]) and
//! the client subcommands, which talk to a running controller's API.

mod args;
pub mod backup;
mod backup_cleanup;
mod backup_summary;
pub mod client;
pub mod connect;
pub mod credentials;
pub mod events;
pub mod ha;
pub mod instances;
pub mod list;
pub mod operation;
pub mod params;
pub mod replication;
pub mod ro;
pub mod secret;
mod settings;
pub mod stats;
mod table;

use clap::{Parser, Subcommand};

pub use args::{ClientArgs, OpArgs, OutputFormat};

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
    Get(args::InstanceArgs),
    /// Delete an instance
    Delete(instances::DeleteArgs),
    /// An instance's standbys: status, add, remove
    Replication(replication::ReplicationArgs),
    /// Show or wait for an operation
    Operation(operation::OperationArgs),
    /// Show or change an instance's automatic-failover and synchronous-replication settings
    Ha(ha::HaArgs),
    /// Show or change an instance's read-only endpoint rule: lag bounds, fallback, balancing
    Ro(ro::RoArgs),
    /// The fleet at a glance: instances by health, failovers and backups in the last 24 h, the
    /// largest lags
    Stats(stats::StatsArgs),
    /// What happened to an instance, oldest first; --follow for what happens next
    Events(events::EventsArgs),
    /// An instance's backups: create, list, get
    Backup(backup::BackupArgs),
    /// Make a new instance from another's backups, to a point in time (or, --in-place
    /// --confirm NAME, replace the instance's own data); waits and prints how to connect
    Restore(backup::RestoreArgs),
    /// Object-store credentials registered under a name for --backup-credentials: set, get,
    /// delete
    Secret(secret::SecretArgs),
    /// An instance's Postgres parameters: describe the catalog
    Params(params::ParamsArgs),
    /// Open a psql session on an instance (as its application owner unless --superuser)
    Psql(connect::PsqlArgs),
    /// Print how a program connects to an instance: environment variables or JSON
    Connect(connect::ConnectArgs),
    /// An instance's passwords: rotate one without a restart
    Credentials(credentials::CredentialsArgs),
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
