//! Downloading a verified [`Update`] as a sans-I/O session: the app sends the
//! requests and hands over the body in chunks; the core hashes as it goes,
//! never accepts a byte past the signed size, resumes with `Range`, follows
//! redirects, and at the end compares size and sha256 with the signature.
//!
//! The app writes a chunk to its file only after [`Download::receive_chunk`]
//! accepted it, truncates when [`Body::Restart`] says so, and deletes the
//! file when an error's [`Error::discard_download`] is true.

use crate::http::{content_range, header, redirect_target, status_error, Method, Request};
use crate::{Error, Update};
use sha2::{Digest, Sha256};

/// Redirects followed per request (an S3 presigned URL is one).
const MAX_REDIRECTS: u32 = 5;

/// What to do with the body of the answer whose head was just handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Append each accepted chunk to the file.
    Append,
    /// The server starts from byte 0: empty the file, then append.
    Restart,
    /// A redirect: drop the body and send [`Download::next_request`].
    Skip,
}

/// The artifact, verified: its bytes are the signed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub sha256: String,
    pub size: u64,
}

pub struct Download {
    sha256: String,
    size: u64,
    url: String,
    redirects: u32,
    hasher: Sha256,
    have: u64,
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before any request: existing bytes may still be fed.
    Idle,
    /// A request is out; its head comes next.
    Sent,
    /// Reading a body.
    Body,
    Failed,
}

impl Download {
    pub fn new(update: &Update) -> Self {
        Download {
            sha256: update.sha256.clone(),
            size: update.size,
            url: update.url.clone(),
            redirects: 0,
            hasher: Sha256::new(),
            have: 0,
            phase: Phase::Idle,
        }
    }

    /// Bytes accepted so far (the length the app's file should have).
    pub fn received(&self) -> u64 {
        self.have
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Feeds bytes already on disk from an earlier, interrupted attempt, in
    /// order, before the first request; the download then resumes after them.
    pub fn resume(&mut self, existing: &[u8]) -> Result<(), Error> {
        if self.phase != Phase::Idle {
            return Err(Error::Usage(
                "resume() comes before the first request".into(),
            ));
        }
        if self.have + existing.len() as u64 > self.size {
            return Err(self.fail(Error::TooLarge(format!(
                "the partial file holds more than the signed {} bytes; delete it and start over",
                self.size
            ))));
        }
        self.accept(existing);
        Ok(())
    }

    /// The next request, or `None` when every signed byte is in (call
    /// [`Download::finish`]) or the download failed.
    pub fn next_request(&mut self) -> Option<Request> {
        if self.have >= self.size || !matches!(self.phase, Phase::Idle | Phase::Sent) {
            return None;
        }
        let mut headers = Vec::new();
        if self.have > 0 {
            headers.push(("Range".to_owned(), format!("bytes={}-", self.have)));
        }
        self.phase = Phase::Sent;
        Some(Request {
            method: Method::Get,
            url: self.url.clone(),
            headers,
            body: Vec::new(),
        })
    }

    /// The status and headers of the answer to the last request.
    pub fn receive_head(
        &mut self,
        status: u16,
        headers: &[(String, String)],
    ) -> Result<Body, Error> {
        if self.phase != Phase::Sent {
            return Err(Error::Usage(
                "receive_head() answers a request from next_request()".into(),
            ));
        }
        let (have, size) = (self.have, self.size);
        let body = match status {
            206 => match header(headers, "content-range").and_then(content_range) {
                Some((start, _)) if start != have => {
                    return Err(self.fail(Error::Mismatch(format!(
                        "the server resumed at byte {start}, not {have}; delete the partial file and start over"
                    ))))
                }
                Some((_, Some(total))) if total != size => {
                    return Err(self.fail(Error::Mismatch(format!(
                        "the server's artifact has {total} bytes, the release signed {size}; delete the partial file"
                    ))))
                }
                Some(_) => Body::Append,
                None => {
                    return Err(self.fail(Error::Mismatch(
                        "the server's partial answer has no usable Content-Range; delete the partial file and start over".into(),
                    )))
                }
            },
            200 if have > 0 => {
                // The server ignored the range: start over from byte 0.
                self.hasher = Sha256::new();
                self.have = 0;
                Body::Restart
            }
            200 => Body::Append,
            301 | 302 | 303 | 307 | 308 => {
                let target = header(headers, "location").and_then(|l| redirect_target(&self.url, l));
                match target {
                    Some(url) if self.redirects < MAX_REDIRECTS => {
                        self.redirects += 1;
                        self.url = url;
                        return Ok(Body::Skip);
                    }
                    _ => {
                        return Err(self.fail(Error::Malformed(format!(
                            "the download redirects more than {MAX_REDIRECTS} times or to an unusable place; retry later"
                        ))))
                    }
                }
            }
            416 => {
                return Err(self.fail(Error::Mismatch(format!(
                    "the server has no bytes from {have} on, but the release signed {size}; delete the partial file"
                ))))
            }
            s if s >= 400 => return Err(self.fail(status_error(s, headers, b"download failed"))),
            s => {
                return Err(self.fail(Error::Malformed(format!(
                    "unexpected answer {s} to the download; retry later"
                ))))
            }
        };
        let remaining = size - self.have;
        if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            if len > remaining {
                return Err(self.fail(Error::TooLarge(format!(
                    "the server would send {len} bytes from byte {}, more than the signed {size} bytes",
                    self.have
                ))));
            }
        }
        self.phase = Phase::Body;
        Ok(body)
    }

    /// One chunk of the body. `Ok`: write it. `TooLarge`: the server sent
    /// more than the signed size; delete what was written.
    pub fn receive_chunk(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.phase != Phase::Body {
            return Err(Error::Usage(
                "receive_chunk() comes after receive_head() answered Append or Restart".into(),
            ));
        }
        if self.have + chunk.len() as u64 > self.size {
            return Err(self.fail(Error::TooLarge(format!(
                "the server sent more than the signed {} bytes; delete the partial file",
                self.size
            ))));
        }
        self.accept(chunk);
        Ok(())
    }

    /// The body ended (or the connection broke). Short of the signed size
    /// this is `Interrupted`: keep the file and resume later.
    pub fn receive_end(&mut self) -> Result<(), Error> {
        match self.phase {
            Phase::Body => {}
            // A redirect's body, or none.
            Phase::Sent | Phase::Idle => return Ok(()),
            Phase::Failed => {
                return Err(Error::Usage(
                    "the download already failed; start a new one".into(),
                ))
            }
        }
        self.phase = Phase::Idle;
        if self.have < self.size {
            self.phase = Phase::Failed;
            return Err(Error::Interrupted(format!(
                "the download stopped at byte {} of {}; keep the file and resume later",
                self.have, self.size
            )));
        }
        Ok(())
    }

    /// Once every signed byte is in: the sha256 must be the signed one.
    /// `DigestMismatch` means delete the file.
    pub fn finish(self) -> Result<Verified, Error> {
        if self.phase == Phase::Failed {
            return Err(Error::Usage("the download failed; start a new one".into()));
        }
        if self.have != self.size {
            return Err(Error::Interrupted(format!(
                "the download has {} of {} bytes; keep the file and resume later",
                self.have, self.size
            )));
        }
        let sha256 = hex::encode(self.hasher.finalize());
        if sha256 != self.sha256 {
            return Err(Error::DigestMismatch(format!(
                "the download does not match the signed release: sha256 {sha256} and {} bytes, signed {} and {} bytes; delete it",
                self.have, self.sha256, self.size
            )));
        }
        Ok(Verified {
            sha256,
            size: self.size,
        })
    }

    fn accept(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.have += bytes.len() as u64;
    }

    fn fail(&mut self, e: Error) -> Error {
        self.phase = Phase::Failed;
        e
    }
}
