use super::*;

#[test]
fn backups_are_on_by_default_with_the_default_schedules() {
    let config = BackupConfig::from_request(None).unwrap().unwrap();
    assert_eq!(config.store_url, None);
    assert_eq!(config.base_schedule, DEFAULT_BASE_SCHEDULE);
    assert_eq!(config.retention, RetentionSettings::default());
    assert_eq!(config.compression.as_deref(), Some("zstd"));
    assert_eq!(config.sidecar_compression(), Some("zstd"));
    let off = BackupConfigRequest {
        enabled: Some(false),
        ..Default::default()
    };
    assert_eq!(BackupConfig::from_request(Some(off)).unwrap(), None);
}

#[test]
fn a_backup_configuration_is_validated_field_by_field() {
    let field = |r: BackupConfigRequest| BackupConfig::from_request(Some(r)).unwrap_err().field;
    let with = |url: &str| BackupConfigRequest {
        store_url: Some(url.into()),
        ..Default::default()
    };
    assert_eq!(field(with("ftp://x")), "backup.store_url");
    assert_eq!(field(with("s3://AKIA:secret@bucket/p")), "backup.store_url");
    assert_eq!(
        BackupConfig::from_request(Some(with("file:///var/b/")))
            .unwrap()
            .unwrap()
            .store_url
            .as_deref(),
        Some("file:///var/b")
    );
    assert_eq!(
        field(BackupConfigRequest {
            credentials_secret: Some("AKIA/xyz+secret".into()),
            ..Default::default()
        }),
        "backup.credentials_secret"
    );
    assert_eq!(
        field(BackupConfigRequest {
            enabled: Some(false),
            store_url: Some("file:///b".into()),
            ..Default::default()
        }),
        "backup"
    );
    assert_eq!(
        field(BackupConfigRequest {
            retention: Some(RetentionSettings {
                daily: 0,
                weekly: 0,
                monthly: 0,
                window_days: None
            }),
            ..Default::default()
        }),
        "backup.retention"
    );
    let compression = |c: &str| BackupConfigRequest {
        compression: Some(c.into()),
        ..Default::default()
    };
    assert_eq!(field(compression("brotli")), "backup.compression");
    assert_eq!(field(compression("gzip:9")), "backup.compression");
    for (name, sidecar) in [("gzip", "gzip:1"), ("lz4", "lz4"), ("none", "none")] {
        let config = BackupConfig::from_request(Some(compression(name)))
            .unwrap()
            .unwrap();
        assert_eq!(config.sidecar_compression(), Some(sidecar));
    }
    // A configuration recorded before the choice existed: the sidecar's default.
    let old: BackupConfig = serde_json::from_str(
        r#"{"base_schedule": "0 1 * * 0", "logical_schedule": "0 2 * * *",
            "retention": {"daily": 7, "weekly": 4, "monthly": 3}}"#,
    )
    .unwrap();
    assert_eq!(old.sidecar_compression(), None);
}

#[test]
fn a_backup_request_is_validated_field_by_field() {
    let ok = ValidatedCreateBackup::try_from(CreateBackupRequest::default()).unwrap();
    assert_eq!(ok.kind, BackupKind::Base);
    let ok = ValidatedCreateBackup::try_from(CreateBackupRequest {
        kind: Some("logical".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ok.databases, ["postgres"]);
    let field = |r: CreateBackupRequest| ValidatedCreateBackup::try_from(r).unwrap_err().field;
    assert_eq!(
        field(CreateBackupRequest {
            kind: Some("full".into()),
            ..Default::default()
        }),
        "kind"
    );
    assert_eq!(
        field(CreateBackupRequest {
            label: Some("x".repeat(101)),
            ..Default::default()
        }),
        "label"
    );
    assert_eq!(
        field(CreateBackupRequest {
            databases: vec!["app".into()],
            ..Default::default()
        }),
        "databases"
    );
}

#[test]
fn an_encryption_secret_is_a_name_and_never_a_key() {
    assert!(validate_encryption_secret_name("orders-key-2").is_ok());
    let key = "ab".repeat(32);
    let e = validate_encryption_secret_name(&key).unwrap_err();
    assert_eq!(e.field, "backup.encryption_secret");
    assert!(!e.message.contains(&key), "{}", e.message);
    // A rotated configuration keeps its previous keys' secrets; older records have none.
    let old: BackupConfig = serde_json::from_str(
        r#"{"encryption_secret": "k1", "base_schedule": "0 1 * * 0",
            "logical_schedule": "0 2 * * *", "retention": {"daily": 7, "weekly": 4, "monthly": 3}}"#,
    )
    .unwrap();
    assert!(old.previous_encryption_secrets.is_empty());
    let rotated = BackupConfig {
        previous_encryption_secrets: vec!["k0".into()],
        ..old
    };
    let text = serde_json::to_string(&rotated).unwrap();
    assert!(
        text.contains(r#""previous_encryption_secrets":["k0"]"#),
        "{text}"
    );
}
