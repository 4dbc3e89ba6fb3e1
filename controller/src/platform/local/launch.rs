//! Starting a member's sidecar: its command line from the member's record, detached in a
//! session of its own, and where the sidecar program is found.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::record::MemberRecord;
use super::{member_host, process, tls, LocalPlatform};
use crate::platform::{Bootstrap, SecretRef};

impl LocalPlatform {
    /// Writes the instance's backup key ring from `archive`'s secrets (nothing when its backups
    /// are not encrypted).
    pub(super) fn write_keyring(
        &self,
        archive: &crate::platform::MemberArchive,
        instance: &str,
    ) -> Result<(), crate::platform::PlatformError> {
        if let Some(current) = &archive.encryption_secret {
            super::store_secrets::put_keyring(
                &self.layout,
                instance,
                current,
                &archive.previous_encryption_secrets,
            )?;
        }
        Ok(())
    }

    /// Starts the member's sidecar and records its pid.
    pub(super) fn start_sidecar(&self, record: &mut MemberRecord) -> anyhow::Result<i32> {
        let member_dir = self
            .layout
            .member_dir(&record.spec.instance, &record.spec.member);
        self.layout.create_dir(&member_dir)?;
        if let Some(parent) = record.run_dir.parent() {
            if parent != member_dir {
                self.layout.create_dir(parent)?;
            }
        }
        // A member recorded before instances had certificates gets them at its next start.
        tls::ensure_member(
            &self.layout,
            &record.spec.instance,
            &record.spec.member,
            member_host(record),
        )?;
        // A member of an encrypted instance recorded before key rings gets one (from the key
        // it was created with) at its next start: its command names the ring.
        if let Some(archive) = &record.spec.archive {
            let ring = self.layout.keyring_dir(&record.spec.instance);
            if archive.encryption_secret.is_some() && !ring.join("current.key").exists() {
                self.write_keyring(archive, &record.spec.instance)?;
            }
        }
        let command = self.sidecar_command(record);
        let pid = process::spawn_detached(&record.spec.member, &command)?;
        self.reporting_here
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
        record.pid = Some(pid);
        record.starts += 1;
        self.write_member(record)?;
        tracing::info!(
            instance = record.spec.instance,
            member = record.spec.member,
            pid,
            pg_port = record.pg_port,
            api_port = record.api_port,
            "started the member's sidecar"
        );
        Ok(pid)
    }

    pub(super) fn sidecar_command(&self, record: &MemberRecord) -> process::SidecarCommand {
        let flag = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(value);
            arg
        };
        let secret =
            |reference: &SecretRef| self.layout.secret_file(&reference.instance, reference.name);
        let host = member_host(record);
        let mut args: Vec<OsString> = vec![
            "run".into(),
            process::data_dir_arg(&record.data_dir),
            format!("--pg-port={}", record.pg_port).into(),
            format!("--pg-listen={host}").into(),
            format!("--api-addr={}", SocketAddr::new(host, record.api_port)).into(),
            format!("--member-name={}", record.spec.member).into(),
            flag("token-file", &secret(&record.spec.secrets.sidecar_token)),
            flag(
                "superuser-password-file",
                &secret(&record.spec.secrets.superuser_password),
            ),
            flag(
                "replication-password-file",
                &secret(&record.spec.secrets.replication_password),
            ),
            flag(
                "tls-dir",
                &tls::member_dir(&self.layout, &record.spec.instance, &record.spec.member).dir,
            ),
            flag("run-dir", &record.run_dir),
            format!("--stop-timeout-secs={}", self.config.stop_timeout.as_secs()).into(),
        ];
        match &record.spec.bootstrap {
            Bootstrap::Init => args.push("--bootstrap=init".into()),
            Bootstrap::Standby { primary } => {
                args.push("--bootstrap=standby".into());
                args.push(format!("--primary={primary}").into());
            }
            Bootstrap::Restore(source) => {
                args.push("--bootstrap=restore".into());
                for (name, _, value) in source.sidecar_settings() {
                    args.push(format!("--{name}={value}").into());
                }
            }
        }
        if let Some(archive) = &record.spec.archive {
            // Every member archives under the instance's name; Postgres archives only while
            // the member is the primary (archive_mode=on does nothing during recovery).
            args.push(format!("--archive-url={}", archive.store_url).into());
            args.push(format!("--instance-name={}", record.spec.instance).into());
            if let Some(compression) = &archive.compression {
                args.push(format!("--wal-compression={compression}").into());
            }
            if let Some(name) = &archive.credentials_secret {
                // A path: the sidecar reads the settings from the files there.
                args.push(flag(
                    "store-credentials-dir",
                    &self.layout.store_secret_dir(name),
                ));
            }
            if archive.encryption_secret.is_some() {
                // A path (the key never travels through argv or the environment): the
                // instance's key ring, which `create_member` and a rotation write.
                args.push(flag(
                    "backup-encryption-keyring",
                    &self.layout.keyring_dir(&record.spec.instance),
                ));
            }
        }
        if let Some(notify) = &self.config.notify {
            args.push(format!("--notify-url={}", notify.url).into());
            if let Some(ca) = &notify.ca_file {
                args.push(flag("notify-ca-file", ca));
            }
        }
        if let Some(dir) = &self.config.pg_bin_dir {
            args.push(flag("pg-bin-dir", dir));
        }
        args.extend(self.config.extra_sidecar_args.iter().map(OsString::from));
        let path = std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        let netns = record.network.as_ref().and_then(|n| n.netns.as_deref());
        let (program, args) = match netns {
            // `ip netns exec` enters the namespace and execs the sidecar: the pid stays the
            // sidecar's.
            Some(netns) => {
                let mut wrapped: Vec<OsString> = vec!["netns".into(), "exec".into(), netns.into()];
                wrapped.push(self.sidecar_bin.clone().into());
                wrapped.extend(args);
                (PathBuf::from("ip"), wrapped)
            }
            None => (self.sidecar_bin.clone(), args),
        };
        process::SidecarCommand {
            program,
            args,
            env: vec![
                ("PATH".into(), path),
                (
                    "RUST_LOG".into(),
                    self.config.sidecar_log_filter.clone().into(),
                ),
            ],
            log_file: record.log_file.clone(),
            working_dir: self
                .layout
                .member_dir(&record.spec.instance, &record.spec.member),
        }
    }
}
