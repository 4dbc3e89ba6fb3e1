//! The sidecar's parameter safety (issue 15): `PUT /v1/parameters` accepts only the allow-list;
//! every setting that took a database down, ran a command or moved a file is refused with a 400
//! naming it, and nothing changes. `GET /v1/parameters/catalog` describes each setting.

use std::collections::BTreeMap;

use toygres_common::parameters_api::ParameterCategory;
use toygres_common::sidecar_api::SetParametersRequest;
use toygres_common::SidecarClientError;
use toygres_tests::{Sidecar, SidecarSpec, TestDir};

fn params(pairs: &[(&str, &str)]) -> SetParametersRequest {
    SetParametersRequest {
        parameters: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn api_error(err: &SidecarClientError) -> (String, String) {
    match err {
        SidecarClientError::Api { code, message, .. } => (code.clone(), message.clone()),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_settings_are_refused_and_nothing_changes() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("unsafe-0")).await;
    let client = s.client();
    let auto_conf = || std::fs::read_to_string(s.data_dir.join("postgresql.auto.conf")).unwrap();
    let before = auto_conf();

    // Each setting the issue found accepted, and the families it names.
    let cases: &[(&str, &str, &str)] = &[
        ("local_preload_libraries", "x", "library"),
        ("session_preload_libraries", "x", "library"),
        ("shared_preload_libraries", "evil", "library"),
        ("ssl", "on", "TLS"),
        ("ssl_passphrase_command", "id", "Toygres"),
        ("max_wal_senders", "0", "standbys"),
        ("max_replication_slots", "0", "standbys"),
        ("max_connections", "5", "connections"),
        ("dynamic_library_path", "/tmp", "directory"),
        ("log_directory", "/tmp", "directory"),
        ("data_directory", "/tmp", "Toygres"),
        ("hba_file", "/tmp/hba", "Toygres"),
        ("password_encryption", "md5", "authentication"),
        ("archive_command", "id", "Toygres"),
        ("restore_command", "id", "Toygres"),
        ("archive_mode", "off", "Toygres"),
        ("listen_addresses", "*", "Toygres"),
        ("port", "6000", "Toygres"),
        ("primary_conninfo", "host=evil", "Toygres"),
        ("synchronous_standby_names", "*", "Toygres"),
        ("fsync", "off", "disk"),
        ("jit_provider", "evil", "library"),
    ];
    for (name, value, word) in cases {
        let err = client
            .set_parameters(&params(&[(name, value)]))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{name}={value}: {err}");
        let (_, message) = api_error(&err);
        assert!(message.contains(name), "{name}: {message}");
        assert!(message.contains(word), "{name}: {message}");
    }

    // A request mixing good and bad settings changes nothing and names each bad one.
    let err = client
        .set_parameters(&params(&[
            ("work_mem", "32MB"),
            ("shared_preload_libraries", "evil"),
            ("max_wal_senders", "0"),
            ("no_such_setting", "1"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let (code, message) = api_error(&err);
    assert_eq!(code, "invalid_parameters");
    for name in [
        "shared_preload_libraries",
        "max_wal_senders",
        "no_such_setting",
    ] {
        assert!(message.contains(name), "{message}");
    }
    assert!(!message.contains("work_mem"), "{message}");

    assert_eq!(auto_conf(), before, "postgresql.auto.conf changed");
    // New connections still work and the server still runs what it ran.
    let pg = s.connect().await;
    let row = pg
        .query_one(
            "SELECT current_setting('work_mem'), current_setting('local_preload_libraries')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "4MB");
    assert_eq!(row.get::<_, String>(1), "");
    // The allowed neighbour of a refused setting still goes through.
    let out = client
        .set_parameters(&params(&[("max_wal_senders", "12")]))
        .await
        .unwrap();
    assert_eq!(out.pending_restart, vec!["max_wal_senders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_describes_each_setting_and_why_some_are_not_modifiable() {
    let dir = TestDir::new();
    let s = Sidecar::start(&dir, SidecarSpec::primary("catalog-0")).await;
    let catalog = s.client().parameter_catalog().await.unwrap();
    assert!(
        catalog.postgres_version.starts_with("15"),
        "{}",
        catalog.postgres_version
    );
    let get = |name: &str| catalog.get(name).unwrap_or_else(|| panic!("{name}"));

    let work_mem = get("work_mem");
    assert_eq!(work_mem.category, ParameterCategory::Dynamic);
    assert_eq!(work_mem.vartype, "integer");
    assert_eq!(work_mem.unit.as_deref(), Some("kB"));
    assert_eq!(work_mem.min.as_deref(), Some("64"));
    assert_eq!(work_mem.default.as_deref(), Some("4096"));
    assert_eq!(work_mem.current, "4096");
    assert!(work_mem.modifiable && work_mem.reason.is_none());
    assert!(!work_mem.description.is_empty());

    assert_eq!(get("shared_buffers").category, ParameterCategory::Restart);
    assert_eq!(
        get("checkpoint_timeout").category,
        ParameterCategory::Reload
    );
    let ce = get("constraint_exclusion");
    assert_eq!(ce.vartype, "enum");
    assert!(ce.enum_values.contains(&"partition".to_string()));

    for name in [
        "port",
        "primary_conninfo",
        "archive_command",
        "ssl",
        "block_size",
    ] {
        let e = get(name);
        assert_eq!(e.category, ParameterCategory::Immutable, "{name}");
        assert!(!e.modifiable && e.reason.is_some(), "{name}");
    }
    let libs = get("shared_preload_libraries");
    assert!(!libs.modifiable);
    assert!(libs.reason.as_deref().unwrap().contains("library"));
    // Not modifiable, but still a restart-class setting of Postgres.
    assert_eq!(libs.category, ParameterCategory::Restart);
}
