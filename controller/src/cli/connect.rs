//! `toygres psql` (a session, by replacing this process with psql) and `toygres connect` (what
//! a program needs to connect, as environment variables or JSON). Neither ever handles a
//! password: the URIs name the password file libpq reads it from.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::Serialize;
use toygres_common::controller_api::{ConnectionInfo, InstanceDetail};

use super::args::ClientArgs;
use super::client::ControllerClient;

/// The flags of `toygres psql`.
#[derive(Debug, Clone, clap::Args)]
pub struct PsqlArgs {
    pub name: String,
    /// Connect to the read-only endpoint
    #[arg(long)]
    pub ro: bool,
    /// Connect as the platform's superuser to the `postgres` database instead of the
    /// application's owner
    #[arg(long)]
    pub superuser: bool,
    /// The psql program
    #[arg(
        long,
        env = "TOYGRES_PSQL",
        default_value = "psql",
        value_name = "PATH"
    )]
    pub psql: PathBuf,
    /// Arguments for psql, after `--` (for example `-- -c 'SELECT 1'`)
    #[arg(last = true)]
    pub psql_args: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How `toygres connect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnectFormat {
    /// `export NAME='value'` lines: libpq's variables and `DATABASE_URL`
    Env,
    /// The connection as JSON
    Json,
}

/// The flags of `toygres connect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    pub name: String,
    /// The read-only endpoint instead of the read-write one
    #[arg(long)]
    pub ro: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = ConnectFormat::Env)]
    pub output: ConnectFormat,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// One way in: who, where, and the URI that says it all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub instance: String,
    pub user: String,
    pub database: String,
    pub host: String,
    pub port: u16,
    /// The libpq password file, when the platform keeps one.
    pub passfile: Option<String>,
    /// Where the password is otherwise.
    pub password_location: Option<String>,
    pub uri: String,
    /// Every member, for clients that find the primary themselves.
    pub multi_host_uri: String,
}

/// Opens psql on the instance; returns only if psql cannot be started.
pub async fn psql(args: PsqlArgs) -> anyhow::Result<()> {
    let detail = fetch(&args.client, &args.name).await?;
    let target = target(&detail, args.ro, args.superuser)?;
    let error = std::process::Command::new(&args.psql)
        .arg(&target.uri)
        .args(&args.psql_args)
        .exec();
    Err(error).with_context(|| format!("run {}", args.psql.display()))
}

/// Prints how to connect as the application.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let detail = fetch(&args.client, &args.name).await?;
    let target = target(&detail, args.ro, false)?;
    match args.output {
        ConnectFormat::Json => println!("{}", serde_json::to_string_pretty(&target)?),
        ConnectFormat::Env => print!("{}", render_env(&target)),
    }
    Ok(())
}

async fn fetch(client: &ClientArgs, name: &str) -> anyhow::Result<InstanceDetail> {
    toygres_common::names::validate_instance_name(name)?;
    let client = ControllerClient::from_args(client, std::env::var_os("HOME"))?;
    Ok(client.get(&format!("/v1/instances/{name}")).await?)
}

/// Picks the endpoint: the application's unless `superuser` (or the instance predates
/// application databases).
pub fn target(detail: &InstanceDetail, ro: bool, superuser: bool) -> anyhow::Result<Target> {
    let name = &detail.summary.name;
    let Some(connection) = &detail.connection else {
        bail!(
            "instance {name} has no endpoints (state {})",
            detail.summary.state
        );
    };
    match (&connection.app, superuser) {
        (Some(app), false) => Ok(Target {
            instance: name.clone(),
            user: app.user.clone(),
            database: app.database.clone(),
            host: app.host.clone(),
            port: if ro { app.ro_port } else { app.rw_port },
            passfile: app.passfile.clone(),
            password_location: app.password_location.clone(),
            uri: if ro { app.ro.clone() } else { app.rw.clone() },
            multi_host_uri: app.multi_host.clone(),
        }),
        _ => superuser_target(name, connection, ro),
    }
}

/// The superuser's endpoint, with the superuser's password file named in the URIs.
fn superuser_target(name: &str, connection: &ConnectionInfo, ro: bool) -> anyhow::Result<Target> {
    let uri = if ro { &connection.ro } else { &connection.rw };
    let parsed = reqwest::Url::parse(uri).with_context(|| format!("read the endpoint {uri}"))?;
    let with_passfile = |uri: &str| match &connection.passfile {
        None => uri.to_string(),
        Some(path) => {
            let separator = if uri.contains('?') { '&' } else { '?' };
            format!("{uri}{separator}passfile={}", percent_encode(path))
        }
    };
    Ok(Target {
        instance: name.to_string(),
        user: connection.user.clone(),
        database: connection.database.clone(),
        host: parsed.host_str().unwrap_or_default().to_string(),
        port: parsed.port().unwrap_or(5432),
        passfile: connection.passfile.clone(),
        password_location: connection.password_location.clone(),
        uri: with_passfile(uri),
        multi_host_uri: with_passfile(&connection.multi_host),
    })
}

/// Percent-encodes a URI query value (libpq decodes it).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// `export NAME='value'` lines, each value single-quoted for a POSIX shell.
pub fn render_env(target: &Target) -> String {
    let quote = |value: &str| format!("'{}'", value.replace('\'', r"'\''"));
    let mut vars = vec![
        ("PGHOST", target.host.clone()),
        ("PGPORT", target.port.to_string()),
        ("PGUSER", target.user.clone()),
        ("PGDATABASE", target.database.clone()),
    ];
    if let Some(passfile) = &target.passfile {
        vars.push(("PGPASSFILE", passfile.clone()));
    }
    // The URI's TLS settings, for programs that read the PG* variables instead of the URI.
    if let Ok(uri) = reqwest::Url::parse(&target.uri) {
        for (key, value) in uri.query_pairs() {
            match key.as_ref() {
                "sslmode" => vars.push(("PGSSLMODE", value.into_owned())),
                "sslrootcert" => vars.push(("PGSSLROOTCERT", value.into_owned())),
                _ => {}
            }
        }
    }
    vars.push(("DATABASE_URL", target.uri.clone()));
    vars.iter()
        .map(|(name, value)| format!("export {name}={}\n", quote(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn env_lines_quote_every_value_for_a_shell() {
        let target = Target {
            instance: "shop".into(),
            user: "shop".into(),
            database: "shop".into(),
            host: "127.0.0.1".into(),
            port: 5001,
            passfile: Some("/home/o'neil/app-password.pgpass".into()),
            password_location: None,
            uri: "postgresql://shop@127.0.0.1:5001/shop".into(),
            multi_host_uri: String::new(),
        };
        let env = render_env(&target);
        assert!(env.contains("export PGPORT='5001'\n"), "{env}");
        assert!(
            env.contains(r"export PGPASSFILE='/home/o'\''neil/app-password.pgpass'"),
            "{env}"
        );
        assert!(env.ends_with("export DATABASE_URL='postgresql://shop@127.0.0.1:5001/shop'\n"));
        assert!(!env.contains("PGSSLMODE"), "{env}");
    }

    #[test]
    fn env_lines_carry_the_uris_tls_settings() {
        let target = Target {
            instance: "shop".into(),
            user: "shop".into(),
            database: "shop".into(),
            host: "127.0.0.1".into(),
            port: 5001,
            passfile: None,
            password_location: None,
            uri: "postgresql://shop@127.0.0.1:5001/shop?sslmode=verify-full&sslrootcert=/h/my%20tls/ca.crt"
                .into(),
            multi_host_uri: String::new(),
        };
        let env = render_env(&target);
        assert!(env.contains("export PGSSLMODE='verify-full'\n"), "{env}");
        assert!(
            env.contains("export PGSSLROOTCERT='/h/my tls/ca.crt'\n"),
            "{env}"
        );
    }
}
