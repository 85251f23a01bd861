//! firmcast-client-ffi: the UniFFI face of `firmcast-client` for Kotlin,
//! Swift and Python. A thin layer: records and enums mirror the core's
//! types, objects wrap its sessions behind a mutex (foreign code may call
//! from any thread), and every error is one flat [`ClientError`] whose
//! variant tells the app what to do. No rule is decided here.

use firmcast_client as core;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod convert;
mod types;

pub use types::*;

uniffi::setup_scaffolding!();

/// The update server an app trusts.
#[derive(uniffi::Object)]
pub struct FirmcastClient {
    inner: core::Client,
}

#[uniffi::export]
impl FirmcastClient {
    /// `root_key`: the pinned root public key, SPKI PEM or base64 of the
    /// raw 32 bytes.
    #[uniffi::constructor]
    pub fn new(server: String, root_key: String) -> Result<Arc<Self>, ClientError> {
        Ok(Arc::new(FirmcastClient {
            inner: core::Client::new(&server, &root_key)?,
        }))
    }

    /// Starts one check of the app and its paired devices. `state` is the
    /// JSON from the last [`CheckResult::state`] ("" on first start).
    pub fn check(
        &self,
        items: Vec<CheckItem>,
        state: String,
    ) -> Result<Arc<CheckSession>, ClientError> {
        let state = core::State::from_json(&state)?;
        let items = items.into_iter().map(Into::into).collect();
        let check = self.inner.check(&state, items)?;
        Ok(Arc::new(CheckSession {
            inner: Mutex::new(Some(check)),
        }))
    }

    /// Starts downloading a verified update.
    pub fn download(&self, update: Update) -> Arc<DownloadSession> {
        Arc::new(DownloadSession {
            inner: Mutex::new(DownloadState {
                download: Some(core::Download::new(&update.clone().into())),
                update,
                failure: None,
            }),
        })
    }

    /// The request that sends `report`; hand its answer to [`report_receive`].
    pub fn report_request(&self, report: Report) -> Result<HttpRequest, ClientError> {
        Ok(core::Report::from(report).request(&self.inner)?.into())
    }
}

/// Whether the server took a report (202).
#[uniffi::export]
pub fn report_receive(response: HttpResponse) -> Result<(), ClientError> {
    Ok(core::Report::receive(&response.into())?)
}

/// The report for an update installed on the device (or in the app).
#[uniffi::export]
pub fn report_installed(update: Update) -> Report {
    core::Report::new(&update.into(), core::Outcome::Installed).into()
}

/// The report for an install that failed after the download (transfer to
/// the device, install, boot); `code` is 1 to 32 of `A-Za-z0-9_.-`.
#[uniffi::export]
pub fn report_failed(update: Update, stage: Stage, code: String) -> Report {
    let outcome = core::Outcome::Failed {
        stage: stage.into(),
        code,
    };
    core::Report::new(&update.into(), outcome).into()
}

/// One check in progress: send `next_request()` with the app's HTTP stack,
/// hand the answer to `receive()`, until `next_request()` is null; then
/// `finish()`.
#[derive(uniffi::Object)]
pub struct CheckSession {
    inner: Mutex<Option<core::Check>>,
}

#[uniffi::export]
impl CheckSession {
    pub fn next_request(&self) -> Option<HttpRequest> {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref()?.next_request().map(Into::into)
    }

    pub fn receive(&self, response: HttpResponse) -> Result<(), ClientError> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let check = guard.as_mut().ok_or_else(finished)?;
        Ok(check.receive(response.into())?)
    }

    /// The verified results and the new state to persist (before acting on
    /// the results). Ends the session.
    pub fn finish(&self) -> Result<CheckResult, ClientError> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let check = guard.take().ok_or_else(finished)?;
        Ok(check.outcome()?.into())
    }
}

fn finished() -> ClientError {
    ClientError::Usage {
        message: "this session is finished; start a new one".into(),
    }
}

/// One download in progress. Feed bytes kept from an earlier attempt with
/// `resume()`, then loop: `next_request()`, `receive_head()` (truncate the
/// file on `RESTART`, skip the body on `SKIP`), `receive_chunk()` for each
/// chunk before writing it, `receive_end()`; then `finish()`.
#[derive(uniffi::Object)]
pub struct DownloadSession {
    inner: Mutex<DownloadState>,
}

struct DownloadState {
    download: Option<core::Download>,
    update: Update,
    /// The error that ended the download, for `failure_report()`.
    failure: Option<core::Error>,
}

impl DownloadState {
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut core::Download) -> Result<T, core::Error>,
    ) -> Result<T, ClientError> {
        let dl = self.download.as_mut().ok_or_else(finished)?;
        f(dl).map_err(|e| {
            if !matches!(e, core::Error::Usage(_)) {
                self.failure = Some(e.clone());
            }
            e.into()
        })
    }
}

#[uniffi::export]
impl DownloadSession {
    pub fn resume(&self, existing: Vec<u8>) -> Result<(), ClientError> {
        self.lock().run(|dl| dl.resume(&existing))
    }

    pub fn next_request(&self) -> Option<HttpRequest> {
        let mut s = self.lock();
        s.download.as_mut()?.next_request().map(Into::into)
    }

    pub fn receive_head(
        &self,
        status: u16,
        headers: HashMap<String, String>,
    ) -> Result<BodyAction, ClientError> {
        let headers: Vec<(String, String)> = headers.into_iter().collect();
        let body = self.lock().run(|dl| dl.receive_head(status, &headers))?;
        Ok(body.into())
    }

    /// Err: do not write the chunk; `TooLarge` means delete the file.
    pub fn receive_chunk(&self, chunk: Vec<u8>) -> Result<(), ClientError> {
        self.lock().run(|dl| dl.receive_chunk(&chunk))
    }

    pub fn receive_end(&self) -> Result<(), ClientError> {
        self.lock().run(|dl| dl.receive_end())
    }

    /// Bytes accepted so far: the length the file should have.
    pub fn received(&self) -> u64 {
        self.lock().download.as_ref().map_or(0, |d| d.received())
    }

    /// Checks size and sha256 against the signed release. Ends the session.
    pub fn finish(&self) -> Result<VerifiedArtifact, ClientError> {
        let mut s = self.lock();
        let dl = s.download.take().ok_or_else(finished)?;
        dl.finish().map(Into::into).map_err(|e| {
            s.failure = Some(e.clone());
            e.into()
        })
    }

    /// The `failed` report (stage download or verify, with a code) for the
    /// error that ended this download; null while none did, or when the
    /// release is not at fault (an interrupted or busy connection).
    pub fn failure_report(&self) -> Option<Report> {
        let s = self.lock();
        let e = s.failure.as_ref()?;
        let outcome = core::Outcome::for_download_error(e)?;
        Some(core::Report::new(&s.update.clone().into(), outcome).into())
    }
}

impl DownloadSession {
    fn lock(&self) -> std::sync::MutexGuard<'_, DownloadState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
