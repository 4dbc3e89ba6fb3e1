//! Every profile, for every CPU count from 1 to 64 and a range of memory sizes and storage
//! types: its values pass the checks the API applies (allow-list, types, ranges, Toygres's
//! floors, against PostgreSQL 15's catalog), and changing a running instance to it — from
//! Postgres's defaults or from any other profile of the same size — applies in rolls that keep
//! PostgreSQL's hot-standby rule at every restart: a standby never runs a hot-standby setting
//! below its primary's.

use std::collections::BTreeMap;

use toygres_common::parameters_api::{parse_number, ParameterCategory, PrimaryUpdate};

use super::builtin;
use super::plan::{plan, second_roll, Change, RestartStep, HOT_STANDBY_SENSITIVE};
use super::profiles::{settings, Profile, Size, Storage};

const MEMORY_MB: [u64; 12] = [
    256, 384, 1024, 1536, 3000, 4096, 8192, 16384, 65536, 262144, 1048576, 4194304,
];

/// A setting as a whole number in its base unit, as the API reads it.
fn whole(name: &str, value: &str) -> Option<i64> {
    let unit = builtin::catalog().get(name)?.unit.clone();
    parse_number(value, unit.as_deref())
        .ok()
        .map(|n| n.round() as i64)
}

/// The change from `from` (values a member runs; Postgres's defaults elsewhere) to `to`.
fn changes(from: &BTreeMap<String, String>, to: &BTreeMap<String, String>) -> Vec<Change> {
    let catalog = builtin::catalog();
    to.iter()
        .map(|(name, value)| {
            let entry = catalog.get(name).unwrap();
            let current = from
                .get(name)
                .cloned()
                .or_else(|| entry.default.clone())
                .unwrap_or_default();
            Change {
                name: name.clone(),
                category: entry.category,
                from: whole(name, &current),
                to: whole(name, value),
            }
        })
        .collect()
}

/// The hot-standby settings one member runs.
type Running = BTreeMap<String, i64>;

fn defaults() -> Running {
    HOT_STANDBY_SENSITIVE
        .iter()
        .map(|n| {
            let default = builtin::catalog().get(n).unwrap().default.clone().unwrap();
            (n.to_string(), whole(n, &default).unwrap())
        })
        .collect()
}

/// Asserts that every standby runs each hot-standby setting at least as high as the primary.
fn assert_rule(members: &BTreeMap<String, Running>, primary: &str, what: &str) {
    for (member, running) in members.iter().filter(|(m, _)| *m != primary) {
        for (name, value) in running {
            let primary_value = members[primary][name];
            assert!(
                *value >= primary_value,
                "{what}: standby {member} runs {name}={value} below its primary's {primary_value}"
            );
        }
    }
}

/// Applies `rolls` (each a change) to a primary and two standbys running `start`, checking the
/// rule after every restart.
fn roll(rolls: &[Vec<Change>], start: &Running, update: PrimaryUpdate, what: &str) {
    let mut members: BTreeMap<String, Running> = ["db-0", "db-1", "db-2"]
        .iter()
        .map(|m| (m.to_string(), start.clone()))
        .collect();
    let mut primary = "db-0".to_string();
    for changes in rolls {
        let standbys: Vec<String> = members.keys().filter(|m| **m != primary).cloned().collect();
        let rollout =
            plan(changes, &primary, &standbys, update).unwrap_or_else(|e| panic!("{what}: {e}"));
        let restarted = |running: &mut Running| {
            for c in changes
                .iter()
                .filter(|c| c.category == ParameterCategory::Restart)
            {
                if let (Some(v), Some(slot)) = (c.to, running.get_mut(&c.name)) {
                    *slot = v;
                }
            }
        };
        for step in rollout.restarts {
            match step {
                RestartStep::Standby(m) | RestartStep::Primary(m) => {
                    restarted(members.get_mut(&m).unwrap())
                }
                RestartStep::Switchover { from, to } => {
                    primary = to;
                    restarted(members.get_mut(&from).unwrap());
                }
                RestartStep::HoldPrimary(_) => {}
            }
            assert_rule(&members, &primary, what);
        }
    }
}

#[test]
fn every_profile_passes_the_api_checks_and_rolls_onto_a_running_instance_at_every_size() {
    let storages = [Storage::Ssd, Storage::Hdd, Storage::San];
    let mut checked = 0;
    for cpus in 1..=64 {
        for memory_mb in MEMORY_MB {
            let size = Size {
                memory_mb,
                cpus,
                storage: storages[cpus as usize % 3],
            };
            let values: Vec<BTreeMap<String, String>> = Profile::ALL
                .iter()
                .map(|p| {
                    settings(*p, size)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                })
                .collect();
            for (profile, to) in Profile::ALL.iter().zip(&values) {
                let what = format!("{profile} at {memory_mb} MB, {cpus} CPUs");
                let problems = builtin::check(to);
                assert!(problems.is_empty(), "{what}: {problems:?}");
                // From Postgres's defaults, and from every profile of the same size.
                let starts = std::iter::once(BTreeMap::new()).chain(values.iter().cloned());
                for from in starts {
                    let mut start = defaults();
                    for (name, value) in &from {
                        if let Some(slot) = start.get_mut(name) {
                            *slot = whole(name, value).unwrap();
                        }
                    }
                    let all = changes(&from, to);
                    let rolls = match second_roll(&all) {
                        None => vec![all],
                        Some(second) => {
                            let (later, first) =
                                all.into_iter().partition(|c| second.contains(&c.name));
                            vec![first, later]
                        }
                    };
                    for update in [PrimaryUpdate::Switchover, PrimaryUpdate::Restart] {
                        roll(&rolls, &start, update, &what);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 64 * MEMORY_MB.len() * 4 * 5 * 2);
}
