//! The bearer token of the controller's API: generated once, kept in a 0600 file that the CLI
//! reads, compared in constant time, and never printed.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;
use rand::RngCore as _;

/// A bearer token. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A new token: 32 random bytes, hex-encoded.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(hex(&bytes))
    }

    /// Checks a token read from a file or a header: printable ASCII with no spaces.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the token is empty");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces");
        }
        Ok(Self(text.to_string()))
    }

    /// The token, to send in an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        toygres_common::http_api::token_matches(&self.0, presented)
    }

    /// Reads the token in `path`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&text).map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))
    }

    /// Reads the token in `path`, or creates the file (mode 0600) with a new token.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "{} can be read by other users (mode {:o}); chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    );
                }
                return Self::read(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        let token = Self::generate();
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match file {
            Ok(mut file) => {
                file.write_all(format!("{}\n", token.0).as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("write {}", path.display()))?;
                tracing::info!("created the API token in {}", path.display());
                Ok(token)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read(path),
            Err(e) => Err(e).with_context(|| format!("create {}", path.display())),
        }
    }
}

/// Lower-case hex of `bytes` (the `hex` crate; kept as a name the callers already use).
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let a = ApiToken::generate();
        let b = ApiToken::generate();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = ApiToken::parse("s3cret-token").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn matches_only_the_same_token() {
        let token = ApiToken::parse("abc123").unwrap();
        assert!(token.matches("abc123"));
        assert!(!token.matches("abc124"));
        assert!(!token.matches("abc12"));
        assert!(!token.matches(""));
    }

    #[test]
    fn token_file_is_created_0600_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/controller.token");
        let first = ApiToken::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = ApiToken::load_or_create(&path).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "\n").unwrap();
        let err = ApiToken::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
