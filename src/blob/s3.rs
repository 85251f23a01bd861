//! S3 (or S3-compatible) blob store: `{prefix}sha256/ab/abcd...` in one bucket.
//!
//! Uploads stream through a multipart upload to `{prefix}uploads/<random>`,
//! one part buffered at a time, hashing on the way; once complete the object
//! is copied to its content-addressed key and the temporary object deleted,
//! so a blob key only ever holds complete bytes. A body that fits in one part
//! is sent with a single PutObject straight to its final key (PutObject is
//! atomic). Any failure, including the request being dropped mid-way, aborts
//! the multipart upload or deletes the temporary object. Operators should
//! still add a lifecycle rule that aborts incomplete multipart uploads and
//! expires `{prefix}uploads/` after a day, for the case where S3 itself was
//! unreachable when the cleanup ran.
//!
//! Every request is bounded by `blob.s3.timeout_ms` (connect and whole
//! operation, retries included); timeouts, connection failures, 5xx, throttling
//! and credential or bucket problems become [`BlobError::Unavailable`], which
//! the HTTP layer answers with 503.
//!
//! Credentials come from the standard AWS chain (environment, shared config,
//! web identity, ECS, EC2 instance metadata), never from the config file.

use super::{BlobError, BlobInfo, BlobStore, ByteStream};
use crate::config::S3Settings;
use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, SharedHttpClient,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::time::Duration;

const BACKEND: &str = "s3";

/// Multipart part size: the only upload bytes held in memory at a time.
/// S3 wants at least 5 MiB per part (but the last) and at most 10,000 parts,
/// so 8 MiB parts cover objects up to ~78 GiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// The largest object a single CopyObject can copy; uploads are capped here.
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// CompleteMultipartUpload and CopyObject take time proportional to the
/// object on real S3; they get `timeout_ms` plus one second per this many bytes.
const SLOW_OP_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    timeout: Duration,
}

impl S3BlobStore {
    /// The production constructor: credentials from the standard AWS chain.
    pub fn from_settings(s: &S3Settings) -> Result<Self, BlobError> {
        validate(s)?;
        let http = https_client();
        let region = Region::new(s.region.clone());
        let provider_config = ProviderConfig::default()
            .with_http_client(http.clone())
            .with_region(Some(region.clone()));
        // With the region given, building the chain never waits on anything;
        // only region discovery (which we skip) makes it async.
        let chain = DefaultCredentialsChain::builder()
            .region(region)
            .configure(provider_config)
            .build()
            .now_or_never()
            .ok_or_else(|| unavailable("the AWS credential chain could not be built"))?;
        Self::build(s, SharedCredentialsProvider::new(chain), http)
    }

    /// Fixed credentials, for tests and S3-compatible servers with static keys.
    pub fn with_static_credentials(
        s: &S3Settings,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self, BlobError> {
        validate(s)?;
        let creds = Credentials::new(access_key_id, secret_access_key, None, None, "firmcast");
        Self::build(s, SharedCredentialsProvider::new(creds), https_client())
    }

    fn build(
        s: &S3Settings,
        credentials: SharedCredentialsProvider,
        http: SharedHttpClient,
    ) -> Result<Self, BlobError> {
        let timeout = Duration::from_millis(s.timeout_ms);
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .force_path_style(s.force_path_style)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            )
            // Integrity comes from the signed payload hash and our own sha256;
            // the newer default (CRC trailers on every upload) is not
            // understood by many S3-compatible servers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !s.endpoint.is_empty() {
            config = config.endpoint_url(&s.endpoint);
        }
        Ok(S3BlobStore {
            client: Client::from_conf(config.build()),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
            timeout,
        })
    }

    /// Only a validated sha256 ever becomes a key.
    fn key_for(&self, sha256: &str) -> Option<String> {
        firmcast_signing::digest::is_sha256_hex(sha256)
            .then(|| format!("{}sha256/{}/{}", self.prefix, &sha256[..2], sha256))
    }

    /// A time budget for operations whose duration grows with the object.
    fn slow_op_timeout(&self, size: u64) -> aws_sdk_s3::config::Builder {
        let t = self.timeout + Duration::from_secs(size / SLOW_OP_BYTES_PER_SEC);
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.timeout)
                .operation_timeout(t)
                .build(),
        )
    }

    /// A URL that downloads the blob without credentials until `expiry`
    /// (for `blob.delivery = "redirect"`). It does not check that the blob exists.
    pub async fn presign_get(&self, sha256: &str, expiry: Duration) -> Result<String, BlobError> {
        let key = self.key_for(sha256).ok_or_else(|| not_found(sha256))?;
        let presigning = PresigningConfig::expires_in(expiry)
            .map_err(|e| BlobError::Io(format!("bad presign expiry: {e}")))?;
        // Presigning makes no request, but resolving credentials may (IMDS, STS).
        let req = tokio::time::timeout(
            self.timeout,
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .presigned(presigning),
        )
        .await
        .map_err(|_| unavailable("timed out resolving credentials to presign a URL"))?
        .map_err(|e| sdk_error("presign GetObject", e))?;
        Ok(req.uri().to_owned())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk_error("HeadObject", e)),
        }
    }

    /// Reads `body` into parts and uploads them; see [`BlobStore::put`].
    async fn put_inner(
        &self,
        body: &mut ByteStream<'_>,
        max: u64,
        pending: &mut Pending,
    ) -> Result<BlobInfo, BlobError> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = BytesMut::new();
        let mut parts: Vec<CompletedPart> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max {
                return Err(BlobError::TooLarge { limit: max });
            }
            hasher.update(&chunk);
            buf.extend_from_slice(&chunk);
            while buf.len() >= PART_SIZE {
                let part = buf.split_to(PART_SIZE).freeze();
                self.upload_part(part, &mut parts, pending).await?;
            }
        }
        if size == 0 {
            return Err(BlobError::Empty);
        }
        let sha256 = hex::encode(hasher.finalize());
        let key = self.key_for(&sha256).expect("a sha256 digest is valid hex");

        if parts.is_empty() {
            // Small body, all in memory: one atomic PutObject to the final key
            // (an existing blob holds the same bytes; writing it again marks
            // it stored now, for the sweep of unpublished uploads).
            {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .content_type("application/octet-stream")
                    .body(SdkByteStream::from(buf.freeze()))
                    .send()
                    .await
                    .map_err(|e| sdk_error("PutObject", e))?;
            }
            return Ok(BlobInfo { sha256, size });
        }

        if !buf.is_empty() {
            let last = buf.split().freeze();
            self.upload_part(last, &mut parts, pending).await?;
        }
        let upload_id = pending
            .upload_id
            .clone()
            .expect("parts were uploaded, so an upload exists");
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&pending.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .config_override(self.slow_op_timeout(size))
            .send()
            .await
            .map_err(|e| sdk_error("CompleteMultipartUpload", e))?;
        pending.upload_id = None;
        pending.temp_object = true;

        // Content-addressed: an existing blob holds the same bytes; copying
        // again marks it stored now, for the sweep of unpublished uploads.
        {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(&key)
                .copy_source(copy_source(&self.bucket, &pending.key))
                .customize()
                .config_override(self.slow_op_timeout(size))
                .send()
                .await
                .map_err(|e| sdk_error("CopyObject", e))?;
        }
        // The blob is stored; a failed delete of the temporary object is not
        // the uploader's problem (it is logged and left to the lifecycle rule).
        pending.clean().await;
        Ok(BlobInfo { sha256, size })
    }

    async fn upload_part(
        &self,
        part: Bytes,
        parts: &mut Vec<CompletedPart>,
        pending: &mut Pending,
    ) -> Result<(), BlobError> {
        let upload_id = match &pending.upload_id {
            Some(id) => id.clone(),
            None => {
                let out = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&pending.key)
                    .content_type("application/octet-stream")
                    .send()
                    .await
                    .map_err(|e| sdk_error("CreateMultipartUpload", e))?;
                let id = out
                    .upload_id()
                    .ok_or_else(|| unavailable("CreateMultipartUpload returned no upload id"))?
                    .to_owned();
                pending.upload_id = Some(id.clone());
                id
            }
        };
        let number = i32::try_from(parts.len() + 1).expect("at most 10,000 parts");
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&pending.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(SdkByteStream::from(part))
            .send()
            .await
            .map_err(|e| sdk_error("UploadPart", e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn presigned_url(
        &self,
        sha256: &str,
        expiry: Duration,
    ) -> Result<Option<String>, BlobError> {
        self.presign_get(sha256, expiry).await.map(Some)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                // HeadBucket has no body, so a missing bucket is only a 404.
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) {
                    unavailable(format!("bucket {:?} does not exist", self.bucket))
                } else {
                    sdk_error("HeadBucket", e)
                }
            })
    }

    async fn put(&self, mut body: ByteStream<'_>, max: u64) -> Result<BlobInfo, BlobError> {
        let max = max.min(MAX_OBJECT_BYTES);
        let mut pending = Pending {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: format!("{}uploads/{:032x}", self.prefix, rand::random::<u128>()),
            upload_id: None,
            temp_object: false,
        };
        let result = self.put_inner(&mut body, max, &mut pending).await;
        if result.is_err() {
            pending.clean().await;
        }
        result
    }

    async fn stat(&self, sha256: &str) -> Result<Option<u64>, BlobError> {
        match self.key_for(sha256) {
            Some(key) => self.head(&key).await,
            None => Ok(None),
        }
    }

    async fn get(&self, sha256: &str, range: Range<u64>) -> Result<ByteStream<'static>, BlobError> {
        let key = self.key_for(sha256).ok_or_else(|| not_found(sha256))?;
        if range.start >= range.end {
            // S3 has no empty byte range; answer from a HeadObject.
            return match self.head(&key).await? {
                Some(_) => Ok(Box::pin(futures_util::stream::empty())),
                None => Err(not_found(sha256)),
            };
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    not_found(sha256)
                } else {
                    sdk_error("GetObject", e)
                }
            })?;
        // A server that ignored the range would send the wrong bytes.
        let want = range.end - range.start;
        if out.content_length() != Some(want as i64) {
            return Err(BlobError::Io(format!(
                "GetObject returned {:?} bytes for a range of {want}",
                out.content_length()
            )));
        }
        Ok(into_stream(out.body, self.timeout))
    }

    async fn list(&self) -> Result<Vec<(String, DateTime<Utc>)>, BlobError> {
        let prefix = format!("{}sha256/", self.prefix);
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ListObjectsV2", e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let name = key.rsplit('/').next().unwrap_or("");
                if !firmcast_signing::digest::is_sha256_hex(name) {
                    continue;
                }
                let stored = object
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_else(Utc::now);
                out.push((name.to_owned(), stored));
            }
        }
        Ok(out)
    }

    async fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        let key = self.key_for(sha256).ok_or_else(|| not_found(sha256))?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error("DeleteObject", e))
    }
}

/// What an unfinished upload has left in the bucket. Cleaned explicitly on
/// errors; if the upload future is dropped instead (the client went away),
/// `Drop` finishes the job in a background task.
struct Pending {
    client: Client,
    bucket: String,
    /// The temporary key `{prefix}uploads/<random>`.
    key: String,
    /// An open multipart upload to `key`.
    upload_id: Option<String>,
    /// A completed object at `key`.
    temp_object: bool,
}

impl Pending {
    fn is_clean(&self) -> bool {
        self.upload_id.is_none() && !self.temp_object
    }

    async fn clean(&mut self) {
        if let Some(id) = self.upload_id.take() {
            let r = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&id)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(key = %self.key, upload_id = %id, error = %DisplayErrorContext(&e),
                    "could not abort a failed multipart upload; a bucket lifecycle rule will");
            }
        }
        if std::mem::take(&mut self.temp_object) {
            let r = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(key = %self.key, error = %DisplayErrorContext(&e),
                    "could not delete a temporary upload object; a bucket lifecycle rule will");
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.is_clean() {
            return;
        }
        let mut rest = Pending {
            client: self.client.clone(),
            bucket: std::mem::take(&mut self.bucket),
            key: std::mem::take(&mut self.key),
            upload_id: self.upload_id.take(),
            temp_object: std::mem::take(&mut self.temp_object),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { rest.clean().await });
            }
            Err(_) => {
                tracing::warn!(key = %rest.key, "an interrupted upload was left for the bucket lifecycle rule");
                rest.upload_id = None;
                rest.temp_object = false;
            }
        }
    }
}

fn validate(s: &S3Settings) -> Result<(), BlobError> {
    if s.bucket.is_empty() {
        return Err(unavailable("blob.s3.bucket is not set"));
    }
    if s.region.is_empty() {
        return Err(unavailable("blob.s3.region is not set (e.g. us-east-1)"));
    }
    let scheme_ok = s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://");
    if !s.endpoint.is_empty() && !scheme_ok {
        return Err(unavailable(format!(
            "blob.s3.endpoint {:?} must start with http:// or https://",
            s.endpoint
        )));
    }
    if s.timeout_ms == 0 {
        return Err(unavailable("blob.s3.timeout_ms must be more than 0"));
    }
    Ok(())
}

/// HTTPS (and plain HTTP, for local S3-compatible servers) with rustls on
/// ring and the platform's trusted roots.
fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// `bucket/key` for CopyObject, the key percent-encoded but for its slashes.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SDK's body as our stream, chunk by chunk; a stall longer than `idle`
/// ends it with an error instead of hanging the download.
fn into_stream(body: SdkByteStream, idle: Duration) -> ByteStream<'static> {
    Box::pin(futures_util::stream::unfold(
        Some(body),
        move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.try_next()).await {
                Ok(Ok(Some(bytes))) => Some((Ok(bytes), Some(body))),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the S3 download stalled",
                    )),
                    None,
                )),
            }
        },
    ))
}

fn not_found(sha256: &str) -> BlobError {
    BlobError::NotFound(sha256.chars().take(64).collect())
}

fn unavailable(reason: impl Into<String>) -> BlobError {
    BlobError::Unavailable {
        backend: BACKEND,
        reason: reason.into(),
    }
}

/// Transport trouble, timeouts, server errors, throttling and credential or
/// bucket problems are the store being unavailable (503, readiness fails);
/// anything else is a failed write.
fn sdk_error<E>(op: &str, e: SdkError<E, HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let reason = format!("{op}: {}", DisplayErrorContext(&e));
    let unavailable_service_error = match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status >= 500
                || matches!(status, 401 | 403 | 408 | 429)
                || matches!(
                    se.err().code(),
                    Some("NoSuchBucket" | "SlowDown" | "RequestTimeout" | "ExpiredToken")
                )
        }
        _ => true,
    };
    if unavailable_service_error {
        unavailable(reason)
    } else {
        BlobError::Io(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> S3Settings {
        S3Settings {
            bucket: "firmware".into(),
            endpoint: "http://127.0.0.1:9".into(),
            region: "us-east-1".into(),
            force_path_style: true,
            prefix: "fw/".into(),
            presign_expiry_secs: 300,
            timeout_ms: 1000,
        }
    }

    #[test]
    fn builds_from_settings_without_a_runtime_or_network() {
        // Guards the `now_or_never` above against an aws-config upgrade.
        let store = S3BlobStore::from_settings(&settings()).unwrap();
        assert_eq!(
            store.key_for(&"ab".repeat(32)).unwrap(),
            format!("fw/sha256/ab/{}", "ab".repeat(32))
        );
    }

    #[test]
    fn refuses_bad_settings() {
        for s in [
            S3Settings {
                bucket: String::new(),
                ..settings()
            },
            S3Settings {
                endpoint: "127.0.0.1:9000".into(),
                ..settings()
            },
            S3Settings {
                timeout_ms: 0,
                ..settings()
            },
            S3Settings {
                region: String::new(),
                ..settings()
            },
        ] {
            assert!(matches!(
                S3BlobStore::from_settings(&s),
                Err(BlobError::Unavailable { backend: "s3", .. })
            ));
        }
    }

    #[test]
    fn only_hex_sha256_becomes_a_key() {
        let store = S3BlobStore::with_static_credentials(&settings(), "k", "s").unwrap();
        for bad in [
            "",
            "../x",
            &"AB".repeat(32),
            &"ab".repeat(31),
            &"ab".repeat(33),
            &format!("{}/", "a".repeat(63)),
        ] {
            assert_eq!(store.key_for(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn copy_source_encodes_all_but_slashes() {
        assert_eq!(
            copy_source("b", "my fw/uploads/ab+c"),
            "b/my%20fw/uploads/ab%2Bc"
        );
    }
}
