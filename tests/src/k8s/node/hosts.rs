//! Name resolution for pods without a cluster DNS: each pod's `/etc/hosts` (the file
//! `/etc/netns/<netns>/hosts`, which `ip netns exec` bind-mounts over `/etc/hosts` for the
//! pod's processes) lists the pod itself and every running pod that has a `hostname` and a
//! `subdomain` — what StatefulSet pods get from their governing headless Service — under the
//! names cluster DNS would answer (`web-0.web.ns.svc.cluster.local`, `….svc`, `web-0.web.ns`, and
//! `web-0.web` for pods of the same namespace), and the governing headless Service's own names
//! (`web.ns.svc.cluster.local` … `web`) on every such pod's line, so that a lookup answers with
//! all its pods' IPs, as cluster DNS does for a headless Service. Files are rewritten in place
//! whenever a pod starts or stops, so the bind mounts see the change. Other Service names
//! (ClusterIPs) are not resolvable: there is no kube-proxy to route them.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// What the hosts files need to know about one running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub ip: Ipv4Addr,
}

/// The hosts file of pod `me` among `pods`.
pub fn hosts_file(me: &PodName, pods: &[PodName]) -> String {
    let mut lines: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    let own = me.hostname.clone().unwrap_or_else(|| me.name.clone());
    lines.entry(me.ip).or_default().push(own);
    for pod in pods {
        let (Some(host), Some(sub)) = (&pod.hostname, &pod.subdomain) else {
            continue;
        };
        let ns = &pod.namespace;
        let names = lines.entry(pod.ip).or_default();
        names.push(format!("{host}.{sub}.{ns}.svc.cluster.local"));
        names.push(format!("{host}.{sub}.{ns}.svc"));
        names.push(format!("{host}.{sub}.{ns}"));
        if *ns == me.namespace {
            names.push(format!("{host}.{sub}"));
        }
        // The headless Service: every one of its pods' lines names it.
        names.push(format!("{sub}.{ns}.svc.cluster.local"));
        names.push(format!("{sub}.{ns}.svc"));
        names.push(format!("{sub}.{ns}"));
        if *ns == me.namespace {
            names.push(sub.clone());
        }
    }
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (ip, mut names) in lines {
        names.dedup();
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    out
}

/// `/etc/netns/<netns>/hosts`.
pub fn hosts_path(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns).join("hosts")
}

/// Writes every pod's hosts file (in place: the same inode stays bind-mounted).
pub fn write_all(pods: &[(String, PodName)]) {
    let names: Vec<PodName> = pods.iter().map(|(_, p)| p.clone()).collect();
    for (netns, me) in pods {
        let path = hosts_path(netns);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let text = hosts_file(me, &names);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!("write {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, sub: Option<&str>, ip: [u8; 4]) -> PodName {
        PodName {
            namespace: ns.into(),
            name: name.into(),
            hostname: sub.map(|_| name.to_string()),
            subdomain: sub.map(String::from),
            ip: ip.into(),
        }
    }

    #[test]
    fn statefulset_pods_resolve_by_their_dns_names_short_forms_only_in_the_same_namespace() {
        let me = pod("a", "web-0", Some("web"), [10, 244, 1, 2]);
        let pods = vec![
            me.clone(),
            pod("a", "web-1", Some("web"), [10, 244, 1, 3]),
            pod("b", "db-0", Some("db"), [10, 244, 1, 4]),
            pod("a", "loose", None, [10, 244, 1, 5]),
        ];
        let text = hosts_file(&me, &pods);
        let service = " web.a.svc.cluster.local web.a.svc web.a web\n";
        assert!(text.contains(&format!("10.244.1.2\tweb-0 web-0.web.a.svc.cluster.local web-0.web.a.svc web-0.web.a web-0.web{service}")), "{text}");
        assert!(
            text.contains(&format!(
                "10.244.1.3\tweb-1.web.a.svc.cluster.local web-1.web.a.svc web-1.web.a web-1.web{service}"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "10.244.1.4\tdb-0.db.b.svc.cluster.local db-0.db.b.svc db-0.db.b db.b.svc.cluster.local db.b.svc db.b\n"
            ),
            "{text}"
        );
        assert!(!text.contains("loose"), "{text}");
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
    }
}
