//! Names of instances and members, validated once at the boundary.

use std::fmt;

/// Longest instance name: leaves room for `-<n>` member suffixes and `-ro`/`-members` Services
/// within Kubernetes' 63-character label limit.
pub const MAX_INSTANCE_NAME_LEN: usize = 40;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

/// Checks an instance name: a DNS-1123 label of at most 40 characters that starts with a letter.
pub fn validate_instance_name(name: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("must not be empty");
    }
    if name.len() > MAX_INSTANCE_NAME_LEN {
        return fail("must be at most 40 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return fail("must start with a lowercase letter");
    }
    if name.ends_with('-') {
        return fail("must not end with '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return fail("may contain only lowercase letters, digits and '-'");
    }
    Ok(())
}

/// Checks a member name (`<instance>-<n>`, or any DNS-1123 label of at most 63 characters).
pub fn validate_member_name(name: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 63 {
        return fail("must be 1 to 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return fail("must start with a lowercase letter and not end with '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return fail("may contain only lowercase letters, digits and '-'");
    }
    Ok(())
}

/// The physical replication slot a member streams through: its name with `-` turned into `_`
/// (slot names allow only lowercase letters, digits and underscores).
pub fn slot_name_for_member(member: &str) -> String {
    member.replace('-', "_")
}

/// A `host:port` address of a Postgres server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgAddress {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for PgAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for PgAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(format!("{s:?} has an invalid host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has an invalid port"))?;
        if port == 0 {
            return Err(format!("{s:?} has an invalid port"));
        }
        Ok(PgAddress {
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_follow_dns_1123() {
        assert!(validate_instance_name("orders-db1").is_ok());
        for bad in ["", "1abc", "Abc", "a_b", "a-", &"a".repeat(41), "a.b"] {
            assert!(validate_instance_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_instance_name(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn slot_names_replace_dashes() {
        assert_eq!(slot_name_for_member("orders-1"), "orders_1");
    }

    #[test]
    fn addresses_parse_and_print() {
        let a: PgAddress = "127.0.0.1:5432".parse().unwrap();
        assert_eq!(a.port, 5432);
        assert_eq!(a.to_string(), "127.0.0.1:5432");
        let v6: PgAddress = "[::1]:6000".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:6000");
        for bad in ["nohost", ":5432", "h:0", "h:99999", "h o:1", "a'b:1"] {
            assert!(bad.parse::<PgAddress>().is_err(), "{bad:?} accepted");
        }
    }
}
