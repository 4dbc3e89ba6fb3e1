//! `toygres credentials rotate NAME [--role owner|superuser]`: a new password for one of an
//! instance's roles, without a restart (an operation on the instance's actor, followed until
//! it ends unless `--no-wait`). The password is never printed: the new one is where the old
//! one was, and the printed URIs' password file holds it.

use toygres_common::controller_api::{InstanceDetail, OperationAccepted};
use toygres_common::credentials_api::{CredentialRole, RotateCredentialsRequest};

use super::args::{OpArgs, OutputFormat};
use super::client::ControllerClient;
use super::replication::follow;

/// The flags of `toygres credentials`.
#[derive(Debug, Clone, clap::Args)]
pub struct CredentialsArgs {
    #[command(subcommand)]
    pub command: CredentialsCommand,
}

/// The subcommands of `toygres credentials`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CredentialsCommand {
    /// Give a role a new password; open sessions stay open, new logins need the new one
    Rotate(RotateArgs),
}

/// A role, as flags spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// The owner of the application database
    Owner,
    /// The postgres superuser
    Superuser,
}

impl From<RoleArg> for CredentialRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Owner => CredentialRole::Owner,
            RoleArg::Superuser => CredentialRole::Superuser,
        }
    }
}

/// `toygres credentials rotate NAME [--role owner|superuser]`.
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    pub name: String,
    /// Whose password
    #[arg(long, value_enum, default_value_t = RoleArg::Owner)]
    pub role: RoleArg,
    #[command(flatten)]
    pub op: OpArgs,
}

/// Runs `toygres credentials …`.
pub async fn run(args: CredentialsArgs) -> anyhow::Result<()> {
    let CredentialsCommand::Rotate(args) = args.command;
    let client = ControllerClient::from_args(&args.op.client, std::env::var_os("HOME"))?;
    let request = RotateCredentialsRequest {
        role: args.role.into(),
    };
    let accepted: OperationAccepted = client
        .post(
            &format!("/v1/instances/{}/credentials/rotate", args.name),
            &request,
        )
        .await?;
    follow(&client, accepted, args.op.no_wait, args.op.output).await?;
    if args.op.no_wait || args.op.output != OutputFormat::Table {
        return Ok(());
    }
    let detail: InstanceDetail = client.get(&format!("/v1/instances/{}", args.name)).await?;
    let Some(connection) = detail.connection else {
        return Ok(());
    };
    // Where the rotated role's password is: the owner's (the app block) or the superuser's.
    let (user, location, passfile) = match request.role {
        CredentialRole::Owner => match connection.app {
            Some(app) => (app.user, app.password_location, app.passfile),
            None => return Ok(()),
        },
        CredentialRole::Superuser => (
            connection.user,
            connection.password_location,
            connection.passfile,
        ),
    };
    if let Some(location) = location {
        println!("The new password of {user} is in {location}.");
    }
    if passfile.is_some() {
        println!("The printed URIs read it from their passfile: they work unchanged.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn the_owner_is_the_default_role() {
        let cli = Cli::try_parse_from(["toygres", "credentials", "rotate", "shop"]).unwrap();
        let Command::Credentials(args) = cli.command else {
            panic!("expected credentials");
        };
        let super::CredentialsCommand::Rotate(rotate) = args.command;
        assert_eq!(rotate.role, super::RoleArg::Owner);
        assert!(Cli::try_parse_from([
            "toygres",
            "credentials",
            "rotate",
            "shop",
            "--role",
            "admin"
        ])
        .is_err());
    }
}
