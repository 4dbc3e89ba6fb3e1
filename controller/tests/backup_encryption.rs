//! Client-side encryption through the controller: an instance whose backups name a store secret
//! holding an encryption key archives WAL and takes base backups that are unreadable in the
//! `file://` store (every object starts with the encryption header, none is a gzip stream or
//! shows the table's text); a restore with the key has exactly the rows before the target and
//! encrypts its own archive; a restore with another key fails naming the wrong key; the key is
//! in no log, no CMS row (orchestration history included), no process's argv or environment.
//! A rotated key (`toygres backup rotate-key`) encrypts every object written after it, and the
//! backups and WAL of the old key still restore, across the rotation point too.
//!
//! Every process a test starts is killed when the test ends (see [`Home`]'s `Drop`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::archive::*;
use support::*;
use toygres_common::backup_api::{BackupView, RotateKeyView};
use toygres_common::controller_api::{Operation, OperationAccepted};

/// What every encrypted object starts with (the sidecar's `objstore::crypt::MAGIC`).
const MAGIC: &[u8] = b"TGRSENC1";

/// Registers store secret `name` holding `key` through the CLI (from an env file, removed
/// after).
fn set_key_secret(home: &Home, name: &str, key: &str) {
    let env_file = home.path().join(format!("{name}.env"));
    std::fs::write(&env_file, format!("TOYGRES_BACKUP_ENCRYPTION_KEY={key}\n")).unwrap();
    let out = home.cli(&[
        "secret",
        "set",
        name,
        "--from-env-file",
        &env_file.to_string_lossy(),
    ]);
    std::fs::remove_file(&env_file).unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Checks that every object of `instance` in the store is encrypted and shows nothing of
/// `marker`; returns how many there are.
fn assert_all_encrypted(store: &Path, instance: &str, marker: &str) -> usize {
    let files = all_files(&store.join(instance));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            bytes.starts_with(MAGIC),
            "{} is not encrypted (starts with {:02x?})",
            file.display(),
            &bytes[..bytes.len().min(8)]
        );
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} shows the plaintext",
            file.display()
        );
    }
    files.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_are_unreadable_in_the_store_and_restore_only_with_their_key() {
    let mut home = Home::new();
    // No supervisor restarts: a restore that fails stays failed.
    let api = home.start_with_env(&[NO_RESTARTS]).await;
    let store = home.path().join("backups");
    let key = hex::encode(rand::random::<[u8; 32]>());
    let wrong = hex::encode(rand::random::<[u8; 32]>());
    set_key_secret(&home, "enc-key", &key);
    set_key_secret(&home, "other-key", &wrong);

    // Refused before anything is recorded: a key that is not 64 hex digits, a secret that does
    // not exist, a secret without a key.
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            "/v1/secrets/short-key",
            Some(serde_json::json!({"values": {"TOYGRES_BACKUP_ENCRYPTION_KEY": "abc123"}})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(!text.contains("abc123"), "{text}");
    let out = home.cli(&["create", "nokey", "--backup-encryption-key", "no-such-key"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store secret no-such-key"),
        "{out:?}"
    );
    let (status, text) = api
        .send(
            reqwest::Method::PUT,
            "/v1/secrets/creds-only",
            Some(serde_json::json!({"values": {"AWS_ACCESS_KEY_ID": "x"}})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let out = home.cli(&["create", "nokey", "--backup-encryption-key", "creds-only"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no TOYGRES_BACKUP_ENCRYPTION_KEY"),
        "{out:?}"
    );
    let (status, _) = api
        .send(reqwest::Method::GET, "/v1/instances/nokey", None)
        .await;
    assert_eq!(status, 404, "a refused create recorded its instance");

    let out = home.cli(&["create", "enc", "--backup-encryption-key", "enc-key"]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/secrets/enc-key", None)
        .await;
    assert_eq!(status, 409, "a key in use cannot go: {text}");

    // Rows 1..=100 and a text marker, a base backup, rows 101..=200, the target, 201..=300.
    let marker = format!(
        "plaintext-marker-{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    let src = connect_rw(&api, "enc").await;
    src.batch_execute(&format!(
        "CREATE TABLE t (v integer PRIMARY KEY); \
         CREATE TABLE notes AS SELECT '{marker}' || g AS s FROM generate_series(1, 1000) g"
    ))
    .await
    .unwrap();
    insert_rows(&src, 1, 100).await;
    let out = stdout(&home.cli(&["backup", "create", "enc", "-o", "json"]));
    let backup: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(backup.status, "succeeded", "{backup:?}\n{}", home.logs());
    insert_rows(&src, 101, 200).await;
    let target = server_now(&src).await;
    insert_rows(&src, 201, 300).await;
    archive_now(&src, &store, "enc").await;

    // Nothing in the store can be read without the key: WAL, the base backup, the manifests.
    let objects = assert_all_encrypted(&store, "enc", &marker);
    assert!(
        files_in(&store.join("enc").join("wal")).len() >= 2,
        "WAL archived"
    );
    assert!(objects >= 5, "the backup's objects: {objects}");

    // With the key (the source's, by default): exactly the rows before the target, and the
    // restored instance's own archive is encrypted too.
    let out = home.cli(&["restore", "enc", "--to", "back", "--time", &target]);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    let back = connect_rw(&api, "back").await;
    assert_eq!(
        rows(&back).await,
        (200, Some(200)),
        "restored to the target"
    );
    archive_now(&back, &store, "back").await;
    assert!(assert_all_encrypted(&store, "back", &marker) >= 1);

    // With another key: the restore fails, saying the key is wrong, and serves nothing.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/enc/restore",
            Some(serde_json::json!({"to": "wrong", "encryption_secret": "other-key"})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    // It fails fast (not at the primary's readiness timeout), with the sidecar's reason.
    let asked = std::time::Instant::now();
    let failed: Operation = eventually(
        Duration::from_secs(120),
        "the wrong key's restore fails",
        || {
            let (api, path) = (&api, format!("/v1/operations/{}", accepted.operation_id));
            async move {
                let (status, text) = api.send(reqwest::Method::GET, &path, None).await;
                assert_eq!(status, 200, "{text}");
                let operation: Operation = serde_json::from_str(&text).unwrap();
                operation.is_finished().then_some(operation)
            }
        },
    )
    .await;
    assert_eq!(failed.status, "failed", "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("wrong encryption key") && error.contains("was encrypted with another key"),
        "{failed:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(90),
        "the failure took {:?}",
        asked.elapsed()
    );
    assert!(
        files_in(&store.join("wrong").join("wal")).is_empty(),
        "the failed restore archived something"
    );

    // The keys are nowhere but in their secrets' files: logs, CMS, processes.
    assert_keys_hidden(&home, "enc-key", &[&key, &wrong]).await;
    drop((src, back));
}

/// Checks that the logs and the CMS (orchestration history included) name the secret `secret`
/// but hold none of `keys`, and that no process has one in its argv or environment.
async fn assert_keys_hidden(home: &Home, secret: &str, keys: &[&str]) {
    let mut logs = String::new();
    for run in 1..=home.runs {
        logs.push_str(&std::fs::read_to_string(home.log_path(run)).unwrap());
    }
    for log in find_files(&home.path().join("instances"), "sidecar.log") {
        logs.push_str(&std::fs::read_to_string(log).unwrap());
    }
    assert!(logs.contains(secret), "the logs name the secret");
    let dump = cms_dump(home).await;
    assert!(dump.contains(secret), "the CMS names the secret");
    for k in keys {
        assert!(!logs.contains(k), "a key is in a log");
        assert!(!dump.contains(k), "a key is in the CMS");
        assert_eq!(processes_holding(k), Vec::<String>::new());
    }
}

/// The key id in the encryption header of every object under `dir`, by path.
fn key_ids(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, String> {
    all_files(dir)
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                bytes.starts_with(MAGIC),
                "{} is not encrypted",
                file.display()
            );
            let id = hex::encode(&bytes[MAGIC.len()..MAGIC.len() + 8]);
            (file, id)
        })
        .collect()
}

/// Restores `source` into `to` with `args` and returns `to`'s rows.
async fn restored_rows(
    home: &Home,
    api: &Api,
    source: &str,
    to: &str,
    args: &[&str],
) -> (i64, Option<i32>) {
    let mut cli = vec!["restore", source, "--to", to];
    cli.extend_from_slice(args);
    let out = home.cli(&cli);
    assert!(out.status.success(), "{out:?}\n{}", home.logs());
    rows(&connect_rw(api, to).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_encrypts_what_follows_and_what_the_old_key_encrypted_stays_restorable() {
    let mut home = Home::new();
    let api = home.start_with_env(&[NO_RESTARTS]).await;
    let store = home.path().join("backups");
    let old_key = hex::encode(rand::random::<[u8; 32]>());
    let new_key = hex::encode(rand::random::<[u8; 32]>());
    set_key_secret(&home, "key-1", &old_key);
    set_key_secret(&home, "key-2", &new_key);
    // A primary and a standby (both take the new key); every backup of the week kept (the
    // default keeps one a day).
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(serde_json::json!({"name": "rot", "replicas": 1, "backup": {
                "encryption_secret": "key-1", "retention": {"window_days": 7}}})),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}\n{}", home.logs());

    // Under the old key: rows 1..=100, the first backup, rows 101..=200, a target, 201..=250.
    let src = connect_rw(&api, "rot").await;
    src.batch_execute("CREATE TABLE t (v integer PRIMARY KEY)")
        .await
        .unwrap();
    insert_rows(&src, 1, 100).await;
    let out = stdout(&home.cli(&["backup", "create", "rot", "-o", "json"]));
    let first: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(first.status, "succeeded", "{first:?}\n{}", home.logs());
    insert_rows(&src, 101, 200).await;
    let before_rotation = server_now(&src).await;
    insert_rows(&src, 201, 250).await;
    archive_now(&src, &store, "rot").await;
    let old_objects = key_ids(&store.join("rot"));
    let old_id = old_objects.values().next().unwrap().clone();
    assert!(
        old_objects.values().all(|id| *id == old_id),
        "one key so far: {old_objects:?}"
    );

    // Refused: a secret that does not exist, an instance whose backups are not encrypted.
    let out = home.cli(&["backup", "rotate-key", "rot", "--new-key", "no-such-key"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no store secret no-such-key"), "{out:?}");
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances/nosuch/backups/rotate-key",
            Some(serde_json::json!({"new_secret": "key-2"})),
        )
        .await;
    assert_eq!(status, 404, "{text}");

    // The rotation: every member takes the new key, the old one stays in the ring.
    let out = stdout(&home.cli(&[
        "backup",
        "rotate-key",
        "rot",
        "--new-key",
        "key-2",
        "-o",
        "json",
    ]));
    let rotated: RotateKeyView = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated.encryption_secret, "key-2");
    assert_eq!(rotated.previous_encryption_secrets, ["key-1"]);
    assert_eq!(rotated.members.len(), 2, "{rotated:?}");
    assert!(rotated.pending.is_empty(), "{rotated:?}");
    let new_id = rotated.key_id.clone().unwrap();
    assert_ne!(new_id, old_id);
    let (status, text) = api
        .send(reqwest::Method::DELETE, "/v1/secrets/key-1", None)
        .await;
    assert_eq!(status, 409, "a key still needed to read cannot go: {text}");

    // Under the new key: rows 251..=300, a target, 301..=400, the second backup.
    insert_rows(&src, 251, 300).await;
    let after_rotation = server_now(&src).await;
    insert_rows(&src, 301, 400).await;
    let out = stdout(&home.cli(&["backup", "create", "rot", "-o", "json"]));
    let second: BackupView = serde_json::from_str(&out).unwrap();
    assert_eq!(second.status, "succeeded", "{second:?}\n{}", home.logs());
    archive_now(&src, &store, "rot").await;

    // Every object written after the rotation carries the new key's id; the old ones keep
    // theirs.
    let objects = key_ids(&store.join("rot"));
    let mut written_after = 0;
    for (file, id) in &objects {
        match old_objects.get(file) {
            Some(old) => assert_eq!(id, old, "{} changed", file.display()),
            None => {
                assert_eq!(*id, new_id, "{} is not under the new key", file.display());
                written_after += 1;
            }
        }
    }
    let second_base = store.join("rot").join("base");
    assert!(
        objects
            .keys()
            .filter(|f| f.starts_with(&second_base) && !old_objects.contains_key(*f))
            .count()
            >= 2,
        "the second backup's objects: {objects:?}"
    );
    assert!(
        written_after >= 4,
        "WAL and backup after the rotation: {written_after}"
    );

    // The first backup (old key) to a time before the rotation; the first backup and WAL of
    // both keys to a time after it; the second backup (new key) to the end of the archive.
    assert_eq!(
        restored_rows(
            &home,
            &api,
            "rot",
            "early",
            &["--backup", &first.id, "--time", &before_rotation]
        )
        .await,
        (200, Some(200))
    );
    assert_eq!(
        restored_rows(&home, &api, "rot", "late", &["--time", &after_rotation]).await,
        (300, Some(300))
    );
    assert_eq!(
        restored_rows(&home, &api, "rot", "last", &["--backup", &second.id]).await,
        (400, Some(400))
    );

    assert_keys_hidden(&home, "key-2", &[&old_key, &new_key]).await;
    drop(src);
}
