//! A ready blocking transport (feature `transport`): drives the sans-I/O
//! sessions over ureq with rustls, and keeps downloads in a directory as
//! `<product>-<version>.part` (resumable) until verified, then
//! `<product>-<version>.bin`. For Rust apps, the CLI and tests; apps in other
//! languages use their own HTTP stack through the bindings.
//!
//! ureq because it is small, blocking (no async runtime for a CLI or a
//! test) and speaks rustls; the core does not depend on it.

use crate::http::{Method, Request, Response, MAX_JSON};
use crate::{Body, CheckItem, CheckOutcome, Client, Download, Error, Report, State, Update};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connecting should be quick; a server that takes longer is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// For each read of an answer; a stalled download resumes next time.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a download is doing, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes from an earlier attempt are kept; fetching from `at`.
    Resuming { at: u64, size: u64 },
    /// The server ignored the range: starting over.
    Restarted,
    /// `have` of `size` bytes are in.
    Progress { have: u64, size: u64 },
}

pub struct Transport {
    client: Client,
    agent: ureq::Agent,
}

impl Transport {
    pub fn new(client: Client) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The core follows redirects itself, so it sees every hop.
            .max_redirects(0)
            .user_agent(concat!("firmcast-client/", env!("CARGO_PKG_VERSION")))
            // Bytes must arrive as signed, never transparently decoded.
            .accept_encoding("identity")
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .build()
            .into();
        Transport { client, agent }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A whole check: keyset, batch, verification; the new state is in the outcome.
    pub fn check(&self, state: &State, items: Vec<CheckItem>) -> Result<CheckOutcome, Error> {
        let mut check = self.client.check(state, items)?;
        while let Some(req) = check.next_request() {
            check.receive(self.send(&req)?)?;
        }
        check.outcome()
    }

    /// Sends one request and reads an answer of at most [`MAX_JSON`] bytes.
    pub fn send(&self, req: &Request) -> Result<Response, Error> {
        let mut resp = self.call(req)?;
        let status = resp.status().as_u16();
        let headers = headers(&resp);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON as u64 + 1)
            .read_to_vec()
            .map_err(|e| self.unreachable(&e))?;
        Ok(Response::new(status, headers, body))
    }

    pub fn report(&self, report: &Report) -> Result<(), Error> {
        Report::receive(&self.send(&report.request(&self.client)?)?)
    }

    /// Downloads `update` into `dir`, resuming a `.part` file, and returns
    /// the verified `.bin` path. Refused bytes are deleted; an interrupted
    /// download keeps its `.part` for the next call.
    pub fn download_to(
        &self,
        update: &Update,
        dir: &Path,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<PathBuf, Error> {
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::Storage(format!("cannot {what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let name = format!("{}-{}", update.product, update.version);
        let part = dir.join(format!("{name}.part"));
        let done = dir.join(format!("{name}.bin"));
        if done.exists() {
            let mut dl = Download::new(update);
            if feed_file(&mut dl, &done).is_ok() && dl.finish().is_ok() {
                return Ok(done);
            }
            std::fs::remove_file(&done).map_err(|e| io("remove", &done, e))?;
        }
        let mut dl = Download::new(update);
        match std::fs::metadata(&part) {
            Ok(md) if md.len() <= update.size => {
                feed_file(&mut dl, &part).map_err(|e| io("read", &part, e))?;
                if dl.received() > 0 && dl.received() < update.size {
                    on_event(Event::Resuming {
                        at: dl.received(),
                        size: update.size,
                    });
                }
            }
            Ok(_) => std::fs::remove_file(&part).map_err(|e| io("remove", &part, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &part, e)),
        }
        let result = self
            .fetch(&mut dl, &part, on_event)
            .and_then(|()| dl.finish());
        match result {
            Ok(_) => {
                std::fs::rename(&part, &done).map_err(|e| io("rename", &part, e))?;
                Ok(done)
            }
            Err(e) => {
                if e.discard_download() {
                    let _ = std::fs::remove_file(&part);
                }
                Err(e)
            }
        }
    }

    fn fetch(
        &self,
        dl: &mut Download,
        part: &Path,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), Error> {
        let size = dl.size();
        while let Some(req) = dl.next_request() {
            let mut resp = self.call(&req)?;
            let head = dl.receive_head(resp.status().as_u16(), &headers(&resp))?;
            let restart = match head {
                Body::Skip => continue,
                Body::Restart => {
                    on_event(Event::Restarted);
                    true
                }
                Body::Append => false,
            };
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(!restart)
                .write(true)
                .truncate(restart)
                .open(part)
                .map_err(|e| Error::Storage(format!("cannot write {}: {e}", part.display())))?;
            let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // What arrived is on disk; receive_end says where it stopped.
                    Err(_) => break,
                };
                dl.receive_chunk(&buf[..n])?;
                file.write_all(&buf[..n])
                    .map_err(|e| Error::Storage(format!("cannot write {}: {e}", part.display())))?;
                on_event(Event::Progress {
                    have: dl.received(),
                    size,
                });
            }
            file.sync_all()
                .map_err(|e| Error::Storage(format!("cannot write {}: {e}", part.display())))?;
            dl.receive_end()?;
        }
        Ok(())
    }

    fn call(&self, req: &Request) -> Result<ureq::http::Response<ureq::Body>, Error> {
        let result = match req.method {
            Method::Get => {
                let mut b = self.agent.get(&req.url);
                for (k, v) in &req.headers {
                    b = b.header(k, v);
                }
                b.call()
            }
            Method::Post => {
                let mut b = self.agent.post(&req.url);
                for (k, v) in &req.headers {
                    b = b.header(k, v);
                }
                b.send(&req.body[..])
            }
        };
        result.map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, e: &ureq::Error) -> Error {
        Error::Unreachable(format!(
            "cannot reach {} ({e}); check the network and retry later",
            self.client.server()
        ))
    }
}

fn headers(resp: &ureq::http::Response<ureq::Body>) -> Vec<(String, String)> {
    resp.headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// Feeds a file's bytes to `dl` as already downloaded.
fn feed_file(dl: &mut Download, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        dl.resume(&buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
}
