//! Object-store URLs: `file:///path`, `s3://bucket/prefix`, `az://container/prefix` and
//! `gs://bucket/prefix`, parsed and validated once at the boundary. A URL names a place and never
//! carries credentials: those come from the environment (the providers' usual variables).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which store a URL names, with its bucket, container or root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory on a local (or mounted) filesystem.
    File { root: PathBuf },
    /// An Amazon S3 (or S3-compatible) bucket.
    S3 { bucket: String },
    /// An Azure Blob Storage container (the account comes from the environment).
    Azure { container: String },
    /// A Google Cloud Storage bucket.
    Gcs { bucket: String },
}

/// A validated object-store URL: a location plus a key prefix (no leading or trailing `/`,
/// possibly empty) under which every object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub location: StoreLocation,
    pub prefix: String,
}

/// Why a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object-store URL {url:?}: {reason}")]
pub struct InvalidStoreUrl {
    pub url: String,
    pub reason: String,
}

const SCHEMES: &str =
    "file:///path, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix";

impl FromStr for StoreUrl {
    type Err = InvalidStoreUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| InvalidStoreUrl {
            url: url.to_string(),
            reason,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(fail(format!("expected {SCHEMES}")));
        };
        if url.chars().any(|c| c.is_control()) {
            return Err(fail("must not contain control characters".into()));
        }
        if rest.contains(['?', '#']) {
            return Err(fail(
                "query strings and fragments are not supported; settings and credentials come \
                 from the environment"
                    .into(),
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(fail(
                "credentials must not be part of the URL; they come from the environment".into(),
            ));
        }
        let location = match scheme {
            "file" => {
                if !authority.is_empty() && authority != "localhost" {
                    return Err(fail(format!(
                        "a file URL names a local directory (file:///path), not host {authority:?}"
                    )));
                }
                let root = format!("/{}", path.trim_end_matches('/'));
                if path.trim_matches('/').is_empty() {
                    return Err(fail("the file URL names no directory".into()));
                }
                if root.split('/').any(|s| s == "." || s == "..") {
                    return Err(fail("the path must not contain '.' or '..'".into()));
                }
                return Ok(StoreUrl {
                    location: StoreLocation::File {
                        root: PathBuf::from(root),
                    },
                    prefix: String::new(),
                });
            }
            "s3" => StoreLocation::S3 {
                bucket: check_bucket(authority, "S3 bucket").map_err(fail)?,
            },
            "gs" => StoreLocation::Gcs {
                bucket: check_bucket(authority, "GCS bucket").map_err(fail)?,
            },
            "az" | "azure" => StoreLocation::Azure {
                container: check_container(authority).map_err(fail)?,
            },
            other => {
                return Err(fail(format!(
                    "unsupported scheme {other:?}; expected {SCHEMES}"
                )))
            }
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(fail("the prefix must not contain '.' or '..'".into()));
        }
        if segments.iter().any(|s| s.contains('\\')) {
            return Err(fail("the prefix must not contain '\\'".into()));
        }
        Ok(StoreUrl {
            location,
            prefix: segments.join("/"),
        })
    }
}

/// S3 and GCS bucket names: 3 to 63 lowercase letters, digits, `.` and `-`, starting and ending
/// with a letter or digit.
fn check_bucket(name: &str, what: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err(format!("the {what} name is missing"));
    }
    if !(3..=63).contains(&name.len())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "{name:?} is not a valid {what} name (3 to 63 lowercase letters, digits, '.' and '-', \
             starting and ending with a letter or digit)"
        ));
    }
    Ok(name.to_string())
}

/// Azure container names: 3 to 63 lowercase letters, digits and single `-`, starting and ending
/// with a letter or digit.
fn check_container(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the Azure container name is missing".into());
    }
    if !(3..=63).contains(&name.len())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        || name.contains("--")
    {
        return Err(format!(
            "{name:?} is not a valid Azure container name (3 to 63 lowercase letters, digits and \
             single '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(name.to_string())
}

impl fmt::Display for StoreUrl {
    /// The canonical form of the URL (it holds no secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, authority) = match &self.location {
            StoreLocation::File { root } => return write!(f, "file://{}", root.display()),
            StoreLocation::S3 { bucket } => ("s3", bucket),
            StoreLocation::Azure { container } => ("az", container),
            StoreLocation::Gcs { bucket } => ("gs", bucket),
        };
        if self.prefix.is_empty() {
            write!(f, "{scheme}://{authority}")
        } else {
            write!(f, "{scheme}://{authority}/{}", self.prefix)
        }
    }
}

impl serde::Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> StoreUrl {
        url.parse()
            .unwrap_or_else(|e| panic!("{url} should parse: {e}"))
    }

    fn refused(url: &str) -> String {
        match url.parse::<StoreUrl>() {
            Ok(u) => panic!("{url} should be refused, parsed as {u:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_scheme_parses_with_its_prefix() {
        assert_eq!(
            parse("file:///var/lib/backups/"),
            StoreUrl {
                location: StoreLocation::File {
                    root: "/var/lib/backups".into()
                },
                prefix: String::new()
            }
        );
        assert_eq!(
            parse("s3://my-bucket/a/b/"),
            StoreUrl {
                location: StoreLocation::S3 {
                    bucket: "my-bucket".into()
                },
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            parse("az://wal-archive"),
            StoreUrl {
                location: StoreLocation::Azure {
                    container: "wal-archive".into()
                },
                prefix: String::new()
            }
        );
        assert_eq!(
            parse("gs://b.example.com//p"),
            StoreUrl {
                location: StoreLocation::Gcs {
                    bucket: "b.example.com".into()
                },
                prefix: "p".into()
            }
        );
        assert_eq!(
            parse("file://localhost/tmp/x").location,
            StoreLocation::File {
                root: "/tmp/x".into()
            }
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (input, canonical) in [
            ("s3://bkt/a//b/", "s3://bkt/a/b"),
            ("azure://ctr/p", "az://ctr/p"),
            ("gs://bkt", "gs://bkt"),
            ("file:///tmp/store/", "file:///tmp/store"),
        ] {
            let url = parse(input);
            assert_eq!(url.to_string(), canonical);
            assert_eq!(parse(canonical), url);
            let json = serde_json::to_string(&url).unwrap();
            assert_eq!(serde_json::from_str::<StoreUrl>(&json).unwrap(), url);
        }
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert!(refused("/tmp/store").contains("expected file:///path"));
        assert!(refused("http://example.com/x").contains("unsupported scheme \"http\""));
        assert!(refused("s3://").contains("bucket name is missing"));
        assert!(refused("s3:///prefix").contains("bucket name is missing"));
        assert!(refused("s3://Upper").contains("not a valid S3 bucket name"));
        assert!(refused("s3://ab").contains("not a valid S3 bucket name"));
        assert!(refused("az://a--b").contains("not a valid Azure container name"));
        assert!(refused("az://my.container").contains("not a valid Azure container name"));
        assert!(refused("s3://key:secret@bucket/p").contains("credentials must not be part"));
        assert!(refused("s3://bucket/p?region=x").contains("query strings"));
        assert!(refused("s3://bucket/a/../b").contains("'.' or '..'"));
        assert!(refused("file://server/share").contains("not host \"server\""));
        assert!(refused("file:///").contains("names no directory"));
        assert!(refused("file:///a/../b").contains("'.' or '..'"));
        assert!(refused("s3://bucket/a\nb").contains("control characters"));
    }
}
