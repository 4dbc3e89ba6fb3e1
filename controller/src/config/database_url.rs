//! `DATABASE_URL`, the connection string of an external CMS: parsed with the controller's
//! defaults, rebuilt as the URL the duroxide store reads, described for logs without its
//! password, and never printed.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

/// A connection string that may hold a password: never printed (`Debug` is redacted).
#[derive(Clone)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL itself, for the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretUrl(<redacted>)")
    }
}

/// `DATABASE_URL` could not be used. Never carries the URL itself: it may hold a password.
#[derive(Debug, thiserror::Error)]
#[error("DATABASE_URL is not a valid PostgreSQL connection string: {0}")]
pub struct DatabaseUrlError(String);

/// Parses `DATABASE_URL` (a `postgresql://` URL or `key=value` string) and fills in the
/// controller's defaults (application name, connect timeout).
pub fn parse_database_url(url: &str) -> Result<tokio_postgres::Config, DatabaseUrlError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| DatabaseUrlError(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(DatabaseUrlError("it names no host".into()));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(DatabaseUrlError(
            "sslmode=require is not supported yet (the controller speaks to the CMS without TLS)"
                .into(),
        ));
    }
    if config.get_application_name().is_none() {
        config.application_name("toygres-controller");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    Ok(config)
}

/// `DATABASE_URL` as a URL the duroxide store accepts: a `postgres://` URL as given, a
/// `key=value` string rebuilt as one (sqlx reads only URLs).
pub fn store_url(given: &str, config: &tokio_postgres::Config) -> SecretUrl {
    let given = given.trim();
    if given.starts_with("postgres://") || given.starts_with("postgresql://") {
        return SecretUrl(given.to_string());
    }
    let encode = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(*b).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let mut url = String::from("postgres://");
    if let Some(user) = config.get_user() {
        url.push_str(&encode(user.as_bytes()));
        if let Some(password) = config.get_password() {
            url.push(':');
            url.push_str(&encode(password));
        }
        url.push('@');
    }
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut socket = None;
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => url.push_str(&format!("{host}:{port}")),
        Some(Host::Unix(path)) => {
            url.push_str(&format!("localhost:{port}"));
            socket = Some(encode(path.as_os_str().as_encoded_bytes()));
        }
        None => url.push_str(&format!("localhost:{port}")),
    }
    url.push('/');
    url.push_str(&encode(
        config.get_dbname().unwrap_or("postgres").as_bytes(),
    ));
    if let Some(socket) = socket {
        url.push_str(&format!("?host={socket}"));
    }
    SecretUrl(url)
}

/// Where a CMS connection goes (`host:port/dbname`), without user or password, for logs.
pub fn describe_cms(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{dbname}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bad_database_url_error_does_not_echo_the_password() {
        let err = parse_database_url("postgres://cms:s3cret@db:notaport/toygres").unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("DATABASE_URL is not a valid"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn database_url_gets_controller_defaults_and_a_redacted_description() {
        let config = parse_database_url("postgres://cms:s3cret@db.example:6432/toygres").unwrap();
        assert_eq!(config.get_application_name(), Some("toygres-controller"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(5)));
        let description = describe_cms(&config);
        assert_eq!(description, "db.example:6432/toygres");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_key_value_database_url_becomes_a_url_for_the_store() {
        let given = "host=db.example port=6432 user=cms password='p@ss word' dbname=toygres";
        let url = store_url(given, &parse_database_url(given).unwrap());
        assert_eq!(
            url.expose(),
            "postgres://cms:p%40ss%20word@db.example:6432/toygres"
        );
        assert_eq!(format!("{url:?}"), "SecretUrl(<redacted>)");
        let given = "postgresql://cms:x@db/toygres";
        assert_eq!(
            store_url(given, &parse_database_url(given).unwrap()).expose(),
            given
        );
    }

    #[test]
    fn database_url_requiring_tls_is_refused() {
        let err = parse_database_url("postgres://db/toygres?sslmode=require").unwrap_err();
        assert!(err.to_string().contains("sslmode=require"), "{err}");
    }
}
