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
//! one-way digest of the key) lets a wrong key be told from a damaged object.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

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

/// An instance's encryption key. `Debug` shows its id only.
pub struct Cipher {
    key: [u8; 32],
    id: [u8; KEY_ID_LEN],
    /// The file it was read from (copied for `wal-push` and `wal-fetch`).
    file: PathBuf,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cipher(key id {})", self.key_id())
    }
}

static KEY: OnceLock<Arc<Cipher>> = OnceLock::new();

/// Makes every store this process opens encrypt and decrypt with the key in `path` (the first
/// call wins).
pub fn use_key_file(path: &Path) -> anyhow::Result<()> {
    if KEY.get().is_some() {
        return Ok(());
    }
    let cipher = Cipher::from_file(path)?;
    let _ = KEY.set(Arc::new(cipher));
    Ok(())
}

/// The key set with [`use_key_file`], if any.
pub fn current() -> Option<Arc<Cipher>> {
    KEY.get().cloned()
}

/// Writes this process's key to `copy` (0600, owned by the Postgres OS user), for the
/// `wal-push` and `wal-fetch` Postgres runs; removes a copy left from before when there is no
/// key.
pub fn copy_key_for(bins: &toygres_common::pg_exec::PgBinaries, copy: &Path) -> anyhow::Result<()> {
    match current() {
        Some(cipher) => {
            let text = std::fs::read(&cipher.file).with_context(|| {
                format!("read the encryption key file {}", cipher.file.display())
            })?;
            crate::owned::write_file(bins, copy, &text, 0o600)
        }
        None => match std::fs::remove_file(copy) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", copy.display()))
            }
            _ => Ok(()),
        },
    }
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
    pub fn new(key: [u8; 32], file: PathBuf) -> Self {
        let mut id = [0u8; KEY_ID_LEN];
        hkdf::Hkdf::<sha2::Sha256>::new(None, &key)
            .expand(b"toygres key id v1", &mut id)
            .expect("8 bytes is a valid HKDF length");
        Self { key, id, file }
    }

    /// Reads the key file (64 hex digits).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the encryption key file {}", path.display()))?;
        let key = parse_key(&text).with_context(|| format!("check {}", path.display()))?;
        Ok(Self::new(key, path.to_path_buf()))
    }

    /// The key's public id (hex): a one-way digest, safe to show.
    pub fn key_id(&self) -> String {
        hex::encode(self.id)
    }

    fn object_cipher(&self, salt: &[u8], object: &str) -> Aes256Gcm {
        let mut key = [0u8; 32];
        let mut info = b"toygres object v1\0".to_vec();
        info.extend_from_slice(object.as_bytes());
        hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &self.key)
            .expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF length");
        Aes256Gcm::new(&key.into())
    }

    /// Starts encrypting the object named `object`.
    pub fn sealer(&self, object: &str) -> Sealer {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.id);
        header.extend_from_slice(&salt);
        Sealer {
            cipher: self.object_cipher(&salt, object),
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
            Some(key) => {
                let id = &self.pending[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
                if id != key.id {
                    bail!(
                        "{} was encrypted with another key (key id {}; the key given has id {}): \
                         wrong encryption key",
                        self.what,
                        hex::encode(id),
                        key.key_id()
                    );
                }
                let salt = self.pending[MAGIC.len() + KEY_ID_LEN..HEADER_LEN].to_vec();
                self.cipher = Some(key.object_cipher(&salt, &self.object));
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
    }
}
