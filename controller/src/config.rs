//! The controller's settings: the `toygres controller` flags (each also read from an environment
//! variable), the `.env` file that can supply those variables, and the validation that turns the
//! raw flags into a [`ControllerConfig`] the rest of the controller trusts.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api_tls::ApiTls;
use crate::home::ControllerHome;
use crate::platform::kubernetes::args::{PlatformArgs, PlatformKind};

mod capacity;
mod database_url;
mod dotenv;

pub use capacity::{Capacity, CapacityArgs};
pub use database_url::{describe_cms, parse_database_url, store_url, DatabaseUrlError, SecretUrl};
pub use dotenv::{load_dotenv, parse_dotenv, DotenvError};

/// The default address of the controller's HTTP API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// The flags of `toygres controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Where the controller keeps its token, address file and embedded CMS [default: $HOME/.toygres; /var/lib/toygres for root]
    #[arg(long, env = "TOYGRES_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Address the HTTP API listens on
    #[arg(long, env = "TOYGRES_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// PostgreSQL connection string of the CMS; when unset, an embedded Postgres is started under
    /// $TOYGRES_HOME/cms
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory of the PostgreSQL programs for the embedded CMS [default: pg_config --bindir,
    /// the newest /usr/lib/postgresql/*/bin, then $PATH]
    #[arg(long, env = "TOYGRES_PG_BIN_DIR", value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,

    /// File holding the API bearer token, created when missing [default: $TOYGRES_HOME/controller.token]
    #[arg(long, env = "TOYGRES_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The toygres-sidecar program the local platform runs [default: beside this program, then $PATH]
    #[arg(long, env = "TOYGRES_SIDECAR_BIN", value_name = "FILE")]
    pub sidecar_bin: Option<PathBuf>,

    /// Milliseconds between two health rounds of an instance (a primary that misses one is
    /// re-checked at its HA check interval)
    #[arg(long, env = "TOYGRES_HEALTH_INTERVAL_MS", value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub health_interval_ms: u64,

    /// Milliseconds one health probe of a member may take
    #[arg(long, env = "TOYGRES_HEALTH_TIMEOUT_MS", value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub health_timeout_ms: u64,

    /// Probe members outside the instance actors' durable history and wake an actor only when
    /// something changed (its quiet instances then keep a long safety-net round); false: every
    /// actor runs a durable round every health interval
    #[arg(long, env = "TOYGRES_HEALTH_FAST_PATH", value_name = "BOOL", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub health_fast_path: bool,

    /// Milliseconds between two passes of the local platform's supervisor, which starts again
    /// the members whose sidecar died
    #[arg(long, env = "TOYGRES_SUPERVISE_INTERVAL_MS", value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub supervise_interval_ms: u64,

    /// Least milliseconds between two fetches of a dispatcher that found no work (idle
    /// dispatchers wait for wake-ups from this process, and look anyway every second)
    #[arg(long, env = "TOYGRES_POLL_INTERVAL_MS", value_name = "MS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub poll_interval_ms: u64,

    /// Seconds a primary that has had standbys may go without hearing from the controller and
    /// from every standby before it fences itself (0: never)
    #[arg(
        long,
        env = "TOYGRES_ISOLATION_LEASE_SECS",
        value_name = "SECS",
        default_value_t = 5
    )]
    pub isolation_lease_secs: u64,

    /// A JSON file naming, by member, the network namespace and address of new local members
    /// (tests that cut links use it); members it does not name listen on loopback
    #[arg(
        long,
        env = "TOYGRES_LOCAL_MEMBER_NETWORKS",
        value_name = "FILE",
        hide = true
    )]
    pub local_member_networks: Option<PathBuf>,

    /// Seconds the member, client and generated API certificates issued by this controller
    /// stay valid (tests of renewal use short ones); renewed with a third left [default: a year]
    #[arg(
        long,
        env = "TOYGRES_CERT_LIFETIME_SECS",
        value_name = "SECS",
        hide = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub cert_lifetime_secs: Option<u64>,
    /// The API's certificate (PEM); with --tls-key the API serves HTTPS [default on the local
    /// platform: a certificate from the controller's own CA under $TOYGRES_HOME/tls]
    #[arg(
        long,
        env = "TOYGRES_API_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The API certificate's private key (PEM)
    #[arg(
        long,
        env = "TOYGRES_API_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// A directory holding the API's tls.crt and tls.key (and ca.crt, the CA that issued
    /// them), as a Kubernetes TLS Secret is mounted
    #[arg(
        long,
        env = "TOYGRES_API_TLS_DIR",
        value_name = "DIR",
        conflicts_with = "tls_cert"
    )]
    pub tls_dir: Option<PathBuf>,

    #[command(flatten)]
    pub platform: PlatformArgs,

    #[command(flatten)]
    pub default_backup: crate::backups::defaults::DefaultBackupArgs,

    #[command(flatten)]
    pub capacity: CapacityArgs,
}

/// Settings that failed validation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot tell where TOYGRES_HOME is: $HOME is not set; pass --home or set TOYGRES_HOME"
    )]
    NoHome,
    #[error("resolve the path {path}: {source}")]
    Path {
        path: String,
        source: std::io::Error,
    },
    /// Never carries the URL itself: it may hold a password.
    #[error(transparent)]
    DatabaseUrl(#[from] DatabaseUrlError),
    #[error("{0}")]
    Capacity(String),
}

/// Where the CMS lives.
#[derive(Debug, Clone)]
pub enum CmsLocation {
    /// A PostgreSQL server of the operator's, from `DATABASE_URL`. (`tokio_postgres::Config`'s
    /// `Debug` redacts the password.)
    External(Box<tokio_postgres::Config>),
    /// A Postgres cluster the controller runs itself under `$TOYGRES_HOME/cms`.
    Embedded { pg_bin_dir: Option<PathBuf> },
}

/// Validated settings of `toygres controller`.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub home: ControllerHome,
    pub listen: SocketAddr,
    pub cms: CmsLocation,
    /// `DATABASE_URL` as a `postgres://` URL, for the duroxide store (sqlx parses it itself).
    pub database_url: Option<SecretUrl>,
    pub token_file: PathBuf,
    pub sidecar_bin: Option<PathBuf>,
    pub pg_bin_dir: Option<PathBuf>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub health_fast_path: bool,
    pub poll_interval: Duration,
    pub supervise_interval: Duration,
    /// The sidecars' isolation lease; `None`: off.
    pub isolation_lease: Option<Duration>,
    /// The local platform's member networks file (see `LocalPlatformConfig::member_networks`).
    pub local_member_networks: Option<PathBuf>,
    /// How long issued certificates stay valid; `None`: the default (a year).
    pub cert_lifetime: Option<Duration>,
    /// Which platform instances run on, and the Kubernetes platform's settings.
    pub platform: PlatformArgs,
    /// How the API is served (plain HTTP or TLS).
    pub api_tls: crate::api_tls::ApiTls,
    /// The operator's default backup store.
    pub default_backup: crate::backups::defaults::DefaultBackupArgs,
    /// Dispatcher slots and connection pools.
    pub capacity: Capacity,
}

impl ControllerConfig {
    /// Validates the flags. `home_env` is the value of `$HOME`, passed in so tests need not touch
    /// the process environment.
    pub fn from_args(
        args: ControllerArgs,
        home_env: Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let home = ControllerHome::new(resolve_home(args.home, home_env)?);
        let pg_bin_dir = args.pg_bin_dir.map(|dir| absolute(&dir)).transpose()?;
        let database_url = args.database_url.filter(|url| !url.trim().is_empty());
        let (cms, database_url) = match &database_url {
            Some(url) => {
                let config = parse_database_url(url)?;
                let store_url = store_url(url, &config);
                (CmsLocation::External(Box::new(config)), Some(store_url))
            }
            None => (
                CmsLocation::Embedded {
                    pg_bin_dir: pg_bin_dir.clone(),
                },
                None,
            ),
        };
        let token_file = match args.token_file {
            Some(path) => absolute(&path)?,
            None => home.token_file(),
        };
        let api_tls = match (args.tls_cert, args.tls_key, args.tls_dir) {
            (Some(cert), Some(key), _) => ApiTls::Files {
                cert: absolute(&cert)?,
                key: absolute(&key)?,
                ca: None,
            },
            (_, _, Some(dir)) => {
                let dir = absolute(&dir)?;
                let ca = dir.join("ca.crt");
                ApiTls::Files {
                    cert: dir.join("tls.crt"),
                    key: dir.join("tls.key"),
                    ca: ca.is_file().then_some(ca),
                }
            }
            _ if args.platform.kind == PlatformKind::Local => ApiTls::Generated,
            _ => ApiTls::Plain,
        };
        let capacity = Capacity::resolve(&args.capacity, Capacity::machine_cores())
            .map_err(ConfigError::Capacity)?;
        Ok(Self {
            home,
            api_tls,
            capacity,
            listen: args.listen,
            cms,
            database_url,
            token_file,
            sidecar_bin: args.sidecar_bin.map(|p| absolute(&p)).transpose()?,
            pg_bin_dir,
            health_interval: Duration::from_millis(args.health_interval_ms),
            health_timeout: Duration::from_millis(args.health_timeout_ms),
            health_fast_path: args.health_fast_path,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            supervise_interval: Duration::from_millis(args.supervise_interval_ms),
            isolation_lease: (args.isolation_lease_secs > 0)
                .then(|| Duration::from_secs(args.isolation_lease_secs)),
            cert_lifetime: args.cert_lifetime_secs.map(Duration::from_secs),
            local_member_networks: args
                .local_member_networks
                .map(|p| absolute(&p))
                .transpose()?,
            platform: args.platform,
            default_backup: args.default_backup,
        })
    }
}

/// Default home for root: root's own home is closed to the `postgres` OS user that runs the
/// embedded CMS, so root keeps its state where system services do.
pub const ROOT_DEFAULT_HOME: &str = "/var/lib/toygres";

/// `--home` when given, else `/var/lib/toygres` for root and `$HOME/.toygres` for others;
/// always absolute.
pub fn resolve_home(
    arg: Option<PathBuf>,
    home_env: Option<OsString>,
) -> Result<PathBuf, ConfigError> {
    let path = match arg.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => path,
        None if nix::unistd::Uid::effective().is_root() => PathBuf::from(ROOT_DEFAULT_HOME),
        None => {
            let home = home_env
                .filter(|h| !h.is_empty())
                .ok_or(ConfigError::NoHome)?;
            PathBuf::from(home).join(".toygres")
        }
    };
    absolute(&path)
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|source| ConfigError::Path {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn args(flags: &[&str]) -> ControllerArgs {
        let mut argv = vec!["toygres"];
        argv.extend_from_slice(flags);
        TestCli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn home_defaults_to_dot_toygres_under_home_or_var_lib_for_root() {
        let config = ControllerConfig::from_args(
            args(&["--database-url", "postgres://cms@db.example/toygres"]),
            Some("/home/alice".into()),
        )
        .unwrap();
        let expected = if nix::unistd::Uid::effective().is_root() {
            PathBuf::from(ROOT_DEFAULT_HOME)
        } else {
            PathBuf::from("/home/alice/.toygres")
        };
        assert_eq!(config.home.root(), expected);
        assert_eq!(config.token_file, expected.join("controller.token"));
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(matches!(config.cms, CmsLocation::External(_)));
    }

    #[test]
    fn missing_home_is_a_clear_error() {
        if nix::unistd::Uid::effective().is_root() {
            // Root never needs $HOME: it defaults to /var/lib/toygres.
            return;
        }
        let err =
            ControllerConfig::from_args(args(&["--database-url", "host=db"]), None).unwrap_err();
        assert!(matches!(err, ConfigError::NoHome), "{err}");
        assert!(err.to_string().contains("--home"));
    }

    #[test]
    fn flags_override_defaults() {
        let config = ControllerConfig::from_args(
            args(&[
                "--home",
                "/srv/toygres",
                "--listen",
                "0.0.0.0:9000",
                "--token-file",
                "/etc/toygres/token",
                "--pg-bin-dir",
                "/opt/pg/bin",
                "--database-url",
                "",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(config.home.root(), Path::new("/srv/toygres"));
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.token_file, Path::new("/etc/toygres/token"));
        match config.cms {
            CmsLocation::Embedded { pg_bin_dir } => {
                assert_eq!(pg_bin_dir.as_deref(), Some(Path::new("/opt/pg/bin")))
            }
            other => panic!("expected the embedded CMS, got {other:?}"),
        }
    }

    #[test]
    fn relative_home_is_made_absolute() {
        let config = ControllerConfig::from_args(
            args(&["--home", "state", "--database-url", "host=db"]),
            None,
        )
        .unwrap();
        assert!(config.home.root().is_absolute());
        assert!(config.home.root().ends_with("state"));
    }

    #[test]
    fn bad_listen_address_is_refused_by_the_parser() {
        let err = TestCli::try_parse_from(["toygres", "--listen", "localhost"]).unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
    }
}
