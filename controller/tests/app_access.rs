//! Application access end to end: every instance gets an application database and an owner
//! role; the URIs the controller prints work as printed with psql (libpq reads the password
//! from the passfile they name, PGPASSWORD unset); `toygres psql` and `toygres connect` use
//! them; the owner cannot create roles or databases and cannot log into another instance; the
//! owner's and the superuser's passwords rotate without a restart (the sidecars follow the
//! superuser's: switchover and rejoin still work); the CLI ends quietly when its reader goes away.

#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

use support::*;
use tokio_postgres::error::SqlState;
use toygres_common::controller_api::{InstanceDetail, OperationAccepted};

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// psql with `uri` and a query, with no password in its environment and no `~/.pgpass`.
fn psql(uri: &str, query: &str) -> Output {
    let empty_home = tempfile::tempdir().unwrap();
    Command::new(PSQL)
        .arg(uri)
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query])
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env_remove("PGUSER")
        .env_remove("PGDATABASE")
        .env("HOME", empty_home.path())
        .output()
        .unwrap()
}

fn psql_ok(uri: &str, query: &str) -> String {
    let out = psql(uri, query);
    assert!(
        out.status.success(),
        "psql {uri} -c {query:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_uris_work_as_printed_for_the_owner_of_the_application_database() {
    let mut home = Home::new();
    let api = home.start().await;

    let out = stdout(&home.cli(&["create", "shop", "--replicas", "1"]));
    assert!(out.contains("Database:    shop (owner shop)"), "{out}");
    let detail: InstanceDetail = api.get("/v1/instances/shop").await;
    let app = detail.connection.clone().unwrap().app.unwrap();
    assert_eq!((app.user.as_str(), app.database.as_str()), ("shop", "shop"));
    for uri in [&app.rw, &app.ro, &app.multi_host] {
        assert!(out.contains(uri.as_str()), "{uri} not printed in:\n{out}");
        assert!(uri.contains("passfile="), "{uri}");
    }
    let passfile = app.passfile.clone().unwrap();
    let mode = fs::metadata(&passfile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{passfile}");
    let password = fs::read_to_string(app.password_location.as_deref().unwrap())
        .unwrap()
        .trim()
        .to_string();
    assert!(!out.contains(&password), "the CLI printed the password");

    // Each printed URI, as printed: rw and multi-host reach the primary, ro the standby.
    assert_eq!(
        psql_ok(
            &app.rw,
            "SELECT current_user, current_database(), pg_is_in_recovery()"
        ),
        "shop|shop|f"
    );
    assert_eq!(
        psql_ok(&app.multi_host, "SELECT current_user, pg_is_in_recovery()"),
        "shop|f"
    );
    psql_ok(
        &app.rw,
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    );
    assert_eq!(psql_ok(&app.ro, "SELECT pg_is_in_recovery()"), "t");
    eventually(
        std::time::Duration::from_secs(30),
        "the row on ro",
        || async {
            let out = psql(&app.ro, "SELECT count(*) FROM orders");
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1")
                .then_some(())
        },
    )
    .await;

    // The owner is no superuser: no roles, no databases.
    let denied = psql(&app.rw, "CREATE ROLE intruder");
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(!psql(&app.rw, "CREATE DATABASE another").status.success());
    assert_eq!(
        psql_ok(
            &app.rw,
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication FROM pg_roles \
             WHERE rolname = current_user"
        ),
        "f|f|f|f"
    );

    // `toygres psql`: as the owner, on ro, and as the superuser.
    let session = |extra: &[&str], query: &str| {
        let mut args = vec!["psql", "shop", "--psql", PSQL];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "-XAtc", query]);
        let mut cmd = home.command();
        cmd.args(&args).env_remove("PGPASSWORD");
        stdout(&cmd.output().unwrap()).trim().to_string()
    };
    assert_eq!(session(&[], "SELECT current_user"), "shop");
    assert_eq!(session(&["--ro"], "SELECT pg_is_in_recovery()"), "t");
    assert_eq!(
        session(&["--superuser"], "SELECT current_user, current_database()"),
        "postgres|postgres"
    );

    // `toygres connect`: JSON and environment variables a program can use as they are.
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&home.cli(&["connect", "shop", "-o", "json"]))).unwrap();
    assert_eq!(json["uri"], app.rw.as_str());
    assert_eq!(json["user"], "shop");
    let env = stdout(&home.cli(&["connect", "shop", "--ro", "-o", "env"]));
    assert!(
        env.contains(&format!("export PGPASSFILE='{passfile}'")),
        "{env}"
    );
    assert!(
        env.contains(&format!("export PGPORT='{}'", app.ro_port)),
        "{env}"
    );
    let via_env = Command::new("sh")
        .arg("-c")
        .arg(format!("{env}\n{PSQL} -XAtc 'SELECT current_user'"))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(stdout(&via_env).trim(), "shop");

    // Another instance, with its own names: shop's owner cannot log into it.
    let (status, text) = api
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(serde_json::json!({
                "name": "ledger", "replicas": 0, "database": "books", "owner": "clerk"
            })),
        )
        .await;
    assert_eq!(status, 202, "{text}");
    let accepted: OperationAccepted = serde_json::from_str(&text).unwrap();
    let created = api.wait_operation(&home, &accepted.operation_id).await;
    assert_eq!(created.status, "succeeded", "{created:?}");
    let other: InstanceDetail = api.get("/v1/instances/ledger").await;
    let other_app = other.connection.unwrap().app.unwrap();
    assert_eq!(psql_ok(&other_app.rw, "SELECT current_user"), "clerk");
    // With ledger's CA, so what refuses below is ledger's authentication, not TLS.
    let ledger_ca = |uri: &str| uri.replace("/shop/secrets/tls/", "/ledger/secrets/tls/");
    let shop_into_ledger = ledger_ca(&app.rw).replace(
        &format!(":{}/shop", app.rw_port),
        &format!(":{}/books", other_app.rw_port),
    );
    assert_ne!(shop_into_ledger, app.rw);
    assert!(!psql(&shop_into_ledger, "SELECT 1").status.success());
    let shop_into_ledger_db = ledger_ca(&app.rw).replace(
        &format!(":{}/shop", app.rw_port),
        &format!(":{}/shop", other_app.rw_port),
    );
    assert!(!psql(&shop_into_ledger_db, "SELECT 1").status.success());

    // Neither application password is anywhere in the CMS.
    let ledger_password =
        fs::read_to_string(other_app.password_location.as_deref().unwrap()).unwrap();
    for secret in [password.as_str(), ledger_password.trim()] {
        assert_nowhere_in_cms(&home, secret).await;
    }
}

/// Every log the controller and the members wrote (the controller's runs, each sidecar's,
/// which holds its Postgres's server log), unfiltered.
fn all_logs(home: &Home) -> String {
    let mut files = find_files(home.path(), "sidecar.log");
    files.extend(
        fs::read_dir(home.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "log")),
    );
    files
        .iter()
        .map(|file| fs::read_to_string(file).unwrap_or_default())
        .collect()
}

fn read_password(location: &str) -> String {
    fs::read_to_string(location).unwrap().trim().to_string()
}

/// `toygres credentials rotate ARGS…`, which must succeed and name where the password is,
/// never the password; returns the new password, read from `location`.
fn rotate_with_cli(home: &Home, args: &[&str], location: &str, old: &str) -> String {
    let out = stdout(&home.cli(&[&["credentials", "rotate"], args].concat()));
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains(location), "{out}");
    let new = read_password(location);
    assert_ne!(new, old);
    assert!(!out.contains(&new), "the CLI printed the password");
    new
}

/// None of `secrets` is in the CMS or in any log, while the server's statement log shows the
/// rotation of `role` with a SCRAM verifier.
async fn assert_only_a_verifier_anywhere(home: &Home, role: &str, secrets: &[&str]) {
    for secret in secrets {
        assert_nowhere_in_cms(home, secret).await;
    }
    let logs = all_logs(home);
    assert!(
        logs.contains(&format!("ALTER ROLE \"{role}\" PASSWORD 'SCRAM-SHA-256$")),
        "the rotation's statement is not in the server's log"
    );
    for secret in secrets {
        assert!(!logs.contains(secret), "a password is in a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_password_rotates_without_a_restart_and_open_sessions_stay_open() {
    let mut home = Home::new();
    let api = home.start().await;
    stdout(&home.cli(&["create", "shop", "--replicas", "1"]));
    let detail: InstanceDetail = api.get("/v1/instances/shop").await;
    let connection = detail.connection.clone().unwrap();
    let app = connection.app.clone().unwrap();
    let location = app.password_location.clone().unwrap();
    let old = read_password(&location);
    let primary = primary_of(&api, "shop").await.unwrap();
    let postmasters: Vec<i32> = ["shop-0", "shop-1"]
        .iter()
        .map(|member| postmaster_of(&home, "shop", member))
        .collect();

    // Every statement goes to the server's log, so a password sent in SQL would show there.
    let superuser = connect(
        &connection.rw,
        &read_password(connection.password_location.as_deref().unwrap()),
    )
    .await;
    for statement in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        superuser.batch_execute(statement).await.unwrap();
    }

    // A session opened with the old password, before the rotation.
    let session = connect(&app.rw, &old).await;
    session
        .batch_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)")
        .await
        .unwrap();

    // Bad requests are refused with JSON and change nothing.
    let path = "/v1/instances/shop/credentials/rotate";
    for (instance_path, body, status) in [
        (path, serde_json::json!({"role": "admin"}), 400),
        (path, serde_json::json!({"rol": "owner"}), 400),
        (
            "/v1/instances/nope/credentials/rotate",
            serde_json::json!({}),
            404,
        ),
        (
            "/v1/instances/Bad_Name/credentials/rotate",
            serde_json::json!({}),
            400,
        ),
    ] {
        let (got, text) = api
            .send(reqwest::Method::POST, instance_path, Some(body.clone()))
            .await;
        assert_eq!(got, status, "{instance_path} {body}: {text}");
        assert!(text.contains("\"error\""), "{text}");
    }
    let unauthenticated = api
        .http
        .post(format!("{}{path}", api.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert_eq!(read_password(&location), old, "a refused request rotated");

    // The rotation, as an operator runs it.
    let new = rotate_with_cli(&home, &["shop"], &location, &old);

    // The open session goes on working; nothing restarted.
    session
        .batch_execute("INSERT INTO orders VALUES (2)")
        .await
        .unwrap();
    let count: i64 = session
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    let after: Vec<i32> = ["shop-0", "shop-1"]
        .iter()
        .map(|member| postmaster_of(&home, "shop", member))
        .collect();
    assert_eq!(after, postmasters, "a member restarted");
    assert_eq!(primary_of(&api, "shop").await.unwrap(), primary);

    // A new login with the old password is refused, on the primary and on the standby.
    for uri in [&app.rw, &app.ro] {
        let (mut config, tls) = pg_config(uri);
        config.password(&old);
        let refused = config
            .connect(tls)
            .await
            .err()
            .expect("the old password still logs in");
        assert_eq!(
            refused.as_db_error().map(|e| e.code().clone()),
            Some(SqlState::INVALID_PASSWORD),
            "{refused}"
        );
    }
    // The printed URIs work as printed (their passfile holds the new password), and the new
    // password logs in (on the standby once it replayed the change).
    assert_eq!(psql_ok(&app.rw, "SELECT count(*) FROM orders"), "2");
    eventually(
        std::time::Duration::from_secs(30),
        "the printed ro URI with the new password",
        || async {
            let out = psql(&app.ro, "SELECT current_user, pg_is_in_recovery()");
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "shop|t")
                .then_some(())
        },
    )
    .await;
    connect(&app.multi_host, &new).await;

    // Recorded as an operation with its events.
    let kinds: Vec<String> = events(&api, "shop")
        .await
        .events
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    for kind in ["credentials-rotate-started", "credentials-rotate-succeeded"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }

    // Neither password is in the CMS or in any log, though every statement was logged: the
    // server got only a verifier.
    assert_only_a_verifier_anywhere(&home, "shop", &[&old, &new]).await;
}

/// The sidecar log of `member` (which holds its Postgres's server log).
fn member_log(home: &Home, instance: &str, member: &str) -> String {
    let dir = home.path().join("instances").join(instance).join(member);
    find_files(&dir, "sidecar.log")
        .iter()
        .map(|file| fs::read_to_string(file).unwrap_or_default())
        .collect()
}

/// The error of a new login as the superuser with `password` straight to `member`'s Postgres,
/// or `None` when it logs in.
async fn member_login_error(
    api: &Api,
    rw: &str,
    member: &str,
    password: &str,
) -> Option<tokio_postgres::Error> {
    let (head, tail) = rw.rsplit_once(':').unwrap();
    let path = tail.split_once('/').map_or("", |(_, rest)| rest);
    let port = pg_port(api, "su", member).await;
    let (mut config, tls) = pg_config(&format!("{head}:{port}/{path}"));
    config.password(password);
    config.connect(tls).await.err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_superusers_password_rotates_and_the_sidecars_follow_it() {
    let (home, api) = start_ha(
        &[NO_RESTARTS],
        "su",
        serde_json::json!({"cooldown_secs": 0}),
    )
    .await;
    let (rw, old) = connection(&api, "su").await;
    let detail: InstanceDetail = api.get("/v1/instances/su").await;
    let connection_info = detail.connection.unwrap();
    let location = connection_info.password_location.clone().unwrap();
    let app = connection_info.app.unwrap();
    let first = primary_of(&api, "su").await.unwrap();
    let session = connect(&rw, &old).await;
    for statement in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
        "INSERT INTO acked VALUES (1)",
    ] {
        session.batch_execute(statement).await.unwrap();
    }

    let new = rotate_with_cli(&home, &["su", "--role", "superuser"], &location, &old);

    // The open session stays; the old password is refused on every member once replayed; the
    // new one logs in.
    session
        .batch_execute("INSERT INTO acked VALUES (2)")
        .await
        .unwrap();
    for member in ["su-0", "su-1", "su-2"] {
        let refused = eventually(
            std::time::Duration::from_secs(30),
            "the old password refused",
            || member_login_error(&api, &rw, member, &old),
        )
        .await;
        assert_eq!(
            refused.as_db_error().map(|e| e.code().clone()),
            Some(SqlState::INVALID_PASSWORD),
            "{member}: {refused}"
        );
        assert!(member_login_error(&api, &rw, member, &new).await.is_none());
    }
    connect(&rw, &new).await;

    // A switchover: the old primary's sidecar reaches the new primary and runs pg_rewind with
    // the new password (its demote fails with the old one).
    let switchover = api
        .run_operation(&home, "/v1/instances/su/switchover", serde_json::json!({}))
        .await;
    assert_eq!(
        switchover.status,
        "succeeded",
        "{switchover:?}\n{}",
        home.logs()
    );
    let second = primary_of(&api, "su").await.unwrap();
    assert_ne!(second, first);
    wait_all_healthy(&api, &home, "su", 3).await;

    // A failover: the killed primary rejoins through pg_rewind, not a new copy.
    kill_member(&home, "su", &second);
    eventually(
        std::time::Duration::from_secs(120),
        "a new primary",
        || async { primary_of(&api, "su").await.filter(|p| *p != second) },
    )
    .await;
    wait_all_healthy(&api, &home, "su", 3).await;
    for member in [&first, &second] {
        let log = member_log(&home, "su", member);
        assert!(
            log.contains("demoted: streaming"),
            "{member} was not demoted"
        );
        assert!(
            !log.contains("pg_rewind failed"),
            "{member}: pg_rewind failed"
        );
    }
    let rw_now = connect(&rw, &new).await;
    let count: i64 = rw_now
        .query_one("SELECT count(*) FROM acked", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);

    // A rotation whose ALTER ROLE fails (the owner's role renamed away) leaves the stored
    // password as it was, and the role with it.
    let app_location = app.password_location.clone().unwrap();
    let app_password = read_password(&app_location);
    rw_now
        .batch_execute("ALTER ROLE su RENAME TO su_away")
        .await
        .unwrap();
    let failed = api
        .run_operation(
            &home,
            "/v1/instances/su/credentials/rotate",
            serde_json::json!({"role": "owner"}),
        )
        .await;
    assert_eq!(failed.status, "failed", "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("previous password stays"),
        "{failed:?}"
    );
    assert_eq!(read_password(&app_location), app_password);
    rw_now
        .batch_execute("ALTER ROLE su_away RENAME TO su")
        .await
        .unwrap();
    connect(&app.rw, &app_password).await;

    // Neither password in the CMS or in any log, though every statement was logged.
    assert_only_a_verifier_anywhere(&home, "postgres", &[&old, &new]).await;
}

/// `toygres list | head -1`: the reader goes away; the CLI ends without a panic message, with
/// the status a SIGPIPE gives other tools (or 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_ends_quietly_when_its_reader_goes_away() {
    let mut home = Home::new();
    let _api = home.start().await;
    for args in [&["list"][..], &["list", "-o", "json"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        // No reader from the start: the first write fails with EPIPE.
        drop(reader);
        let out = home
            .command()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(141)),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_application_names_are_refused_before_anything_is_made() {
    let mut home = Home::new();
    let api = home.start().await;
    for (body, field) in [
        (
            serde_json::json!({"name": "a", "database": "postgres"}),
            "database",
        ),
        (
            serde_json::json!({"name": "a", "owner": "pg_signal"}),
            "owner",
        ),
        (
            serde_json::json!({"name": "a", "owner": "Bad Name"}),
            "owner",
        ),
    ] {
        let (status, text) = api
            .send(reqwest::Method::POST, "/v1/instances", Some(body))
            .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(field), "{text}");
    }
    let out = home.cli(&["create", "a", "--owner", "postgres"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
    let list = stdout(&home.cli(&["list", "-o", "json"]));
    assert!(!list.contains("\"a\""), "{list}");
}
