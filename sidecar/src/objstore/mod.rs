//! The object store behind one [`StoreUrl`]: `file://` (a local directory, every write fsynced),
//! `s3://`, `az://` and `gs://` (the `object_store` crate's clients). Credentials and custom
//! endpoints come from the environment, through the providers' usual variables:
//!
//! - S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//!   `AWS_DEFAULT_REGION`, web identity and container credentials, `AWS_ENDPOINT_URL` for
//!   S3-compatible stores (moto, MinIO) and `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint.
//! - Azure: `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, a SAS token, a
//!   service principal or workload identity; `AZURE_STORAGE_USE_EMULATOR=true` for Azurite (at
//!   `AZURITE_BLOB_STORAGE_URL`, default `http://127.0.0.1:10000`).
//! - GCS: `GOOGLE_SERVICE_ACCOUNT` / `GOOGLE_APPLICATION_CREDENTIALS` or the metadata server.
//!
//! The same names, as files of a credentials directory ([`credentials`]), take precedence over
//! the environment: that is how the controller hands a store secret to a member.
//!
//! Every write is a create-if-absent ([`Store::put_new`]): an existing object is never replaced.
//! The one exception is a streamed multipart upload ([`Store::put_stream`], backups), whose
//! callers pick a fresh key and write the object that marks the backup complete with `put_new`.
//! Remote objects can carry user metadata (`file://` ones cannot).

pub mod credentials;
pub mod crypt;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use toygres_common::store_url::{StoreLocation, StoreUrl};

/// What [`Store::put_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and is now durably stored.
    Created,
    /// An object of that name already exists; nothing was written.
    AlreadyExists,
}

/// An object store with the URL's prefix applied to every key.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: StoreUrl,
    /// The instance's encryption key ([`crypt`]): every object is encrypted when set.
    cipher: Option<Arc<crypt::Cipher>>,
}

/// How long a request to a remote store may keep being retried before it fails: long enough to
/// ride out a hiccup, short enough that Postgres hears about an outage (and retries itself).
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 4,
        retry_timeout: RETRY_TIMEOUT,
    }
}

impl Store {
    /// Opens the store `url` names, with credentials from the credentials directory and the
    /// environment. A `file://` root is
    /// created when missing.
    pub fn open(url: &StoreUrl) -> anyhow::Result<Self> {
        let inner: Arc<dyn ObjectStore> = match &url.location {
            StoreLocation::File { root } => {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("create the store directory {}", root.display()))?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(root)
                        .with_context(|| format!("open the store directory {}", root.display()))?
                        .with_fsync(true),
                )
            }
            StoreLocation::S3 { bucket } => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config());
                let files = credentials::settings("AWS_")?;
                let has_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
                    .iter()
                    .any(|v| std::env::var_os(v).is_some())
                    || files
                        .iter()
                        .any(|(k, _)| k == "aws_region" || k == "aws_default_region");
                builder = credentials::configure(builder, files, |b, k, v| b.with_config(k, v));
                if !has_region {
                    builder = builder.with_region("us-east-1");
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(redacted)
                        .with_context(|| format!("set up the S3 client for {url}"))?,
                )
            }
            StoreLocation::Azure { container } => {
                let builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_retry(retry_config());
                let builder =
                    credentials::configure(builder, credentials::settings("AZURE_")?, |b, k, v| {
                        b.with_config(k, v)
                    });
                Arc::new(
                    builder
                        .build()
                        .map_err(redacted)
                        .with_context(|| format!("set up the Azure client for {url}"))?,
                )
            }
            StoreLocation::Gcs { bucket } => {
                let builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config());
                let builder = credentials::configure(
                    builder,
                    credentials::settings("GOOGLE_")?,
                    |b, k, v| b.with_config(k, v),
                );
                Arc::new(
                    builder
                        .build()
                        .map_err(redacted)
                        .with_context(|| format!("set up the GCS client for {url}"))?,
                )
            }
        };
        Ok(Self {
            inner,
            url: url.clone(),
            cipher: crypt::current(),
        })
    }

    /// This store, encrypting with this process's key as it is now: a store kept across a key
    /// rotation would go on encrypting with the key it was opened with.
    pub fn with_current_key(mut self) -> Self {
        self.cipher = crypt::current();
        self
    }

    /// A store in memory that answers as the remote store `url` names would (user metadata
    /// kept, create-if-absent), for tests.
    #[cfg(test)]
    pub fn in_memory(url: &StoreUrl) -> Self {
        Self {
            inner: Arc::new(object_store::memory::InMemory::new()),
            url: url.clone(),
            cipher: None,
        }
    }

    /// This store, encrypting with `cipher` (tests; members read their key file at start).
    #[cfg(test)]
    pub fn with_cipher(mut self, cipher: crypt::Cipher) -> Self {
        self.cipher = Some(Arc::new(cipher));
        self
    }

    /// The object path of `key` (a `/`-separated key relative to the URL's prefix).
    fn path(&self, key: &str) -> ObjectPath {
        if self.url.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.url.prefix))
        }
    }

    /// Where `key` lives, for messages: `s3://bucket/prefix/key`.
    pub fn describe(&self, key: &str) -> String {
        format!("{}/{key}", self.url.to_string().trim_end_matches('/'))
    }

    /// Stores `bytes` under `key` unless an object of that name exists, with the user metadata
    /// `metadata` where the store keeps metadata (not `file://`). Returns only once the store
    /// has acknowledged a durable write (for `file://`: data and directory fsynced).
    pub async fn put_new(
        &self,
        key: &str,
        bytes: Vec<u8>,
        metadata: &[(&'static str, String)],
    ) -> anyhow::Result<PutOutcome> {
        let path = self.path(key);
        let mut opts = PutOptions::from(PutMode::Create);
        let bytes = match &self.cipher {
            Some(c) => c.seal(key, &bytes)?,
            None => bytes,
        };
        // An encrypted store gets no metadata: a digest of the content would tell about it.
        if self.keeps_metadata() && self.cipher.is_none() {
            opts.attributes = metadata
                .iter()
                .map(|(k, v)| {
                    (
                        Attribute::Metadata((*k).into()),
                        AttributeValue::from(v.clone()),
                    )
                })
                .collect();
        }
        let payload = PutPayload::from(bytes);
        match self
            .inner
            .put_opts(&path, payload.clone(), opts.clone())
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::AlreadyExists),
            // A store configured without conditional writes (`AWS_CONDITIONAL_PUT=disabled`,
            // for an S3 clone that ignores `If-None-Match`): look first, then write. Not
            // atomic, but what such a store allows.
            Err(object_store::Error::NotImplemented { .. }) => {
                if self.exists(key).await? {
                    return Ok(PutOutcome::AlreadyExists);
                }
                opts.mode = PutMode::Overwrite;
                self.inner
                    .put_opts(&path, payload, opts)
                    .await
                    .map_err(redacted)
                    .with_context(|| format!("upload {}", self.describe(key)))?;
                Ok(PutOutcome::Created)
            }
            Err(e) => Err(redacted(e)).with_context(|| format!("upload {}", self.describe(key))),
        }
    }

    /// Whether this store keeps user metadata beside objects.
    fn keeps_metadata(&self) -> bool {
        !matches!(self.url.location, StoreLocation::File { .. })
    }

    /// `None` when there is no object `key`; otherwise its user metadata (name to value; empty
    /// where the store keeps none).
    pub async fn metadata(
        &self,
        key: &str,
    ) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.inner.get_opts(&self.path(key), opts).await {
            Ok(r) => Ok(Some(
                r.attributes
                    .iter()
                    .filter_map(|(k, v)| match k {
                        Attribute::Metadata(name) => {
                            Some((name.to_string(), v.as_ref().to_string()))
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(redacted(e)).with_context(|| format!("look up {}", self.describe(key))),
        }
    }

    /// Whether an object named `key` exists.
    pub async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        match self.inner.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(redacted(e)).with_context(|| format!("look up {}", self.describe(key))),
        }
    }

    /// The content of `key`, or `None` when there is no such object.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let result = match self.inner.get(&self.path(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => {
                return Err(redacted(e)).with_context(|| format!("download {}", self.describe(key)))
            }
        };
        let bytes = result
            .bytes()
            .await
            .map_err(redacted)
            .with_context(|| format!("download {}", self.describe(key)))?;
        Ok(Some(self.opener(key).open(&bytes)?))
    }

    /// The keys (relative to the URL's prefix) of every object under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .list_times(prefix)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// [`Store::list`] with each object's last-modified time (seconds since the Unix epoch).
    pub async fn list_times(&self, prefix: &str) -> anyhow::Result<Vec<(String, i64)>> {
        use futures::StreamExt;
        let base = self.path(prefix.trim_end_matches('/'));
        let mut stream = self.inner.list(Some(&base));
        let strip = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        let mut keys = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta
                .map_err(redacted)
                .with_context(|| format!("list {}", self.describe(prefix)))?;
            let key = meta.location.as_ref();
            keys.push((
                key.strip_prefix(&strip).unwrap_or(key).to_string(),
                meta.last_modified.timestamp(),
            ));
        }
        keys.sort();
        Ok(keys)
    }
}

/// Parts of a streamed upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

impl Store {
    /// Stores the byte chunks `chunks` yields under `key` as one multipart upload (never the
    /// whole object in memory); callers pick fresh keys. Once the chunks end, `done` (the
    /// producer's outcome) decides: `Ok` completes the upload, `Err` aborts it and nothing
    /// appears under `key`. Returns the bytes stored and the producer's result.
    pub async fn put_stream<T>(
        &self,
        key: &str,
        mut chunks: tokio::sync::mpsc::Receiver<bytes::Bytes>,
        done: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<(u64, T)> {
        let path = self.path(key);
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(redacted)
            .with_context(|| format!("start uploading {}", self.describe(key)))?;
        let mut upload = object_store::WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut total = 0u64;
        let mut failed = None;
        let mut sealer = self.cipher.as_ref().map(|c| c.sealer(key));
        loop {
            let chunk = match chunks.recv().await {
                Some(chunk) => match &mut sealer {
                    Some(s) => s.push(&chunk).map(bytes::Bytes::from),
                    None => Ok(chunk),
                },
                None => match sealer.take() {
                    Some(s) => s.finish().map(bytes::Bytes::from),
                    None => break,
                },
            };
            let chunk = match chunk {
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => chunk,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if let Err(e) = upload.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                failed = Some(redacted(e));
                break;
            }
            total += chunk.len() as u64;
            upload.put(chunk);
        }
        // Dropping the receiver stops a producer still writing (after an upload failure).
        drop(chunks);
        let produced = done.await;
        if let Some(e) = failed {
            let _ = upload.abort().await;
            return Err(e).with_context(|| format!("upload {}", self.describe(key)));
        }
        let produced = match produced {
            Ok(p) => p,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e);
            }
        };
        upload
            .finish()
            .await
            .map_err(redacted)
            .with_context(|| format!("complete the upload of {}", self.describe(key)))?;
        Ok((total, produced))
    }

    /// The content of `key` as a stream of chunks, or `None` when there is no such object.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> anyhow::Result<Option<futures::stream::BoxStream<'static, anyhow::Result<bytes::Bytes>>>>
    {
        use futures::StreamExt;
        let result = match self.inner.get(&self.path(key)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => {
                return Err(redacted(e)).with_context(|| format!("download {}", self.describe(key)))
            }
        };
        let what = self.describe(key);
        let opener = self.opener(key);
        let chunks = result.into_stream().map(move |chunk| {
            chunk
                .map_err(redacted)
                .with_context(|| format!("download {what}"))
        });
        Ok(Some(decrypted(chunks.boxed(), opener)))
    }

    /// The decryption of `key` with this store's key (or the check that, without one, the
    /// object is not encrypted).
    fn opener(&self, key: &str) -> crypt::Opener {
        let what = self.describe(key);
        match &self.cipher {
            Some(c) => c.opener(key, &what),
            None => crypt::Opener::without_key(&what),
        }
    }

    /// Deletes every key in `keys` (in batches where the store has a bulk delete); objects
    /// already gone are no error.
    pub async fn delete_many(&self, keys: &[String]) -> anyhow::Result<()> {
        use futures::StreamExt;
        let paths: Vec<object_store::Result<ObjectPath>> =
            keys.iter().map(|k| Ok(self.path(k))).collect();
        let mut results = self
            .inner
            .delete_stream(futures::stream::iter(paths).boxed());
        while let Some(result) = results.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(redacted(e))
                        .with_context(|| format!("delete objects under {}", self.describe("")))
                }
            }
        }
        Ok(())
    }

    /// Deletes `key`; an object that is already gone is no error.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(redacted(e)).with_context(|| format!("delete {}", self.describe(key))),
        }
    }
}

/// `chunks` decrypted by `opener` as they come; the end of the object is checked too.
fn decrypted(
    chunks: futures::stream::BoxStream<'static, anyhow::Result<bytes::Bytes>>,
    opener: crypt::Opener,
) -> futures::stream::BoxStream<'static, anyhow::Result<bytes::Bytes>> {
    use futures::StreamExt;
    futures::stream::unfold(Some((chunks, opener)), |state| async move {
        let (mut chunks, mut opener) = state?;
        match chunks.next().await {
            Some(Ok(chunk)) => {
                let out = opener.push(&chunk).map(bytes::Bytes::from);
                let next = out.is_ok().then_some((chunks, opener));
                Some((out, next))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((opener.finish().map(bytes::Bytes::from), None)),
        }
    })
    .boxed()
}

/// The size of each part of a streamed upload (S3 wants at least 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// An object-store error as text, its whole chain included, with the query string of every URL
/// in it cut off: an Azure SAS token or a presigned URL must never reach a log.
fn redacted(e: object_store::Error) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    anyhow::anyhow!(redact_urls(&text))
}

/// Replaces the query string of each `http://` or `https://` URL in `text` with `?<redacted>`.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        if !(from.starts_with("http://") || from.starts_with("https://")) {
            out.push_str("http");
            rest = &from[4..];
            continue;
        }
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(from.len());
        let url = &from[..end];
        match url.split_once('?') {
            Some((base, _)) => {
                out.push_str(base);
                out.push_str("?<redacted>");
            }
            None => out.push_str(url),
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
