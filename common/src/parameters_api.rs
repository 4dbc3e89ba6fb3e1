//! The parameter catalog (what `pg_settings` says of each setting, plus whether Toygres lets a
//! user set it and why not) and the checks a value passes before anything is written: the
//! allow-list, then type, unit, range and enum against the server's own catalog. The sidecar and
//! the controller both validate with these functions, so a request is refused the same way
//! wherever it enters.

mod allow_list;

use serde::{Deserialize, Serialize};

pub use allow_list::{refusal, toygres_bounds, Refusal};

/// How a change of the setting takes effect.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterCategory {
    /// Sessions may set it; a reload changes the default at once.
    Dynamic,
    /// A reload (SIGHUP) applies it.
    Reload,
    /// Only a restart of Postgres applies it.
    Restart,
    /// Fixed at initdb or owned by Toygres.
    Immutable,
}

impl ParameterCategory {
    /// The category of a `pg_settings.context`.
    pub fn from_context(context: &str) -> Self {
        match context {
            "user" | "superuser" => ParameterCategory::Dynamic,
            "sighup" | "backend" | "superuser-backend" => ParameterCategory::Reload,
            "postmaster" => ParameterCategory::Restart,
            _ => ParameterCategory::Immutable,
        }
    }
}

/// One setting as the catalog describes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CatalogEntry {
    pub name: String,
    pub category: ParameterCategory,
    /// `pg_settings.context`, kept for the precise rule behind `category`.
    pub context: String,
    /// `bool`, `integer`, `real`, `string` or `enum`.
    pub vartype: String,
    /// The base unit of numbers (`kB`, `8kB`, `ms`, `s`, …).
    pub unit: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    #[serde(default)]
    pub enum_values: Vec<String>,
    /// The value Postgres starts with when nothing sets it (`boot_val`).
    pub default: Option<String>,
    /// The value the server runs with now, in the base unit.
    pub current: String,
    pub pending_restart: bool,
    pub description: String,
    /// Whether `PUT /v1/parameters` accepts it.
    pub modifiable: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
}

/// `GET /v1/parameters/catalog` (sidecar) and `GET /v1/instances/{name}/parameters/catalog`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParameterCatalog {
    /// `server_version` of the Postgres the catalog was read from.
    pub postgres_version: String,
    pub parameters: Vec<CatalogEntry>,
}

impl ParameterCatalog {
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.parameters.iter().find(|e| e.name == name)
    }
}

/// When a restart-class change takes effect.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyMode {
    /// Roll it through the members now (standbys first, then the primary).
    #[default]
    Immediate,
    /// Write it and show it pending; the next restart of each member applies it.
    OnNextRestart,
}

/// How the primary takes a restart-class change, once the standbys run it (CloudNativePG's
/// `primaryUpdateMethod`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrimaryUpdate {
    /// Switch over to an updated, caught-up standby; the old primary restarts as a standby.
    #[default]
    Switchover,
    /// Restart the primary where it is (writes wait for the restart).
    Restart,
    /// Leave the primary to the operator: the change stays pending on it until a switchover.
    Supervised,
}

/// `PUT /v1/instances/{name}/parameters`: names to values (`null` resets a setting).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetInstanceParameters {
    pub parameters: std::collections::BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub apply: ApplyMode,
    /// With `apply: immediate`, the earliest time the change starts (RFC 3339); the operation
    /// waits in the instance's queue until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_at: Option<String>,
    #[serde(default)]
    pub primary_update: PrimaryUpdate,
}

/// `POST /v1/instances/{name}/parameters/profile`: a profile's values (sized to the instance's
/// declared size, or to `size`), with `parameters` over them; `dry_run` only shows what would
/// change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyProfile {
    /// `oltp`, `analytics`, `general` or `development`.
    pub profile: String,
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
    /// The size to compute for, when the instance declared none at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<crate::controller_api::InstanceSize>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub primary_update: PrimaryUpdate,
}

/// One setting a profile would change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChange {
    pub name: String,
    /// What the instance runs now, with its unit.
    pub current: String,
    pub proposed: String,
}

/// The answer to a dry run of a profile: each setting whose value would change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfilePlan {
    pub instance: String,
    pub profile: String,
    pub changes: Vec<ProfileChange>,
}

/// Whether a member runs a desired value.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppliedState {
    /// The member runs the value.
    Applied,
    /// Written; the member applies it at its next restart.
    PendingRestart,
    /// Not (yet) written on the member.
    NotApplied,
    /// The member did not answer.
    Unknown,
}

/// One member's view of a desired setting.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberParameter {
    pub member: String,
    /// What it runs, with its unit (none when it did not answer).
    pub current: Option<String>,
    pub state: AppliedState,
}

/// One desired setting and where it is applied.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredParameter {
    pub name: String,
    pub value: String,
    pub members: Vec<MemberParameter>,
}

/// `GET /v1/instances/{name}/parameters`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceParameters {
    pub instance: String,
    pub parameters: Vec<DesiredParameter>,
}

/// Whether `current` (as `pg_settings.setting` shows it, in `unit`) is the value `wanted`.
pub fn same_value(vartype: &str, unit: Option<&str>, current: &str, wanted: &str) -> bool {
    match vartype {
        "integer" | "real" => match (parse_number(current, unit), parse_number(wanted, unit)) {
            (Ok(a), Ok(b)) => {
                let b = if vartype == "integer" { b.round() } else { b };
                (a - b).abs() <= 1e-9_f64.max(a.abs() * 1e-9)
            }
            _ => false,
        },
        "bool" => {
            let truth = |v: &str| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "on" | "true" | "yes" | "1"
                )
            };
            truth(current) == truth(wanted)
        }
        _ => current.trim().eq_ignore_ascii_case(wanted.trim()),
    }
}

/// A refused setting of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterProblem {
    pub name: String,
    /// `unknown_parameter`, `owned_parameter`, `read_only_parameter`, `not_modifiable` or
    /// `invalid_value`.
    pub code: String,
    pub message: String,
}

/// A `pg_settings` value with its unit, as people read it: `8192` of `8kB` is `65536kB`.
pub fn display_value(current: &str, unit: Option<&str>) -> String {
    match unit {
        Some(u) if u.starts_with(|c: char| c.is_ascii_digit()) => {
            let split = u.find(|c: char| !c.is_ascii_digit()).unwrap_or(u.len());
            let (times, base) = u.split_at(split);
            match (current.parse::<i64>(), times.parse::<i64>()) {
                (Ok(n), Ok(m)) => format!("{}{base}", n.saturating_mul(m)),
                _ => format!("{current}×{u}"),
            }
        }
        Some(u) => format!("{current}{u}"),
        None => current.to_string(),
    }
}

/// Checks every `(name, value)` of a request against `catalog` (`None` resets to the default);
/// returns every problem, so one answer names each bad setting.
pub fn check_request<'a>(
    catalog: &ParameterCatalog,
    request: impl IntoIterator<Item = (&'a String, &'a Option<String>)>,
) -> Vec<ParameterProblem> {
    let mut problems = Vec::new();
    for (name, value) in request {
        let problem = |code: &str, message: String| ParameterProblem {
            name: name.clone(),
            code: code.to_string(),
            message: format!("{name}: {message}"),
        };
        let Some(entry) = catalog.get(name) else {
            problems.push(problem("unknown_parameter", "unknown parameter".into()));
            continue;
        };
        if !entry.modifiable {
            // Refused by the allow-list, or (no refusal of its own) owned by the server that
            // read the catalog.
            let code = refusal(name, false, &entry.context).map_or("owned_parameter", |r| r.code);
            let reason = entry.reason.clone().unwrap_or_default();
            problems.push(problem(code, format!("cannot be set: {reason}")));
            continue;
        }
        if let Some(v) = value {
            if let Err(message) = check_value(entry, v) {
                problems.push(problem("invalid_value", message));
            }
        }
    }
    problems
}

/// Checks `value` against the entry's type, unit, range, enum and Toygres's own bounds.
pub fn check_value(entry: &CatalogEntry, value: &str) -> Result<(), String> {
    if value.contains(['\0', '\n', '\r']) {
        return Err("the value must be a single line".into());
    }
    match entry.vartype.as_str() {
        "bool" => {
            let v = value.trim().to_ascii_lowercase();
            if !["on", "off", "true", "false", "yes", "no", "1", "0"].contains(&v.as_str()) {
                return Err(format!("{value:?} is not a boolean (on or off)"));
            }
        }
        "enum" => {
            let v = value.trim();
            if !entry.enum_values.iter().any(|e| e.eq_ignore_ascii_case(v)) {
                return Err(format!(
                    "{value:?} is not one of {}",
                    entry.enum_values.join(", ")
                ));
            }
        }
        "integer" | "real" => {
            let n = parse_number(value, entry.unit.as_deref())?;
            let n = if entry.vartype == "integer" {
                n.round()
            } else {
                n
            };
            let unit = entry.unit.as_deref().unwrap_or("");
            let min = entry.min.as_deref().and_then(|m| m.parse::<f64>().ok());
            let max = entry.max.as_deref().and_then(|m| m.parse::<f64>().ok());
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                return Err(format!(
                    "{value:?} is outside {}..{} {unit}",
                    entry.min.as_deref().unwrap_or(""),
                    entry.max.as_deref().unwrap_or("")
                ));
            }
            if let Some((lo, hi, why)) = toygres_bounds(&entry.name) {
                if lo.is_some_and(|m| n < m) || hi.is_some_and(|m| n > m) {
                    return Err(format!("{value:?} is refused: {why}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Parses a number with an optional unit into the setting's base unit (`base`, as
/// `pg_settings.unit` spells it: `8kB`, `kB`, `MB`, `ms`, `s`, `min`, …).
pub fn parse_number(value: &str, base: Option<&str>) -> Result<f64, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let number: f64 = num
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if !number.is_finite() {
        return Err(format!("{value:?} is not a number"));
    }
    let suffix = suffix.trim();
    if suffix.is_empty() {
        return Ok(number);
    }
    let Some(base) = base else {
        return Err(format!("{value:?}: this setting takes no unit"));
    };
    let (base_class, base_size) =
        unit_size(strip_count(base).1).ok_or_else(|| format!("unknown base unit {base:?}"))?;
    let base_size = base_size * strip_count(base).0;
    match unit_size(suffix) {
        Some((class, size)) if class == base_class => Ok(number * size / base_size),
        _ => Err(format!(
            "{value:?}: valid units here are {}",
            if base_class == UnitClass::Memory {
                "B, kB, MB, GB and TB"
            } else {
                "us, ms, s, min, h and d"
            }
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitClass {
    Memory,
    Time,
}

/// `8kB` → (8, `kB`); `ms` → (1, `ms`).
fn strip_count(unit: &str) -> (f64, &str) {
    let split = unit
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unit.len());
    let (count, rest) = unit.split_at(split);
    (count.parse().unwrap_or(1.0), rest)
}

/// A unit's class and size in bytes or microseconds (names are case-sensitive, as in Postgres).
fn unit_size(unit: &str) -> Option<(UnitClass, f64)> {
    const K: f64 = 1024.0;
    Some(match unit {
        "B" => (UnitClass::Memory, 1.0),
        "kB" => (UnitClass::Memory, K),
        "MB" => (UnitClass::Memory, K * K),
        "GB" => (UnitClass::Memory, K * K * K),
        "TB" => (UnitClass::Memory, K * K * K * K),
        "us" => (UnitClass::Time, 1.0),
        "ms" => (UnitClass::Time, 1e3),
        "s" => (UnitClass::Time, 1e6),
        "min" => (UnitClass::Time, 60e6),
        "h" => (UnitClass::Time, 3600e6),
        "d" => (UnitClass::Time, 86400e6),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_show_in_their_unit() {
        assert_eq!(display_value("8192", Some("8kB")), "65536kB");
        assert_eq!(display_value("4096", Some("kB")), "4096kB");
        assert_eq!(display_value("-1", Some("8kB")), "-8kB");
        assert_eq!(display_value("on", None), "on");
    }

    fn entry(name: &str, vartype: &str, unit: Option<&str>, min: &str, max: &str) -> CatalogEntry {
        CatalogEntry {
            name: name.into(),
            category: ParameterCategory::Dynamic,
            context: "user".into(),
            vartype: vartype.into(),
            unit: unit.map(str::to_string),
            min: Some(min.into()),
            max: Some(max.into()),
            enum_values: vec!["off".into(), "on".into(), "partition".into()],
            default: None,
            current: String::new(),
            pending_restart: false,
            description: String::new(),
            modifiable: true,
            reason: None,
        }
    }

    #[test]
    fn numbers_with_units_convert_to_the_base_unit() {
        let cases: &[(&str, Option<&str>, f64)] = &[
            ("64MB", Some("8kB"), 8192.0),
            ("1GB", Some("kB"), 1048576.0),
            ("250ms", Some("ms"), 250.0),
            ("2min", Some("s"), 120.0),
            ("1h", Some("min"), 60.0),
            ("42", Some("kB"), 42.0),
            ("-1", Some("ms"), -1.0),
            ("0.9", None, 0.9),
        ];
        for (value, base, want) in cases {
            assert_eq!(parse_number(value, *base), Ok(*want), "{value} in {base:?}");
        }
        for (value, base) in [
            ("lots", Some("kB")),
            ("10ms", Some("kB")),
            ("10MB", None),
            ("10mb", Some("kB")),
        ] {
            assert!(parse_number(value, base).is_err(), "{value} in {base:?}");
        }
    }

    #[test]
    fn values_are_checked_against_type_range_enum_and_toygres_bounds() {
        let work_mem = entry("work_mem", "integer", Some("kB"), "64", "2147483647");
        assert!(check_value(&work_mem, "48MB").is_ok());
        assert!(check_value(&work_mem, "32kB").is_err());
        assert!(check_value(&work_mem, "1MB\nport = 1").is_err());
        let senders = entry("max_wal_senders", "integer", None, "0", "262143");
        assert!(check_value(&senders, "0").unwrap_err().contains("standbys"));
        assert!(check_value(&senders, "16").is_ok());
        let conns = entry("max_connections", "integer", None, "1", "262143");
        assert!(check_value(&conns, "5").is_err());
        assert!(check_value(&conns, "-5").is_err());
        let ce = entry("constraint_exclusion", "enum", None, "", "");
        assert!(check_value(&ce, "Partition").is_ok());
        assert!(check_value(&ce, "sometimes")
            .unwrap_err()
            .contains("one of"));
        let b = entry("jit", "bool", None, "", "");
        assert!(check_value(&b, "on").is_ok() && check_value(&b, "maybe").is_err());
        let r = entry("random_page_cost", "real", None, "0", "1.79769e+308");
        assert!(check_value(&r, "1.1").is_ok() && check_value(&r, "-1").is_err());
    }

    #[test]
    fn a_request_names_every_bad_setting() {
        let mut locked = entry("shared_preload_libraries", "string", None, "", "");
        locked.modifiable = false;
        locked.reason = Some("loads a shared library".into());
        let catalog = ParameterCatalog {
            postgres_version: "15".into(),
            parameters: vec![
                entry("work_mem", "integer", Some("kB"), "64", "2147483647"),
                locked,
            ],
        };
        let req: std::collections::BTreeMap<String, Option<String>> = [
            ("work_mem", Some("bogus")),
            ("shared_preload_libraries", Some("evil")),
            ("nope", Some("1")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
        let problems = check_request(&catalog, &req);
        let codes: Vec<_> = problems
            .iter()
            .map(|p| (p.name.as_str(), p.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("nope", "unknown_parameter"),
                ("shared_preload_libraries", "not_modifiable"),
                ("work_mem", "invalid_value")
            ]
        );
    }
}
