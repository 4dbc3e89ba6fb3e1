//! A base backup comes back the same whether it was stored in parts (and from an encrypted
//! store) or, as before parts, in one object.

use std::path::Path;

use toygres_common::pg_exec::PgBinaries;
use toygres_common::sidecar_api::{BackupKind, BackupManifest, BackupObject};

use super::download_base_backup;
use crate::archive::Compression;
use crate::backup::parts::{combined_sha256, command_to_parts};
use crate::backup::stream::command_to_store;
use crate::objstore::{crypt, Store};

/// A directory to back up: a large file, small ones, a subdirectory and a `backup_manifest`.
fn source_tree(root: &Path) {
    std::fs::create_dir_all(root.join("base/1")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 % 7)
        .collect();
    std::fs::write(root.join("base/1/1259"), big).unwrap();
    std::fs::write(root.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(root.join("base/1/PG_VERSION"), "15\n").unwrap();
    std::fs::write(root.join("backup_manifest"), "{\"m\": 1}").unwrap();
}

fn tar_of(root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("tar");
    cmd.arg("--format=ustar").arg("-C").arg(root).args([
        "-cf",
        "-",
        "PG_VERSION",
        "base",
        "backup_manifest",
    ]);
    cmd
}

fn manifest(id: &str, objects: Vec<BackupObject>, sha256: String) -> BackupManifest {
    BackupManifest {
        id: id.into(),
        kind: BackupKind::Base,
        instance: "db".into(),
        member: "db-0".into(),
        from_standby: false,
        start_lsn: Some("0/2000028".into()),
        stop_lsn: Some("0/2000100".into()),
        timeline: Some(1),
        start_time: "2026-12-05T05:00:00Z".into(),
        stop_time: "2026-12-05T05:00:01Z".into(),
        next_xid: None,
        raw_bytes: objects.iter().map(|o| o.raw_bytes).sum(),
        stored_bytes: objects.iter().map(|o| o.stored_bytes).sum(),
        compression: "zstd".into(),
        pg_version: "15".into(),
        system_identifier: "1".into(),
        sha256,
        objects,
    }
}

/// Restores `backup` into a fresh directory and checks it holds `src`'s files.
async fn restores_the_tree(store: &Store, backup: &BackupManifest, src: &Path, scratch: &Path) {
    let dest = scratch.join(&backup.id);
    std::fs::create_dir_all(&dest).unwrap();
    let bins = PgBinaries {
        bin_dir: "/nonexistent".into(),
        run_as: None,
    };
    let pg_manifest = download_base_backup(store, backup, &dest, &bins)
        .await
        .unwrap();
    assert_eq!(pg_manifest, b"{\"m\": 1}", "{}", backup.id);
    assert!(!dest.join("backup_manifest").exists(), "{}", backup.id);
    for file in ["PG_VERSION", "base/1/PG_VERSION", "base/1/1259"] {
        assert!(
            std::fs::read(src.join(file)).unwrap() == std::fs::read(dest.join(file)).unwrap(),
            "{}: {file} differs",
            backup.id
        );
    }
}

#[tokio::test]
async fn parts_and_single_stream_backups_restore_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    source_tree(&src);
    let url = format!("file://{}/s", dir.path().display())
        .parse()
        .unwrap();
    let plain = Store::open(&url).unwrap();
    let encrypted = Store::open(&url)
        .unwrap()
        .with_cipher(crypt::Cipher::new([9; 32], "/k".into()));

    // Before parts: the whole tar in one object.
    let c = Compression::Gzip(6);
    let key = format!("db/base/old/base.tar{}", c.suffix());
    let (one, ()) = command_to_store(&plain, &key, tar_of(&src), c, ())
        .await
        .unwrap();
    let object = BackupObject {
        key,
        database: None,
        raw_bytes: one.raw_bytes,
        stored_bytes: one.stored_bytes,
        sha256: one.sha256.clone(),
    };
    let old = manifest("old", vec![object], one.sha256);
    restores_the_tree(&plain, &old, &src, dir.path()).await;

    // In parts, each compressor, plain and encrypted.
    for (tag, store, c) in [
        ("zstd", &plain, Compression::Zstd(1)),
        ("lz4", &plain, Compression::Lz4),
        ("none", &plain, Compression::None),
        ("gzip-enc", &encrypted, Compression::Gzip(1)),
        ("zstd-enc", &encrypted, Compression::Zstd(3)),
    ] {
        let prefix = format!("db/base/{tag}/base.tar");
        let (objects, total, ()) =
            command_to_parts(store, &prefix, tar_of(&src), c, (), 700_000, 2)
                .await
                .unwrap();
        assert!(objects.len() >= 4, "{tag}: {objects:?}");
        assert_eq!(total.sha256, combined_sha256(&objects));
        let backup = manifest(tag, objects, total.sha256);
        restores_the_tree(store, &backup, &src, dir.path()).await;
        if tag.ends_with("-enc") {
            // Every part is sealed: without the key, none of it reads.
            for o in &backup.objects {
                let raw = std::fs::read(dir.path().join("s").join(&o.key)).unwrap();
                assert!(raw.starts_with(crypt::MAGIC), "{}", o.key);
                assert!(plain.get(&o.key).await.is_err(), "{}", o.key);
            }
        }
    }
}
