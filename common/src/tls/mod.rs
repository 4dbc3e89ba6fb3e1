//! TLS with a CA per instance. The controller issues every instance its own CA, and from it a
//! server certificate per member and client certificates for `replicator` (replication),
//! `toygres_rewind` (pg_rewind, [`REWIND_ROLE`]) and `postgres` (the sidecar's queries to
//! another member). A member finds its
//! certificates as files in one directory ([`MemberTlsFiles`]); a client proves the server is a
//! member of the instance by verifying its certificate against the instance's CA, before any
//! password is sent.
//!
//! Names: a member's certificate names every way it is reached by name (loopback locally, the
//! member's pod in the headless `<instance>-members` Service and the `-rw`/`-ro` Services on
//! Kubernetes). A pod IP is not known when the certificate is issued, so a connection to a
//! non-loopback IP address checks the chain only ([`checks_name`]): the instance's CA signs
//! nothing but its own members, so the chain alone proves membership.

pub mod https;
#[cfg(feature = "server")]
pub mod listen;
#[cfg(feature = "pg-tls")]
pub mod pg;
#[cfg(feature = "pki")]
pub mod pki;
pub mod verify;

use std::path::{Path, PathBuf};

/// The instance's CA certificate (public).
pub const CA_CERT: &str = "ca.crt";
/// The member's server certificate and key.
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
/// The client certificate and key standbys replicate with (CN `replicator`).
pub const REPLICATOR_CERT: &str = "replicator.crt";
pub const REPLICATOR_KEY: &str = "replicator.key";
/// The client certificate and key of the superuser (CN `postgres`), for the sidecar's queries
/// to another member.
pub const SUPERUSER_CERT: &str = "superuser.crt";
pub const SUPERUSER_KEY: &str = "superuser.key";
/// The client certificate and key of [`REWIND_ROLE`], which pg_rewind reads the primary as.
pub const REWIND_CERT: &str = "rewind.crt";
pub const REWIND_KEY: &str = "rewind.key";

/// The Postgres role pg_rewind connects as: not a superuser, allowed only the functions
/// pg_rewind calls, authenticated by its client certificate (CN the role's name) and never by a
/// password.
pub const REWIND_ROLE: &str = "toygres_rewind";

/// Every file of a member's TLS directory, and whether it is a private key.
pub const MEMBER_FILES: [(&str, bool); 9] = [
    (CA_CERT, false),
    (SERVER_CERT, false),
    (SERVER_KEY, true),
    (REPLICATOR_CERT, false),
    (REPLICATOR_KEY, true),
    (SUPERUSER_CERT, false),
    (SUPERUSER_KEY, true),
    (REWIND_CERT, false),
    (REWIND_KEY, true),
];

/// The files of [`MEMBER_FILES`] a member's directory may lack: members issued their
/// certificates before pg_rewind had its own role get them at the next renewal, and until then
/// rewind as the superuser.
pub const OPTIONAL_MEMBER_FILES: [&str; 2] = [REWIND_CERT, REWIND_KEY];

/// Whether a member's TLS directory may lack file `name` ([`OPTIONAL_MEMBER_FILES`]).
pub fn is_optional(name: &str) -> bool {
    OPTIONAL_MEMBER_FILES.contains(&name)
}

/// Each client certificate of a member's TLS directory with its key.
pub const CLIENT_PAIRS: [(&str, &str); 3] = [
    (REPLICATOR_CERT, REPLICATOR_KEY),
    (SUPERUSER_CERT, SUPERUSER_KEY),
    (REWIND_CERT, REWIND_KEY),
];

/// The paths of a member's TLS files in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTlsFiles {
    pub dir: PathBuf,
}

impl MemberTlsFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.file(CA_CERT)
    }
    pub fn server_cert(&self) -> PathBuf {
        self.file(SERVER_CERT)
    }
    pub fn server_key(&self) -> PathBuf {
        self.file(SERVER_KEY)
    }
    pub fn replicator_cert(&self) -> PathBuf {
        self.file(REPLICATOR_CERT)
    }
    pub fn replicator_key(&self) -> PathBuf {
        self.file(REPLICATOR_KEY)
    }
    pub fn superuser_cert(&self) -> PathBuf {
        self.file(SUPERUSER_CERT)
    }
    pub fn superuser_key(&self) -> PathBuf {
        self.file(SUPERUSER_KEY)
    }
    pub fn rewind_cert(&self) -> PathBuf {
        self.file(REWIND_CERT)
    }
    pub fn rewind_key(&self) -> PathBuf {
        self.file(REWIND_KEY)
    }
    /// The files that are missing from the directory.
    pub fn missing(&self) -> Vec<&'static str> {
        MEMBER_FILES
            .iter()
            .filter(|(name, _)| !self.file(name).is_file())
            .map(|(name, _)| *name)
            .collect()
    }
    /// The files without which a sidecar cannot start (all but [`OPTIONAL_MEMBER_FILES`]).
    pub fn missing_required(&self) -> Vec<&'static str> {
        self.missing()
            .into_iter()
            .filter(|name| !is_optional(name))
            .collect()
    }
}

/// Whether a connection to `host` checks the certificate's names as well as its chain: always,
/// but for a non-loopback IP address (a pod IP, unknown when the certificate was issued).
pub fn checks_name(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => true,
    }
}

/// The libpq `sslmode` a member uses to reach `host`: `verify-full`, or `verify-ca` where
/// [`checks_name`] says the name cannot be checked. Both refuse a server without TLS or whose
/// certificate is not from the instance's CA, before any password is sent.
pub fn libpq_sslmode(host: &str) -> &'static str {
    if checks_name(host) {
        "verify-full"
    } else {
        "verify-ca"
    }
}

/// libpq connection parameters for TLS to a member at `host` with the CA in `ca`, presenting
/// the client certificate `cert`/`key` when given: `sslmode=… sslrootcert=… [sslcert=… sslkey=…]`.
pub fn libpq_params(host: &str, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let quote = |p: &Path| {
        format!(
            "'{}'",
            p.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
        )
    };
    let mut params = format!("sslmode={} sslrootcert={}", libpq_sslmode(host), quote(ca));
    if let Some((cert, key)) = client {
        params.push_str(&format!(" sslcert={} sslkey={}", quote(cert), quote(key)));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_except_for_pod_ips() {
        assert!(checks_name("127.0.0.1"));
        assert!(checks_name("::1"));
        assert!(checks_name("localhost"));
        assert!(checks_name("db-0-0.db-members.ns.svc"));
        assert!(!checks_name("10.1.2.3"));
        assert_eq!(libpq_sslmode("127.0.0.1"), "verify-full");
        assert_eq!(libpq_sslmode("10.1.2.3"), "verify-ca");
    }

    #[test]
    fn libpq_params_quote_paths_and_name_the_client_certificate() {
        let files = MemberTlsFiles::new("/t/it's");
        let params = libpq_params(
            "127.0.0.1",
            &files.ca_cert(),
            Some((&files.replicator_cert(), &files.replicator_key())),
        );
        assert_eq!(
            params,
            "sslmode=verify-full sslrootcert='/t/it\\'s/ca.crt' \
             sslcert='/t/it\\'s/replicator.crt' sslkey='/t/it\\'s/replicator.key'"
        );
    }
}
