//! Files and directories the Postgres OS user owns, written the one safe way: atomically
//! (temp file, fsync, rename) and chowned. Postgres's configuration, the archive's settings, a
//! restore's recovery files and a bootstrap's work directory are all made through here.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use toygres_common::pg_exec::PgBinaries;

/// Writes `content` to `path` atomically (temp file, fsync, rename) with `mode`, owned by the
/// Postgres OS user.
pub fn write_file(bins: &PgBinaries, path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-toygres");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("set the mode of {}", tmp.display()))?;
        f.write_all(content)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("sync {}", tmp.display()))?;
    }
    bins.chown(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {} into place", tmp.display()))?;
    Ok(())
}

/// Creates `dir` (and its parents) as a directory only the Postgres OS user can enter.
pub fn ensure_private_dir(bins: &PgBinaries, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("set the mode of {}", dir.display()))?;
    bins.chown(dir)?;
    Ok(())
}
