//! The backup store an instance gets when its create request names none: the operator's
//! `--default-backup-store` (with `--default-backup-credentials`), else the platform's own
//! (the local platform's `file://` store under `$TOYGRES_HOME/backups`; Kubernetes has none,
//! so there the chart's `backup.storeUrl` value sets the flag).

use toygres_common::backup_api::{validate_secret_name, BackupConfig};
use toygres_common::store_url::StoreUrl;

/// The flags of `toygres controller` that set the default backup store.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DefaultBackupArgs {
    /// The object store (file:///path, s3://bucket/prefix, az://container/prefix,
    /// gs://bucket/prefix) of instances whose create request names none [default: the local
    /// platform's $TOYGRES_HOME/backups; none on Kubernetes]
    #[arg(long, env = "TOYGRES_DEFAULT_BACKUP_STORE", value_name = "URL",
          value_parser = parse_store_url)]
    pub default_backup_store: Option<String>,

    /// The store secret (registered with `toygres secret set`, or a Kubernetes Secret) holding
    /// the default store's credentials; used only with --default-backup-store
    #[arg(long, env = "TOYGRES_DEFAULT_BACKUP_CREDENTIALS", value_name = "SECRET",
          requires = "default_backup_store", value_parser = parse_secret_name)]
    pub default_backup_credentials: Option<String>,
}

fn parse_store_url(url: &str) -> Result<String, String> {
    url.trim()
        .parse::<StoreUrl>()
        .map(|url| url.to_string())
        .map_err(|e| e.to_string())
}

fn parse_secret_name(name: &str) -> Result<String, String> {
    validate_secret_name(name)
        .map(|()| name.to_string())
        .map_err(|e| e.message)
}

/// The store (and its credentials) that instances get by default; `None`: create requests must
/// name a store or turn backups off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultBackupStore {
    pub url: Option<String>,
    pub credentials_secret: Option<String>,
}

impl DefaultBackupStore {
    /// The operator's flags when they name a store, else the platform's default (which needs
    /// no credentials).
    pub fn resolve(args: &DefaultBackupArgs, platform_default: Option<String>) -> Self {
        match &args.default_backup_store {
            Some(url) => Self {
                url: Some(url.clone()),
                credentials_secret: args.default_backup_credentials.clone(),
            },
            None => Self {
                url: platform_default,
                credentials_secret: None,
            },
        }
    }

    /// Fills in a create request's store when it names none. The default credentials come
    /// only with the default store: a request that names its own store names its own secret.
    /// Err: there is no default store.
    pub fn complete(&self, config: &mut BackupConfig) -> Result<(), String> {
        if config.store_url.is_some() {
            return Ok(());
        }
        let url = self.url.clone().ok_or_else(|| {
            "backup.store_url: this controller has no default backup store; name one \
             (--backup-store), turn backups off (--no-backup), or start the controller with \
             --default-backup-store (the Helm chart's backup.storeUrl value)"
                .to_string()
        })?;
        config.store_url = Some(url);
        if config.credentials_secret.is_none() {
            config.credentials_secret = self.credentials_secret.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use toygres_common::backup_api::BackupConfig;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DefaultBackupArgs,
    }

    fn parse(argv: &[&str]) -> Result<DefaultBackupArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn config() -> BackupConfig {
        BackupConfig::from_request(None).unwrap().unwrap()
    }

    #[test]
    fn the_operators_store_and_secret_win_over_the_platforms_default() {
        let args = parse(&[
            "--default-backup-store",
            "s3://fleet-backups/prod/",
            "--default-backup-credentials",
            "s3-keys",
        ])
        .unwrap();
        let store = DefaultBackupStore::resolve(&args, Some("file:///var/b".into()));
        let mut defaulted = config();
        store.complete(&mut defaulted).unwrap();
        assert_eq!(
            defaulted.store_url.as_deref(),
            Some("s3://fleet-backups/prod")
        );
        assert_eq!(defaulted.credentials_secret.as_deref(), Some("s3-keys"));

        // A request naming its own store keeps it and gets no default secret.
        let mut own = config();
        own.store_url = Some("s3://other/x".into());
        store.complete(&mut own).unwrap();
        assert_eq!(own.store_url.as_deref(), Some("s3://other/x"));
        assert_eq!(own.credentials_secret, None);
    }

    #[test]
    fn without_flags_the_platforms_default_applies_and_none_is_a_clear_error() {
        let args = parse(&[]).unwrap();
        let local = DefaultBackupStore::resolve(&args, Some("file:///home/b".into()));
        let mut c = config();
        local.complete(&mut c).unwrap();
        assert_eq!(c.store_url.as_deref(), Some("file:///home/b"));
        assert_eq!(c.credentials_secret, None);

        let none = DefaultBackupStore::resolve(&args, None);
        let err = none.complete(&mut config()).unwrap_err();
        assert!(err.starts_with("backup.store_url:"), "{err}");
        assert!(err.contains("backup.storeUrl"), "{err}");
    }

    #[test]
    fn bad_flags_are_refused_when_the_controller_starts() {
        assert!(parse(&["--default-backup-store", "ftp://x"]).is_err());
        assert!(parse(&["--default-backup-store", "s3://AKIA:key@bucket/p"]).is_err());
        assert!(parse(&[
            "--default-backup-store",
            "s3://b/p",
            "--default-backup-credentials",
            "AKIAXXXX/secret"
        ])
        .is_err());
        // Credentials without a store mean nothing.
        assert!(parse(&["--default-backup-credentials", "s3-keys"]).is_err());
    }
}
