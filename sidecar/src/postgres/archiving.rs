//! WAL uploaded ahead of Postgres's `archive_command` ([`crate::archive::ahead`]) while this
//! member runs as a primary that archives.

use std::sync::Arc;

use crate::archive::ahead::{PushAhead, TICK};
use crate::archive::push::WalArchiver;
use crate::objstore::Store;

use super::member::Member;

impl Member {
    /// Runs the pusher while Postgres runs as a primary (not a standby, not fenced, not
    /// recovering a restore); stops it otherwise, and for good when the sidecar shuts down.
    pub async fn archive_ahead(self: Arc<Self>) {
        let Some(setup) = self.cfg.archive.clone() else {
            return;
        };
        let wal_dir = self.layout.data_dir.join("pg_wal");
        let mut store: Option<Store> = None;
        loop {
            if self.is_shutting_down() {
                return;
            }
            if !self.archives_now() {
                tokio::time::sleep(TICK * 4).await;
                continue;
            }
            let opened = match &store {
                Some(s) => s.clone(),
                None => match Store::open(&setup.settings.url) {
                    Ok(s) => store.insert(s).clone(),
                    Err(e) => {
                        tracing::warn!("archiving ahead is off: {e:#}");
                        return;
                    }
                },
            };
            let archiver = WalArchiver {
                store: opened,
                settings: setup.settings.clone(),
            };
            let member = self.clone();
            PushAhead::new(archiver, wal_dir.clone())
                .run(TICK, move || {
                    !member.is_shutting_down() && member.archives_now()
                })
                .await;
        }
    }

    /// Whether Postgres runs as a primary whose waiting WAL may be uploaded.
    fn archives_now(&self) -> bool {
        self.pid().is_some()
            && !self.layout.is_standby()
            && !self.layout.is_fenced()
            && !self.layout.recovery_conf().exists()
    }
}
