//! Profiles: settings sized to an instance from PGTune's published formulas
//! (<https://pgtune.leopard.in.ua>, PostgreSQL 15, Linux). `oltp`, `analytics` (PGTune's "data
//! warehouse"), `general` ("mixed") and `development` ("desktop"). Settings Toygres owns
//! (`wal_level`, `huge_pages`) and values below Toygres's floors are left out: PGTune's
//! `development` profile turns replication off, which a Toygres instance never does.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A workload a profile is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Oltp,
    Analytics,
    General,
    Development,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Oltp,
        Profile::Analytics,
        Profile::General,
        Profile::Development,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Oltp => "oltp",
            Profile::Analytics => "analytics",
            Profile::General => "general",
            Profile::Development => "development",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown profile {s:?}: oltp, analytics, general or development")
            })
    }
}

/// The storage an instance's data lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Hdd,
    Ssd,
    San,
}

impl FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hdd" => Ok(Storage::Hdd),
            "ssd" => Ok(Storage::Ssd),
            "san" => Ok(Storage::San),
            other => Err(format!("unknown storage {other:?}: hdd, ssd or san")),
        }
    }
}

/// What an instance declares about its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub memory_mb: u64,
    pub cpus: u32,
    pub storage: Storage,
}

impl From<&toygres_common::controller_api::InstanceSize> for Size {
    /// A declared size (already validated: storage `ssd`, `hdd` or `san`, `ssd` by default).
    fn from(size: &toygres_common::controller_api::InstanceSize) -> Self {
        Size {
            memory_mb: size.memory_mb,
            cpus: size.cpus,
            storage: size
                .storage
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(Storage::Ssd),
        }
    }
}

const MB_IN_KB: u64 = 1024;
const GB_IN_KB: u64 = 1024 * 1024;

/// The settings `profile` gives an instance of `size`, as Postgres spells them (memory in kB).
pub fn settings(profile: Profile, size: Size) -> BTreeMap<&'static str, String> {
    let memory_kb = size.memory_mb * MB_IN_KB;
    let kb = |v: u64| format!("{v}kB");
    let mut out = BTreeMap::new();

    let max_connections: u64 = match profile {
        Profile::Oltp => 300,
        Profile::Analytics => 40,
        Profile::General => 100,
        Profile::Development => 20,
    };
    let shared_buffers = match profile {
        Profile::Development => memory_kb / 16,
        _ => memory_kb / 4,
    };
    let effective_cache_size = match profile {
        Profile::Development => memory_kb / 4,
        _ => memory_kb * 3 / 4,
    };
    let maintenance_work_mem = match profile {
        Profile::Analytics => memory_kb / 8,
        _ => memory_kb / 16,
    }
    .min(8 * GB_IN_KB);
    // 3% of shared_buffers, at most 16MB (rounded up to it from 14MB), at least 32kB.
    let mut wal_buffers = (3 * shared_buffers / 100).min(16 * MB_IN_KB);
    if wal_buffers > 14 * MB_IN_KB {
        wal_buffers = 16 * MB_IN_KB;
    }
    let wal_buffers = wal_buffers.max(32);
    let (min_wal, max_wal) = match profile {
        Profile::Oltp => (2048, 8192),
        Profile::Analytics => (4096, 16384),
        Profile::General => (1024, 4096),
        Profile::Development => (100, 2048),
    };

    out.insert("max_connections", max_connections.to_string());
    out.insert("shared_buffers", kb(shared_buffers));
    out.insert("effective_cache_size", kb(effective_cache_size));
    out.insert("maintenance_work_mem", kb(maintenance_work_mem));
    if maintenance_work_mem >= 2 * GB_IN_KB {
        out.insert("autovacuum_work_mem", kb(2 * GB_IN_KB));
    }
    out.insert("checkpoint_completion_target", "0.9".into());
    out.insert("wal_buffers", kb(wal_buffers));
    out.insert(
        "default_statistics_target",
        if profile == Profile::Analytics {
            "500"
        } else {
            "100"
        }
        .into(),
    );
    let (random_page_cost, io_concurrency) = match size.storage {
        Storage::Hdd => ("4", 2),
        Storage::Ssd => ("1.1", 200),
        Storage::San => ("1.1", 300),
    };
    out.insert("random_page_cost", random_page_cost.into());
    out.insert("effective_io_concurrency", io_concurrency.to_string());
    out.insert("min_wal_size", format!("{min_wal}MB"));
    out.insert("max_wal_size", format!("{max_wal}MB"));
    if matches!(profile, Profile::Oltp | Profile::General) {
        out.insert("jit", "off".into());
    }
    out.insert("wal_compression", "lz4".into());
    let cpus = u64::from(size.cpus);
    if cpus >= 16 {
        out.insert(
            "autovacuum_max_workers",
            if cpus >= 32 { "5" } else { "4" }.into(),
        );
    }

    // Parallelism only from 4 CPUs; otherwise Postgres's default of 8 worker processes counts.
    let mut worker_processes = 8;
    if cpus >= 4 {
        let half = cpus.div_ceil(2);
        let per_gather = if profile == Profile::Analytics {
            half
        } else {
            half.min(4)
        };
        worker_processes = cpus;
        out.insert("max_worker_processes", cpus.to_string());
        out.insert("max_parallel_workers_per_gather", per_gather.to_string());
        out.insert("max_parallel_workers", cpus.to_string());
        out.insert("max_parallel_maintenance_workers", half.min(4).to_string());
    }

    // (RAM - shared_buffers) / ((connections + workers) * 3), halved for mixed and analytic
    // loads, a sixth for development; at least 4MB.
    let per_connection =
        memory_kb.saturating_sub(shared_buffers) / ((max_connections + worker_processes) * 3);
    let work_mem = match profile {
        Profile::Oltp => per_connection,
        Profile::Analytics | Profile::General => per_connection / 2,
        Profile::Development => per_connection / 6,
    }
    .max(4 * MB_IN_KB);
    out.insert("work_mem", kb(work_mem));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(memory_gb: u64, cpus: u32, storage: Storage) -> Size {
        Size {
            memory_mb: memory_gb * 1024,
            cpus,
            storage,
        }
    }

    #[test]
    fn oltp_on_16gb_8_cpus_ssd_matches_the_formulas() {
        let s = settings(Profile::Oltp, size(16, 8, Storage::Ssd));
        let want = [
            ("max_connections", "300"),
            ("shared_buffers", "4194304kB"),
            ("effective_cache_size", "12582912kB"),
            ("maintenance_work_mem", "1048576kB"),
            ("wal_buffers", "16384kB"),
            ("random_page_cost", "1.1"),
            ("effective_io_concurrency", "200"),
            ("min_wal_size", "2048MB"),
            ("max_wal_size", "8192MB"),
            ("max_worker_processes", "8"),
            ("max_parallel_workers_per_gather", "4"),
            ("max_parallel_workers", "8"),
            ("max_parallel_maintenance_workers", "4"),
            ("jit", "off"),
            // (16GB - 4GB) / ((300 + 8) * 3) = 13617kB.
            ("work_mem", "13617kB"),
        ];
        for (name, value) in want {
            assert_eq!(s.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert!(!s.contains_key("autovacuum_work_mem"));
    }

    #[test]
    fn analytics_development_and_small_machines_follow_their_rules() {
        let a = settings(Profile::Analytics, size(64, 32, Storage::Hdd));
        assert_eq!(a["max_parallel_workers_per_gather"], "16");
        assert_eq!(a["maintenance_work_mem"], "8388608kB");
        assert_eq!(a["autovacuum_work_mem"], "2097152kB");
        assert_eq!(a["autovacuum_max_workers"], "5");
        assert_eq!(a["default_statistics_target"], "500");
        assert_eq!(a["random_page_cost"], "4");
        // (64GB - 16GB) / ((40 + 32) * 3) / 2 = 116508kB.
        assert_eq!(a["work_mem"], "116508kB");
        assert!(!a.contains_key("jit"));

        let d = settings(Profile::Development, size(2, 2, Storage::Ssd));
        assert_eq!(d["shared_buffers"], "131072kB");
        assert_eq!(d["effective_cache_size"], "524288kB");
        assert_eq!(d["max_connections"], "20");
        assert_eq!(d["work_mem"], "4096kB");
        assert!(!d.contains_key("max_worker_processes"));
        assert!(!d.contains_key("max_wal_senders") && !d.contains_key("wal_level"));

        // 3% of 256MB is below 14MB: wal_buffers stays at 3%.
        let g = settings(Profile::General, size(1, 1, Storage::San));
        assert_eq!(g["wal_buffers"], "7864kB");
        assert_eq!(g["effective_io_concurrency"], "300");
    }

    #[test]
    fn names_parse_and_print_alike() {
        for p in Profile::ALL {
            assert_eq!(p.as_str().parse::<Profile>(), Ok(p));
        }
        assert!("web".parse::<Profile>().is_err());
        assert!("nvme".parse::<Storage>().is_err());
    }
}
