//! The local platform's records: what it must remember about a member (its ports, pid and spec)
//! and about an instance's endpoints (their ports and routes), kept as JSON files so the pods can
//! be re-adopted after a controller restart. Each record has the shape of a CMS row: plain
//! fields, no secrets, references to credentials only.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use rand::Rng as _;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::home::write_file_atomically;
use crate::platform::{EndpointRoutes, MemberSpec};

/// The version of the records' layout this code writes.
const RECORD_VERSION: u32 = 1;

/// What the local platform remembers about one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub version: u32,
    /// What the member was created from. Its fields stand at the record's top level (the
    /// layout records had before it was its own struct, so older records still read).
    #[serde(flatten)]
    pub spec: MemberSpec,
    /// Postgres's loopback port, chosen at creation and never changed.
    pub pg_port: u16,
    /// The sidecar API's loopback port, chosen at creation and never changed.
    pub api_port: u16,
    /// The member's own network, chosen at creation and never changed; none (the default) is
    /// loopback in the controller's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<MemberNetwork>,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub log_file: PathBuf,
    /// The sidecar's pid when it was last started (it is its own process group's leader).
    pub pid: Option<i32>,
    /// Stopped on purpose (`kill_member`): not restarted until created again.
    #[serde(default)]
    pub stopped: bool,
    /// How many times the platform started this member's sidecar.
    #[serde(default)]
    pub starts: u64,
}

impl MemberRecord {
    /// A record for a new member, not started yet.
    pub fn new(
        spec: &MemberSpec,
        pg_port: u16,
        api_port: u16,
        data_dir: PathBuf,
        run_dir: PathBuf,
        log_file: PathBuf,
    ) -> Self {
        Self {
            version: RECORD_VERSION,
            spec: spec.clone(),
            pg_port,
            api_port,
            network: None,
            data_dir,
            run_dir,
            log_file,
            pid: None,
            stopped: false,
            starts: 0,
        }
    }
}

/// Where a member lives on the network when not on the controller's loopback: a network
/// namespace its sidecar (and so its Postgres) runs in, and the address it listens on there,
/// which the controller and the other members reach it at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNetwork {
    /// The address Postgres and the sidecar API listen on.
    pub host: std::net::IpAddr,
    /// The network namespace (`ip netns`) the sidecar runs in; none is the controller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl MemberNetwork {
    /// The networks of members by name, from a JSON file `{"<member>": {"host": …,
    /// "netns": …}, …}`; a member it does not name stays on loopback.
    pub fn read_map(path: &Path) -> anyhow::Result<std::collections::BTreeMap<String, Self>> {
        let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let map: std::collections::BTreeMap<String, Self> =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        for (member, network) in &map {
            if let Some(netns) = &network.netns {
                let valid = !netns.is_empty()
                    && netns.len() <= 64
                    && netns
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    bail!(
                        "{}: member {member}: invalid netns name {netns:?}",
                        path.display()
                    );
                }
            }
        }
        Ok(map)
    }
}

/// What the local platform remembers about an instance's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsRecord {
    pub version: u32,
    pub instance: String,
    /// The rw proxy's loopback port, chosen at creation and never changed.
    pub rw_port: u16,
    /// The ro proxy's loopback port, chosen at creation and never changed.
    pub ro_port: u16,
    /// Where the endpoints lead, as last routed.
    #[serde(default)]
    pub routes: EndpointRoutes,
}

impl EndpointsRecord {
    /// A record for new endpoints that lead nowhere yet.
    pub fn new(instance: &str, rw_port: u16, ro_port: u16) -> Self {
        Self {
            version: RECORD_VERSION,
            instance: instance.to_string(),
            rw_port,
            ro_port,
            routes: EndpointRoutes::default(),
        }
    }
}

/// Reads a record; `None` when the file does not exist.
pub fn read<T: DeserializeOwned + Versioned>(path: &Path) -> anyhow::Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let record: T =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    if record.version() > RECORD_VERSION {
        bail!(
            "{} was written by a newer controller (record version {}, this one knows {})",
            path.display(),
            record.version(),
            RECORD_VERSION
        );
    }
    Ok(Some(record))
}

/// Writes a record atomically (mode 0600).
pub fn write<T: Serialize>(path: &Path, record: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(record).context("serialize a record")?;
    write_file_atomically(path, &format!("{text}\n"), 0o600)
}

/// A record that carries its layout version.
pub trait Versioned {
    /// The layout version the record was written with.
    fn version(&self) -> u32;
}

impl Versioned for MemberRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

impl Versioned for EndpointsRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

/// The records of every member under `instances_dir` (`<instance>/<member>/member.json`), and
/// of every instance's endpoints. Unreadable records are logged and skipped.
#[derive(Debug, Default)]
pub struct AllRecords {
    pub members: Vec<MemberRecord>,
    pub endpoints: Vec<EndpointsRecord>,
}

impl AllRecords {
    /// Scans `instances_dir`.
    pub fn scan(instances_dir: &Path) -> anyhow::Result<Self> {
        let mut all = AllRecords::default();
        for instance_dir in subdirectories(instances_dir)? {
            match read::<EndpointsRecord>(&instance_dir.join("endpoints.json")) {
                Ok(Some(record)) => all.endpoints.push(record),
                Ok(None) => {}
                Err(e) => tracing::error!("skipping an endpoints record: {e:#}"),
            }
            for member_dir in subdirectories(&instance_dir)? {
                match read::<MemberRecord>(&member_dir.join("member.json")) {
                    Ok(Some(record)) => all.members.push(record),
                    Ok(None) => {}
                    Err(e) => tracing::error!("skipping a member record: {e:#}"),
                }
            }
        }
        all.members.sort_by(|a, b| {
            (&a.spec.instance, &a.spec.member).cmp(&(&b.spec.instance, &b.spec.member))
        });
        all.endpoints.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(all)
    }

    /// Every port the records hold, taken or not right now.
    pub fn ports(&self) -> HashSet<u16> {
        self.members
            .iter()
            .flat_map(|m| [m.pg_port, m.api_port])
            .chain(self.endpoints.iter().flat_map(|e| [e.rw_port, e.ro_port]))
            .collect()
    }
}

/// The directories directly inside `dir` (none when `dir` does not exist), sorted.
pub fn subdirectories(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// The lowest port [`bind_free_ports`] hands out.
const LOWEST_STABLE_PORT: u16 = 10_000;

/// Binds `count` loopback listeners on free ports that no record holds, all at once so the
/// ports differ from each other.
///
/// The ports come from below the kernel's ephemeral range (`ip_local_port_range`) when there is
/// room there: a member keeps its ports for life, and a port from the ephemeral range could be
/// taken by some outgoing connection while the member restarts.
pub fn bind_free_ports(
    count: usize,
    reserved: &HashSet<u16>,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut chosen: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    if let Some(range) = stable_port_range() {
        let mut rng = rand::thread_rng();
        for _ in 0..10_000 {
            if chosen.len() == count {
                return Ok(chosen);
            }
            let port = rng.gen_range(range.clone());
            if reserved.contains(&port) {
                continue;
            }
            // A port bound already (by us or anyone) fails here and another is tried.
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                chosen.push(listener);
            }
        }
    }
    // No room below the ephemeral range (or it is full): let the kernel choose.
    let mut skipped = Vec::new();
    while chosen.len() < count {
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).context("find a free loopback port")?;
        if reserved.contains(&port_of(&listener)?) {
            skipped.push(listener);
            if skipped.len() > 1000 {
                bail!("found no free loopback port that no record holds");
            }
        } else {
            chosen.push(listener);
        }
    }
    Ok(chosen)
}

/// The ports between [`LOWEST_STABLE_PORT`] and the start of the kernel's ephemeral range, when
/// there are at least a thousand.
fn stable_port_range() -> Option<std::ops::RangeInclusive<u16>> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = text.split_whitespace().next()?.parse().ok()?;
    let high = ephemeral_low.checked_sub(1)?;
    (high >= LOWEST_STABLE_PORT + 1000).then_some(LOWEST_STABLE_PORT..=high)
}

/// The port of a listener from [`bind_free_ports`].
pub fn port_of(listener: &std::net::TcpListener) -> anyhow::Result<u16> {
    Ok(listener
        .local_addr()
        .context("read a listener's port")?
        .port())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use toygres_common::names::PgAddress;

    use super::*;
    use crate::platform::{Bootstrap, Placement, SecretRefs};

    fn spec() -> MemberSpec {
        MemberSpec {
            instance: "db".into(),
            member: "db-1".into(),
            bootstrap: Bootstrap::Standby {
                primary: PgAddress {
                    host: "127.0.0.1".into(),
                    port: 6000,
                },
            },
            secrets: SecretRefs::for_instance("db"),
            placement: Placement {
                zone: Some("a".into()),
                size: None,
            },
            archive: None,
        }
    }

    #[test]
    fn records_round_trip_and_newer_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.json");
        assert!(read::<MemberRecord>(&path).unwrap().is_none());
        let mut record = MemberRecord::new(
            &spec(),
            6001,
            6002,
            "/h/data".into(),
            "/h/run".into(),
            "/h/log".into(),
        );
        record.pid = Some(42);
        write(&path, &record).unwrap();
        assert_eq!(read::<MemberRecord>(&path).unwrap(), Some(record.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("password\":\""), "{text}");

        record.version = RECORD_VERSION + 1;
        write(&path, &record).unwrap();
        let err = read::<MemberRecord>(&path).unwrap_err();
        assert!(err.to_string().contains("newer controller"), "{err}");
    }

    /// A record as controllers wrote it before `MemberRecord` held a `MemberSpec`: every field
    /// at the top level.
    const OLD_RECORD: &str = r#"{
  "version": 1,
  "instance": "db",
  "member": "db-1",
  "bootstrap": {
    "mode": "standby",
    "primary": {
      "host": "127.0.0.1",
      "port": 6000
    }
  },
  "secrets": {
    "superuser_password": {
      "instance": "db",
      "name": "superuser-password"
    },
    "replication_password": {
      "instance": "db",
      "name": "replication-password"
    },
    "sidecar_token": {
      "instance": "db",
      "name": "sidecar-token"
    }
  },
  "placement": {
    "zone": "a"
  },
  "pg_port": 6001,
  "api_port": 6002,
  "data_dir": "/d",
  "run_dir": "/r",
  "log_file": "/l",
  "pid": 42,
  "stopped": false,
  "starts": 3
}
"#;

    #[test]
    fn records_written_before_the_spec_was_embedded_still_read_and_keep_their_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.json");
        fs::write(&path, OLD_RECORD).unwrap();
        let mut expected =
            MemberRecord::new(&spec(), 6001, 6002, "/d".into(), "/r".into(), "/l".into());
        expected.pid = Some(42);
        expected.starts = 3;
        let record = read::<MemberRecord>(&path).unwrap().unwrap();
        assert_eq!(record, expected);
        // Written again, it has the same fields as before.
        let written = serde_json::to_value(&record).unwrap();
        let old: serde_json::Value = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(written, old);
    }

    #[test]
    fn scan_finds_every_record_and_their_ports() {
        let dir = tempfile::tempdir().unwrap();
        let member_dir = dir.path().join("db/db-1");
        fs::create_dir_all(&member_dir).unwrap();
        fs::create_dir_all(dir.path().join("db/secrets")).unwrap();
        let record = MemberRecord::new(&spec(), 6001, 6002, "/d".into(), "/r".into(), "/l".into());
        write(&member_dir.join("member.json"), &record).unwrap();
        write(
            &dir.path().join("db/endpoints.json"),
            &EndpointsRecord::new("db", 7001, 7002),
        )
        .unwrap();
        let all = AllRecords::scan(dir.path()).unwrap();
        assert_eq!(all.members, vec![record]);
        assert_eq!(all.endpoints.len(), 1);
        assert_eq!(all.ports(), HashSet::from([6001, 6002, 7001, 7002]));
        assert!(AllRecords::scan(&dir.path().join("missing"))
            .unwrap()
            .members
            .is_empty());
    }

    #[test]
    fn free_ports_differ_and_avoid_reserved_ones() {
        let first = bind_free_ports(3, &HashSet::new()).unwrap();
        let ports: HashSet<u16> = first.iter().map(|l| port_of(l).unwrap()).collect();
        assert_eq!(ports.len(), 3);
        let more = bind_free_ports(2, &ports).unwrap();
        for listener in &more {
            assert!(!ports.contains(&port_of(listener).unwrap()));
        }
        if let Some(range) = stable_port_range() {
            for listener in first.iter().chain(&more) {
                assert!(range.contains(&port_of(listener).unwrap()));
            }
        }
    }
}
