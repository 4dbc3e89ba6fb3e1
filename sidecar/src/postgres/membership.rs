//! Which servers a member may connect to with credentials: only members of its own instance
//! ([`check_member_address`]).

use std::net::IpAddr;
use std::path::Path;

use toygres_common::names::PgAddress;

use super::member::OpError;

/// Refuses a primary that is not a member of this member's own instance: following a server
/// sends it the replication password, and a rewind the superuser's (issue 14). The members are
/// known without being told:
///
/// - on the local platform (a `member.json` beside the data directory): the address of a
///   sibling member's record of the same instance (its `pg_port`, on loopback or on the host
///   its `network` names);
/// - on Kubernetes (`KUBERNETES_SERVICE_HOST` set): a name in the instance's headless domain,
///   `<instance>-<n>-0.<instance>-members[.<namespace>…]` (the pod of member `<instance>-<n>`),
///   or the IP address of one of those pods: the headless `<instance>-members` Service resolves
///   to every member pod's IP, ready or not ([`member_pod_ips`]);
/// - a sidecar run by hand, outside both, has no member list and follows what it is told.
pub async fn check_member_address(
    cfg: &super::settings::MemberSettings,
    address: &PgAddress,
) -> Result<(), OpError> {
    let Some(instance) = instance_of(&cfg.member_name) else {
        return Ok(());
    };
    let member_dir = cfg.data_dir.parent();
    let allowed = match member_dir {
        Some(dir) if dir.join("member.json").is_file() => {
            dir.parent().is_some_and(|instance_dir| {
                sibling_addresses(instance_dir, instance)
                    .iter()
                    .any(|(host, port)| {
                        *port == address.port
                            && match host {
                                Some(host) => *host == address.host,
                                None => is_loopback(&address.host),
                            }
                    })
            })
        }
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            match address.host.parse::<IpAddr>() {
                Ok(ip) => member_pod_ips(instance).await?.contains(&ip),
                Err(_) => in_members_domain(instance, &address.host),
            }
        }
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(OpError::invalid(
            "not_a_member",
            format!("{address} is not a member of instance {instance}; refusing to connect to it"),
        ))
    }
}

/// The IP addresses of the instance's member pods: what its headless `<instance>-members`
/// Service resolves to (in this pod's namespace, through the resolver's search path).
async fn member_pod_ips(instance: &str) -> Result<Vec<IpAddr>, OpError> {
    let service = format!("{instance}-members");
    let resolved = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((service.as_str(), 0)),
    )
    .await
    .map_err(|_| OpError::Unavailable(format!("resolving {service} timed out")))?
    .map_err(|e| OpError::Unavailable(format!("resolve {service}: {e}")))?;
    Ok(resolved.map(|socket| socket.ip()).collect())
}

/// The instance of member `<instance>-<n>`.
fn instance_of(member: &str) -> Option<&str> {
    let (instance, n) = member.rsplit_once('-')?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then_some(instance)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The Postgres addresses of the members recorded under the local platform's instance
/// directory: the host of the record's `network` (none: loopback) and its `pg_port`.
fn sibling_addresses(instance_dir: &Path, instance: &str) -> Vec<(Option<String>, u16)> {
    let Ok(entries) = std::fs::read_dir(instance_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| instance_of(&e.file_name().to_string_lossy()) == Some(instance))
        .filter_map(|e| std::fs::read(e.path().join("member.json")).ok())
        .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(|record| record["instance"] == instance)
        .filter_map(|record| {
            let port = u16::try_from(record["pg_port"].as_u64()?).ok()?;
            let host = record["network"]["host"].as_str().map(str::to_string);
            Some((host, port))
        })
        .collect()
}

/// `<instance>-<n>.<instance>-members`, optionally followed by the rest of a cluster domain.
fn in_members_domain(instance: &str, host: &str) -> bool {
    let Some((pod, rest)) = host.split_once('.') else {
        return false;
    };
    let domain = format!("{instance}-members");
    let service_matches = rest == domain || rest.starts_with(&format!("{domain}."));
    // A member `<instance>-<n>` runs as the StatefulSet's pod `<instance>-<n>-0`.
    let member = pod.strip_suffix("-0").unwrap_or(pod);
    instance_of(member) == Some(instance) && service_matches
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    #[test]
    fn the_headless_domain_names_only_the_instances_members() {
        assert!(in_members_domain("side", "side-1.side-members"));
        assert!(in_members_domain("side", "side-1-0.side-members.db.svc"));
        assert!(in_members_domain(
            "side",
            "side-12.side-members.db.svc.cluster.local"
        ));
        assert!(!in_members_domain("side", "evil.example.com"));
        assert!(!in_members_domain("side", "side-1.side-membersx"));
        assert!(!in_members_domain("side", "other-1.other-members"));
        assert!(!in_members_domain("side", "side-x.side-members"));
        assert!(!in_members_domain("side", "10.0.0.7"));
    }

    #[test]
    fn local_members_are_the_sibling_records_of_the_same_instance() {
        let dir = tempfile::tempdir().unwrap();
        let write = |member: &str, instance: &str, port: u16, host: Option<&str>| {
            let path = dir.path().join(member);
            std::fs::create_dir_all(&path).unwrap();
            let mut record = serde_json::json!({"instance": instance, "pg_port": port});
            if let Some(host) = host {
                record["network"] = serde_json::json!({"host": host, "netns": "ns"});
            }
            std::fs::write(path.join("member.json"), record.to_string()).unwrap();
        };
        write("side-0", "side", 5001, None);
        write("side-1", "side", 5002, Some("10.231.7.3"));
        write("sidecar-0", "sidecar", 5003, None);
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        let mut addresses = sibling_addresses(dir.path(), "side");
        addresses.sort_unstable();
        assert_eq!(
            addresses,
            [(None, 5001), (Some("10.231.7.3".to_string()), 5002)]
        );
        assert_eq!(instance_of("side-0"), Some("side"));
        assert_eq!(instance_of("my-db-3"), Some("my-db"));
        assert_eq!(instance_of("nodash"), None);
    }
}
