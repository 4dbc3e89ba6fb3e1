//! An instance's application access: the database applications use and the role that owns it.
//! The superuser stays for the platform; applications get an owner that cannot create roles or
//! databases (as CloudNativePG's `app` user). The names are checked here, once, at the boundary.

use serde::{Deserialize, Serialize};

use crate::request::InvalidRequest;

/// Role and database names the platform keeps for itself.
const RESERVED: [&str; 5] = ["postgres", "replicator", "template0", "template1", "public"];

/// The application database and its owner role, as the create request names them (each
/// defaults to the instance's name).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppAccess {
    pub database: String,
    pub owner: String,
}

impl AppAccess {
    /// Checks the names asked for, defaulting each to the instance's name.
    pub fn from_request(
        instance: &str,
        database: Option<&str>,
        owner: Option<&str>,
    ) -> Result<Self, InvalidRequest> {
        let database = database.unwrap_or(instance);
        let owner = owner.unwrap_or(instance);
        validate_identifier(database).map_err(|m| InvalidRequest::new("database", m))?;
        validate_identifier(owner).map_err(|m| InvalidRequest::new("owner", m))?;
        Ok(Self {
            database: database.to_string(),
            owner: owner.to_string(),
        })
    }
}

/// A role or database name usable unquoted in a URI and quoted in SQL: lowercase letters,
/// digits, `_` and `-`, starting with a letter or `_`, at most 63 bytes, not one the platform
/// keeps nor starting with `pg_`.
pub fn validate_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} must be 1 to 63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        return Err(format!(
            "{name:?} must start with a lowercase letter or '_'"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?} may hold only lowercase letters, digits, '_' and '-'"
        ));
    }
    if RESERVED.contains(&name) || name.starts_with("pg_") {
        return Err(format!("{name:?} is reserved for the platform"));
    }
    Ok(())
}

/// What a program needs to connect as the application (`toygres connect NAME -o json`): URIs
/// that carry no password (with a passfile they name it, and libpq reads the password there).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConnection {
    pub user: String,
    pub database: String,
    pub host: String,
    pub rw_port: u16,
    pub ro_port: u16,
    /// Where the password is (a file in local mode; a Secret's key on Kubernetes).
    pub password_location: Option<String>,
    /// A libpq password file (mode 0600) with the user's password, if the platform keeps one.
    pub passfile: Option<String>,
    /// The read-write endpoint.
    pub rw: String,
    /// The read-only endpoint.
    pub ro: String,
    /// Every member, `target_session_attrs=read-write`.
    pub multi_host: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_default_to_the_instance_and_bad_names_are_refused() {
        let app = AppAccess::from_request("shop-1", None, None).unwrap();
        assert_eq!(app.database, "shop-1");
        assert_eq!(app.owner, "shop-1");
        let app = AppAccess::from_request("shop", Some("orders"), Some("app_user")).unwrap();
        assert_eq!(
            (app.database.as_str(), app.owner.as_str()),
            ("orders", "app_user")
        );
        for (db, owner, field) in [
            (Some("postgres"), None, "database"),
            (None, Some("replicator"), "owner"),
            (None, Some("pg_monitor"), "owner"),
            (Some("Orders"), None, "database"),
            (Some("a b"), None, "database"),
            (None, Some(""), "owner"),
            (Some("1db"), None, "database"),
        ] {
            let err = AppAccess::from_request("shop", db, owner).unwrap_err();
            assert_eq!(err.field, field, "{db:?} {owner:?}");
        }
        assert!(validate_identifier(&"a".repeat(64)).is_err());
    }
}
