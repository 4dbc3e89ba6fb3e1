//! Client-side encryption of every object a member writes to its store (WAL, base backups,
//! dumps, manifests), when the instance has a key (`--backup-encryption-key-file`).
//!
//! The key is 32 random bytes, kept in a store secret as 64 hex digits and read from a file: it
//! is never on a command line, in an environment, in a log or in a message. Each object gets
//! its own AES-256-GCM key, derived with HKDF-SHA256 from the instance's key, a random salt and
//! the object's name, so that nonces can simply count and an object moved to another name does
//! not decrypt. The object is sealed in frames, so a backup is encrypted and decrypted as it
//! streams:
//!
//! ```text
//! "TGRSENC1" | key id (8 bytes) | salt (32 bytes) | frame … | final frame
//! frame = AES-256-GCM(64 KiB of content), nonce = 0 (7 bytes) | frame number (u32 BE) | last?
//! ```
//!
//! The last frame is marked in its nonce: a cut-off object fails to decrypt. The key id (a
//! one-way digest of the key) lets a wrong key be told from a damaged object, and picks the key
//! from a *key ring*: after a rotation (`toygres backup rotate-key`) a member seals with the
//! new key and opens objects of either key. A ring is a directory
//! (`--backup-encryption-keyring`): `current.key` seals, every `*.key` opens; it is read at
//! start and again when the controller asks ([`reload`]). A single key file
//! (`--backup-encryption-key-file`) is a ring of one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{bail, Context};
use rand::RngCore;

/// What every encrypted object starts with.
pub const MAGIC: &[u8; 8] = b"TGRSENC1";
const KEY_ID_LEN: usize = 8;
const SALT_LEN: usize = 32;
/// The header's length: magic, key id, salt.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + SALT_LEN;
/// Content bytes per frame.
const FRAME: usize = 64 * 1024;
/// AES-GCM's tag.
const TAG: usize = 16;

/// One key and its id.
struct Key {
    key: [u8; 32],
    id: [u8; KEY_ID_LEN],
}

impl Key {
    fn new(key: [u8; 32]) -> Self {
        let mut id = [0u8; KEY_ID_LEN];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &key)
            .expand(b"toygres key id v1", &mut id)
            .expect("8 bytes is a valid HKDF length");
        Self { key, id }
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the encryption key file {}", path.display()))?;
        let key = parse_key(&text).with_context(|| format!("check {}", path.display()))?;
        Ok(Self::new(key))
    }
}

/// Where a member's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One key file: a ring of one.
    File(PathBuf),
    /// A key ring directory: `current.key` seals, every `*.key` opens.
    Ring(PathBuf),
}

/// The file of a ring directory whose key seals new objects.
pub const CURRENT_KEY_FILE: &str = "current.key";

/// An instance's encryption keys: the current one, which seals, and the older ones, which
/// still open what they sealed. `Debug` shows their ids only.
pub struct Cipher {
    current: Key,
    older: Vec<Key>,
    /// Where they were read from (copied for `wal-push` and `wal-fetch`).
    source: KeySource,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cipher(key ids {})", self.key_ids().join(", "))
    }
}

static KEY: RwLock<Option<Arc<Cipher>>> = RwLock::new(None);

/// Makes every store this process opens encrypt and decrypt with the key in `path` (the first
/// call wins).
pub fn use_key_file(path: &Path) -> anyhow::Result<()> {
    use_keys(KeySource::File(path.to_path_buf()))
}

/// Makes every store this process opens encrypt and decrypt with the key ring in `dir` (the
/// first call wins; [`reload`] reads it again).
pub fn use_keyring(dir: &Path) -> anyhow::Result<()> {
    use_keys(KeySource::Ring(dir.to_path_buf()))
}

fn use_keys(source: KeySource) -> anyhow::Result<()> {
    let mut slot = KEY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(Arc::new(Cipher::read(source)?));
    }
    Ok(())
}

/// Reads this process's keys again from where they came from (a rotated ring); returns them,
/// or `None` when this process has no key. On an error the keys stay as they were.
pub fn reload() -> anyhow::Result<Option<Arc<Cipher>>> {
    let mut slot = KEY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(old) = slot.as_ref() else {
        return Ok(None);
    };
    let fresh = Arc::new(Cipher::read(old.source.clone())?);
    *slot = Some(Arc::clone(&fresh));
    Ok(Some(fresh))
}

/// The keys set with [`use_key_file`] or [`use_keyring`], if any.
pub fn current() -> Option<Arc<Cipher>> {
    KEY.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Waits until this process's key ring's version file
/// ([`KEYRING_VERSION_FILE`](toygres_common::sidecar_api::KEYRING_VERSION_FILE)) reads
/// `version`: a ring its platform updates late (a mounted Kubernetes Secret, which the kubelet
/// refreshes some seconds after it changed) is read again only once it is the ring the
/// controller wrote. Keys from one file (no ring) have nothing to wait for. Gives up after
/// `timeout`.
pub async fn wait_for_ring_version(
    version: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let dir = match current().map(|c| c.source.clone()) {
        Some(KeySource::Ring(dir)) => dir,
        _ => return Ok(()),
    };
    let file = dir.join(toygres_common::sidecar_api::KEYRING_VERSION_FILE);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(text) = tokio::fs::read_to_string(&file).await {
            if text.trim() == version {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the key ring {} is not at version {version} after {timeout:?}: its platform has \
                 not updated it yet",
                dir.display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Writes this process's keys where `wal-push` and `wal-fetch` read them (0600 files owned by
/// the Postgres OS user): a key file to `copy`, a ring to the directory `ring_copy`; removes
/// what is left from before and no longer applies.
pub fn copy_key_for(
    bins: &toygres_common::pg_exec::PgBinaries,
    copy: &Path,
    ring_copy: &Path,
) -> anyhow::Result<()> {
    let cipher = current();
    match cipher.as_ref().map(|c| &c.source) {
        Some(KeySource::File(file)) => {
            remove_if_present(ring_copy)?;
            let text = std::fs::read(file)
                .with_context(|| format!("read the encryption key file {}", file.display()))?;
            crate::owned::write_file(bins, copy, &text, 0o600)
        }
        Some(KeySource::Ring(dir)) => {
            remove_if_present(copy)?;
            crate::owned::ensure_private_dir(bins, ring_copy)?;
            let mut wanted = Vec::new();
            for (name, path) in ring_files(dir)? {
                let text = std::fs::read(&path)
                    .with_context(|| format!("read the encryption key file {}", path.display()))?;
                crate::owned::write_file(bins, &ring_copy.join(&name), &text, 0o600)?;
                wanted.push(name);
            }
            for (name, path) in ring_files(ring_copy)? {
                if !wanted.contains(&name) {
                    remove_if_present(&path)?;
                }
            }
            Ok(())
        }
        None => {
            remove_if_present(copy)?;
            remove_if_present(ring_copy)
        }
    }
}

/// Removes a file or a directory; one that is not there is no error.
fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The `*.key` files of a ring directory (name, path), sorted by name.
fn ring_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("read the key ring directory {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("read the key ring {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".key") && !name.starts_with('.') && entry.path().is_file() {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads 32 bytes written as 64 hex digits (surrounding white space allowed).
pub fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    let mut key = [0u8; 32];
    // The text is never put in a message: only what is wrong with it.
    if text.len() != 64 || hex::decode_to_slice(text, &mut key).is_err() {
        bail!("the encryption key must be 64 hex digits (32 random bytes)");
    }
    Ok(key)
}

impl Cipher {
    /// A ring of one key (`file`: where it would be read from).
    #[cfg(test)]
    pub fn new(key: [u8; 32], file: PathBuf) -> Self {
        Self {
            current: Key::new(key),
            older: Vec::new(),
            source: KeySource::File(file),
        }
    }

    /// Reads the keys from `source`.
    pub fn read(source: KeySource) -> anyhow::Result<Self> {
        match &source {
            KeySource::File(path) => Ok(Self {
                current: Key::read(path)?,
                older: Vec::new(),
                source,
            }),
            KeySource::Ring(dir) => {
                let mut current = None;
                let mut older = Vec::new();
                for (name, path) in ring_files(dir)? {
                    let key = Key::read(&path)?;
                    if name == CURRENT_KEY_FILE {
                        current = Some(key);
                    } else {
                        older.push(key);
                    }
                }
                let current = current.with_context(|| {
                    format!("the key ring {} has no {CURRENT_KEY_FILE}", dir.display())
                })?;
                older.retain(|k| k.id != current.id);
                older.dedup_by(|a, b| a.id == b.id);
                Ok(Self {
                    current,
                    older,
                    source,
                })
            }
        }
    }

    /// The current key's public id (hex): a one-way digest, safe to show.
    pub fn key_id(&self) -> String {
        hex::encode(self.current.id)
    }

    /// The ids of every key of the ring, the current one first.
    pub fn key_ids(&self) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .map(|k| hex::encode(k.id))
            .collect()
    }

    /// The ring's key of id `id`.
    fn key_of(&self, id: &[u8]) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id[..] == *id)
    }

    fn object_cipher(key: &Key, salt: &[u8], object: &str) -> Aes256Gcm {
        let mut out = [0u8; 32];
        let mut info = b"toygres object v1\0".to_vec();
        info.extend_from_slice(object.as_bytes());
        hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &key.key)
            .expand(&info, &mut out)
            .expect("32 bytes is a valid HKDF length");
        Aes256Gcm::new(&out.into())
    }

    /// Starts encrypting the object named `object`.
    pub fn sealer(&self, object: &str) -> Sealer {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.current.id);
        header.extend_from_slice(&salt);
        Sealer {
            cipher: Self::object_cipher(&self.current, &salt, object),
            header: Some(header),
            pending: Vec::with_capacity(FRAME),
            frame: 0,
        }
    }

    /// Starts decrypting the object named `object` (`what` describes it in messages).
    pub fn opener(self: &Arc<Self>, object: &str, what: &str) -> Opener {
        Opener {
            key: Some(Arc::clone(self)),
            object: object.to_string(),
            what: what.to_string(),
            cipher: None,
            pending: Vec::new(),
            frame: 0,
            plain: false,
        }
    }

    /// Encrypts a whole object.
    pub fn seal(&self, object: &str, content: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut sealer = self.sealer(object);
        let mut out = sealer.push(content)?;
        out.extend(sealer.finish()?);
        Ok(out)
    }
}

fn nonce(frame: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&frame.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Encrypts one object as it streams.
pub struct Sealer {
    cipher: Aes256Gcm,
    header: Option<Vec<u8>>,
    pending: Vec<u8>,
    frame: u32,
}

impl Sealer {
    fn seal_frame(&mut self, content: &[u8], last: bool, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let n = nonce(self.frame, last);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&n), content)
            .map_err(|_| anyhow::anyhow!("encrypt a frame"))?;
        out.extend_from_slice(&sealed);
        self.frame = self
            .frame
            .checked_add(1)
            .context("an object too large to encrypt")?;
        Ok(())
    }

    /// Takes more content; returns the encrypted bytes ready to be stored.
    pub fn push(&mut self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = self.header.take().unwrap_or_default();
        self.pending.extend_from_slice(data);
        // A full frame goes out only once more content follows it: the last frame is marked.
        let mut start = 0;
        while self.pending.len() - start > FRAME {
            let frame = self.pending[start..start + FRAME].to_vec();
            self.seal_frame(&frame, false, &mut out)?;
            start += FRAME;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Ends the object: the last (possibly empty) frame.
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        let mut out = self.header.take().unwrap_or_default();
        let rest = std::mem::take(&mut self.pending);
        self.seal_frame(&rest, true, &mut out)?;
        Ok(out)
    }
}

/// Decrypts one object as it streams; without a key, passes a plain object through and
/// refuses an encrypted one.
pub struct Opener {
    key: Option<Arc<Cipher>>,
    object: String,
    what: String,
    cipher: Option<Aes256Gcm>,
    pending: Vec<u8>,
    frame: u32,
    /// No key, and the object is not encrypted: content passes as is.
    plain: bool,
}

impl Opener {
    /// An opener for a member without a key.
    pub fn without_key(what: &str) -> Self {
        Opener {
            key: None,
            object: String::new(),
            what: what.to_string(),
            cipher: None,
            pending: Vec::new(),
            frame: 0,
            plain: false,
        }
    }

    /// Reads the header once enough bytes are in; `Ok(false)` while more are needed.
    fn start(&mut self, at_end: bool) -> anyhow::Result<bool> {
        let have = self.pending.len();
        let magic_seen = have >= MAGIC.len() && self.pending[..MAGIC.len()] == MAGIC[..];
        let could_be_magic = have < MAGIC.len() && MAGIC.starts_with(&self.pending);
        match &self.key {
            None if magic_seen => {
                let id = self
                    .pending
                    .get(MAGIC.len()..MAGIC.len() + KEY_ID_LEN)
                    .map(hex::encode)
                    .unwrap_or_else(|| "unknown".into());
                bail!(
                    "{} is encrypted (key id {id}) and this member has no encryption key: give \
                     the instance the store secret holding its key",
                    self.what
                )
            }
            None if could_be_magic && !at_end => Ok(false),
            None => {
                self.plain = true;
                Ok(true)
            }
            Some(_) if could_be_magic && !at_end => Ok(false),
            Some(_) if !magic_seen => bail!(
                "{} is not encrypted, but this instance's backups are: refusing an object that \
                 did not come from a member holding its key",
                self.what
            ),
            Some(_) if have < HEADER_LEN && !at_end => Ok(false),
            Some(_) if have < HEADER_LEN => {
                bail!(
                    "{} is cut off: its encryption header is incomplete",
                    self.what
                )
            }
            Some(ring) => {
                let id = &self.pending[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
                let Some(key) = ring.key_of(id) else {
                    bail!(
                        "{} was encrypted with another key (key id {}; the keys given have ids \
                         {}): wrong encryption key",
                        self.what,
                        hex::encode(id),
                        ring.key_ids().join(", ")
                    );
                };
                let salt = self.pending[MAGIC.len() + KEY_ID_LEN..HEADER_LEN].to_vec();
                self.cipher = Some(Cipher::object_cipher(key, &salt, &self.object));
                self.pending.drain(..HEADER_LEN);
                Ok(true)
            }
        }
    }

    fn open_frame(&mut self, sealed: &[u8], last: bool) -> anyhow::Result<Vec<u8>> {
        let cipher = self.cipher.as_ref().context("no header read")?;
        let n = nonce(self.frame, last);
        let content = cipher
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: sealed,
                    aad: b"",
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "{} failed authentication at frame {}: it is damaged, cut off or was \
                     altered",
                    self.what,
                    self.frame
                )
            })?;
        self.frame = self.frame.wrapping_add(1);
        Ok(content)
    }

    /// Takes more stored bytes; returns the content decrypted so far.
    pub fn push(&mut self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        if self.plain {
            return Ok(data.to_vec());
        }
        self.pending.extend_from_slice(data);
        if self.cipher.is_none() && !self.plain {
            if !self.start(false)? {
                return Ok(Vec::new());
            }
            if self.plain {
                return Ok(std::mem::take(&mut self.pending));
            }
        }
        let mut out = Vec::new();
        let mut start = 0;
        // A full frame is opened only once more bytes follow it: the last one is marked.
        while self.pending.len() - start > FRAME + TAG {
            let sealed = self.pending[start..start + FRAME + TAG].to_vec();
            out.extend(self.open_frame(&sealed, false)?);
            start += FRAME + TAG;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Ends the object; fails when it was cut off.
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        if self.plain {
            return Ok(Vec::new());
        }
        if self.cipher.is_none() {
            self.start(true)?;
            if self.plain {
                return Ok(std::mem::take(&mut self.pending));
            }
        }
        if self.pending.len() < TAG {
            bail!("{} is cut off: its last frame is missing", self.what);
        }
        let rest = std::mem::take(&mut self.pending);
        self.open_frame(&rest, true)
    }

    /// Decrypts a whole object.
    pub fn open(mut self, stored: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = self.push(stored)?;
        out.extend(self.finish()?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Arc<Cipher> {
        Arc::new(Cipher::new([byte; 32], PathBuf::from("/k")))
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_every_frame_boundary_and_in_any_chunking() {
        let k = key(1);
        for len in [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME, 3 * FRAME + 17] {
            let plain = content(len);
            let sealed = k.seal("db/wal/x", &plain).unwrap();
            assert!(sealed.starts_with(MAGIC));
            assert_eq!(
                sealed.len(),
                HEADER_LEN + plain.len() + TAG * len.div_ceil(FRAME).max(1)
            );
            assert_eq!(k.opener("db/wal/x", "x").open(&sealed).unwrap(), plain);
            for chunk in [1, 7, 1000, FRAME + 5] {
                let mut sealer = k.sealer("o");
                let mut stored = Vec::new();
                for c in plain.chunks(chunk) {
                    stored.extend(sealer.push(c).unwrap());
                }
                stored.extend(sealer.finish().unwrap());
                let mut opener = k.opener("o", "o");
                let mut back = Vec::new();
                for c in stored.chunks(chunk) {
                    back.extend(opener.push(c).unwrap());
                }
                back.extend(opener.finish().unwrap());
                assert_eq!(back, plain, "len {len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn wrong_key_missing_key_damage_truncation_and_renaming_fail_clearly() {
        let k = key(1);
        let plain = content(2 * FRAME + 10);
        let sealed = k.seal("db/base/1/base.tar.gz", &plain).unwrap();
        let err = |r: anyhow::Result<Vec<u8>>| format!("{:#}", r.unwrap_err());

        let wrong = err(key(2)
            .opener("db/base/1/base.tar.gz", "the backup")
            .open(&sealed));
        assert!(wrong.contains("wrong encryption key"), "{wrong}");
        assert!(wrong.contains(&k.key_id()) && wrong.contains(&key(2).key_id()));

        let missing = err(Opener::without_key("the backup").open(&sealed));
        assert!(missing.contains("has no encryption key"), "{missing}");

        let mut damaged = sealed.clone();
        damaged[HEADER_LEN + FRAME + 40] ^= 1;
        let e = err(k.opener("db/base/1/base.tar.gz", "b").open(&damaged));
        assert!(e.contains("failed authentication at frame 1"), "{e}");

        let cut = &sealed[..sealed.len() - (10 + TAG)];
        let e = err(k.opener("db/base/1/base.tar.gz", "b").open(cut));
        assert!(e.contains("failed authentication"), "{e}");

        let e = err(k.opener("db/base/2/base.tar.gz", "b").open(&sealed));
        assert!(e.contains("failed authentication at frame 0"), "{e}");

        let e = err(k.opener("x", "the WAL file").open(&plain));
        assert!(e.contains("is not encrypted"), "{e}");

        // Without a key, plain objects pass untouched (also shorter than the magic).
        assert_eq!(Opener::without_key("x").open(&plain).unwrap(), plain);
        assert_eq!(Opener::without_key("x").open(b"TG").unwrap(), b"TG");
        assert_eq!(Opener::without_key("x").open(b"").unwrap(), b"");
    }

    #[test]
    fn a_rotated_ring_seals_with_its_new_key_and_still_opens_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = ("11".repeat(32), "22".repeat(32));
        std::fs::write(dir.path().join(CURRENT_KEY_FILE), &old).unwrap();
        let before = Cipher::read(KeySource::Ring(dir.path().into())).unwrap();
        assert_eq!(before.key_ids(), [key(0x11).key_id()]);
        let sealed_before = before.seal("db/wal/1", b"before").unwrap();

        // The rotation: the old key moves aside, the new one becomes current.
        std::fs::write(dir.path().join("previous-1.key"), &old).unwrap();
        std::fs::write(dir.path().join(CURRENT_KEY_FILE), &new).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a key").unwrap();
        let after = Arc::new(Cipher::read(KeySource::Ring(dir.path().into())).unwrap());
        assert_eq!(after.key_id(), key(0x22).key_id());
        assert_eq!(after.key_ids(), [key(0x22).key_id(), key(0x11).key_id()]);
        let sealed_after = after.seal("db/wal/2", b"after").unwrap();
        assert_eq!(&sealed_after[8..16], &key(0x22).current.id[..]);
        assert_eq!(
            after.opener("db/wal/1", "w").open(&sealed_before).unwrap(),
            b"before"
        );
        assert_eq!(
            after.opener("db/wal/2", "w").open(&sealed_after).unwrap(),
            b"after"
        );
        // The old key alone cannot open what the new one sealed, and says which key it needs.
        let e = format!(
            "{:#}",
            Arc::new(before)
                .opener("db/wal/2", "w")
                .open(&sealed_after)
                .unwrap_err()
        );
        assert!(
            e.contains("wrong encryption key") && e.contains(&after.key_id()),
            "{e}"
        );
        assert!(!format!("{after:?}").contains(&new[..16]));

        // A ring without a current key is refused, naming the file and no key.
        std::fs::remove_file(dir.path().join(CURRENT_KEY_FILE)).unwrap();
        let e = Cipher::read(KeySource::Ring(dir.path().into())).unwrap_err();
        assert!(format!("{e:#}").contains(CURRENT_KEY_FILE), "{e:#}");
    }

    #[test]
    fn the_same_content_never_looks_the_same_and_keys_parse_from_hex_only() {
        let k = key(3);
        assert_ne!(k.seal("o", b"same").unwrap(), k.seal("o", b"same").unwrap());
        let hex_key = "ab".repeat(32);
        assert_eq!(parse_key(&format!("{hex_key}\n")).unwrap(), [0xab; 32]);
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            let e = parse_key(bad).unwrap_err().to_string();
            assert!(e.contains("64 hex digits") && !e.contains("zz"), "{e}");
        }
        assert!(!format!("{k:?}").contains("030303"));
        assert!(format!("{k:?}").contains(&k.key_id()));
    }
}
