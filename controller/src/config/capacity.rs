//! How much durable work the controller does at once (issue 17): the duroxide dispatchers'
//! slots, the duroxide store's connection pool and the controller's own CMS connections. The
//! defaults follow the machine's cores; each is a flag (and an environment variable) for a
//! fleet that needs more.
//!
//! An orchestration turn holds its slot only while it runs (fetch the history, replay, commit):
//! an actor waiting on its timer or queue holds none. A turn waits mostly on the CMS, so a slot
//! per core is too few: every actor's round and every failover step queues for one.

/// The flags of the controller's capacity.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CapacityArgs {
    /// Orchestration turns run at once (duroxide's orchestration dispatchers) [default: 4 per
    /// core, 4 to 32]
    #[arg(long, env = "TOYGRES_ORCHESTRATION_SLOTS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub orchestration_slots: Option<u32>,

    /// Activities run at once (duroxide's activity workers; a waiting activity holds one)
    /// [default: 8 per core, 16 to 64]
    #[arg(long, env = "TOYGRES_ACTIVITY_SLOTS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub activity_slots: Option<u32>,

    /// Most connections the duroxide store opens to the CMS [default: the orchestration slots
    /// plus 8, at most 64]
    #[arg(long, env = "DUROXIDE_PG_POOL_MAX", value_name = "N",
          value_parser = clap::value_parser!(u32).range(2..=1024))]
    pub store_pool_max: Option<u32>,

    /// Connections the controller's own CMS queries share (health records, views, the API)
    /// [default: 1]
    #[arg(long, env = "TOYGRES_CMS_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cms_connections: Option<u32>,
}

/// The resolved capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub orchestration_slots: usize,
    pub activity_slots: usize,
    pub store_pool_max: u32,
    pub cms_connections: usize,
}

/// Connections the store needs beyond its orchestration dispatchers: lock renewals, the
/// activity workers' commits, the API's and the fast path's client calls.
const STORE_HEADROOM: u32 = 2;

impl Capacity {
    /// The defaults for a machine with `cores` cores, overridden by the flags given; refuses a
    /// store pool too small for the orchestration dispatchers.
    pub fn resolve(args: &CapacityArgs, cores: usize) -> Result<Self, String> {
        let cores = u32::try_from(cores.max(1)).unwrap_or(u32::MAX);
        let orchestration = args
            .orchestration_slots
            .unwrap_or_else(|| cores.saturating_mul(4).clamp(4, 32));
        let activity = args
            .activity_slots
            .unwrap_or_else(|| cores.saturating_mul(8).clamp(16, 64));
        // Measured at 100 instances: rarely more than 8 statements run at once; each open
        // connection is a CMS process of ~3.5 MiB that the pool keeps.
        let store_pool_max = match args.store_pool_max {
            Some(n) => n,
            None => (orchestration + 8)
                .min(64)
                .max(orchestration + STORE_HEADROOM),
        };
        if store_pool_max < orchestration + STORE_HEADROOM {
            return Err(format!(
                "--store-pool-max (DUROXIDE_PG_POOL_MAX) {store_pool_max} is too small for \
                 {orchestration} orchestration slots: it needs at least {} (the slots plus \
                 {STORE_HEADROOM}); raise it or lower --orchestration-slots",
                orchestration + STORE_HEADROOM
            ));
        }
        // One: with more, the fast path's batched health writes and the actors' own records
        // of the same members can deadlock (seen at 100 instances with 2) until those writes
        // take their rows in one order.
        let cms_connections = args.cms_connections.unwrap_or(1);
        Ok(Self {
            orchestration_slots: orchestration as usize,
            activity_slots: activity as usize,
            store_pool_max,
            cms_connections: cms_connections as usize,
        })
    }

    /// The cores this process may use (1 when unknown).
    pub fn machine_cores() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

impl Default for Capacity {
    /// The defaults of a two-core machine (tests and tools that start an engine themselves).
    fn default() -> Self {
        Self::resolve(&CapacityArgs::default(), 2).unwrap_or(Self {
            orchestration_slots: 8,
            activity_slots: 16,
            store_pool_max: 16,
            cms_connections: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        args: CapacityArgs,
    }

    fn parse(flags: &[&str]) -> Result<CapacityArgs, clap::Error> {
        let mut argv = vec!["toygres"];
        argv.extend_from_slice(flags);
        TestCli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn defaults_follow_the_cores() {
        let none = CapacityArgs::default();
        let two = Capacity::resolve(&none, 2).unwrap();
        assert_eq!(
            two,
            Capacity {
                orchestration_slots: 8,
                activity_slots: 16,
                store_pool_max: 16,
                cms_connections: 1,
            }
        );
        let one = Capacity::resolve(&none, 1).unwrap();
        assert_eq!((one.orchestration_slots, one.activity_slots), (4, 16));
        let many = Capacity::resolve(&none, 64).unwrap();
        assert_eq!(
            (
                many.orchestration_slots,
                many.activity_slots,
                many.store_pool_max,
                many.cms_connections
            ),
            (32, 64, 40, 1)
        );
        assert_eq!(Capacity::default(), two);
    }

    #[test]
    fn flags_override_the_defaults() {
        let args = parse(&[
            "--orchestration-slots",
            "12",
            "--activity-slots",
            "40",
            "--store-pool-max",
            "30",
            "--cms-connections",
            "3",
        ])
        .unwrap();
        let capacity = Capacity::resolve(&args, 2).unwrap();
        assert_eq!(
            capacity,
            Capacity {
                orchestration_slots: 12,
                activity_slots: 40,
                store_pool_max: 30,
                cms_connections: 3,
            }
        );
        // The store's pool follows raised slots when it is not given.
        let args = parse(&["--orchestration-slots", "100"]).unwrap();
        assert_eq!(Capacity::resolve(&args, 2).unwrap().store_pool_max, 102);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (flags, named) in [
            (vec!["--orchestration-slots", "0"], "--orchestration-slots"),
            (
                vec!["--orchestration-slots", "many"],
                "--orchestration-slots",
            ),
            (vec!["--activity-slots=-3"], "--activity-slots"),
            (vec!["--activity-slots", "5000"], "--activity-slots"),
            (vec!["--store-pool-max", "1"], "--store-pool-max"),
            (vec!["--cms-connections", "0"], "--cms-connections"),
            (vec!["--cms-connections", "65"], "--cms-connections"),
        ] {
            let err = parse(&flags).unwrap_err().to_string();
            assert!(err.contains(named), "{flags:?}: {err}");
            assert!(err.contains("invalid value"), "{flags:?}: {err}");
        }
    }

    #[test]
    fn a_store_pool_smaller_than_the_dispatchers_is_a_clear_error() {
        let args = parse(&["--orchestration-slots", "16", "--store-pool-max", "10"]).unwrap();
        let err = Capacity::resolve(&args, 2).unwrap_err();
        assert!(err.contains("--store-pool-max"), "{err}");
        assert!(err.contains("at least 18"), "{err}");
    }
}
