//! How a client comes to trust a keyset: from the pinned root on first
//! contact, then one rotation at a time, asking `/v1/keys/{version}` for any
//! version it missed so every link is signed by the root before it. A
//! state machine: [`Keychain::request`] says what to fetch next,
//! [`Keychain::receive`] takes the answer.

use crate::http::{status_error, BaseUrl, Request, Response, MAX_JSON};
use crate::Error;
use chrono::{DateTime, Utc};
use firmcast_signing::{Envelope, Keyset, Role, VerifiedKeyset};

/// A server claiming a keyset this far ahead is not followed: rotations are
/// rare, and a hostile server must not keep the client fetching forever.
pub const MAX_WALK: u64 = 1000;

pub(crate) struct Keychain {
    pinned: Role,
    now: DateTime<Utc>,
    step: Step,
}

enum Step {
    /// Ask `/v1/keys`.
    Current {
        held: Option<VerifiedKeyset>,
    },
    /// First contact with a keyset the pinned root did not sign: look for
    /// the oldest kept version it did sign.
    History {
        at: u64,
        served: Envelope,
        target: u64,
    },
    /// Follow rotations from `from` up to the served keyset.
    Walk {
        from: VerifiedKeyset,
        served: Envelope,
        target: u64,
    },
    Done(VerifiedKeyset),
    Failed,
}

/// What one answer led to.
pub(crate) enum Progress {
    More,
    Trusted(Box<VerifiedKeyset>),
}

impl Keychain {
    pub fn new(pinned: Role, held: Option<VerifiedKeyset>, now: DateTime<Utc>) -> Self {
        Keychain {
            pinned,
            now,
            step: Step::Current { held },
        }
    }

    pub fn request(&self, base: &BaseUrl) -> Option<Request> {
        match &self.step {
            Step::Current { .. } => Some(Request::get(base.join("v1/keys"))),
            Step::History { at, .. } => Some(Request::get(base.join(&format!("v1/keys/{at}")))),
            Step::Walk { from, .. } => Some(Request::get(
                base.join(&format!("v1/keys/{}", from.version() + 1)),
            )),
            Step::Done(_) | Step::Failed => None,
        }
    }

    pub fn receive(&mut self, resp: &Response) -> Result<Progress, Error> {
        let step = std::mem::replace(&mut self.step, Step::Failed);
        let next = match step {
            Step::Current { held } => {
                let served = envelope(resp, None)?.expect("only numbered versions may be 404");
                self.current(held, served)?
            }
            Step::History { at, served, target } => {
                let anchored = envelope(resp, Some(at))?
                    .and_then(|env| VerifiedKeyset::anchor(env, &self.pinned).ok());
                match anchored {
                    Some(from) => self.walk(from, served, target)?,
                    None if at + 1 < target => Step::History {
                        at: at + 1,
                        served,
                        target,
                    },
                    None => return Err(Error::UntrustedKeyset(format!(
                        "neither the server's keyset (version {target}) nor any earlier version it keeps is signed by the pinned root; \
                         check the pinned root key, or this server is not the one the app trusts"
                    ))),
                }
            }
            Step::Walk {
                from,
                served,
                target,
            } => {
                let version = from.version() + 1;
                let env = envelope(resp, Some(version))?.ok_or_else(|| {
                    Error::UntrustedKeyset(format!(
                        "this client holds keyset version {} and the server offers version {target}, \
                         but it does not keep version {version} to follow the rotation; refusing",
                        from.version()
                    ))
                })?;
                let next = follow(&from, env)?;
                self.walk(next, served, target)?
            }
            Step::Done(_) | Step::Failed => {
                return Err(Error::Usage(
                    "the keyset is already settled; no answer was asked for".into(),
                ))
            }
        };
        self.step = next;
        Ok(match &self.step {
            Step::Done(k) => Progress::Trusted(Box::new(k.clone())),
            _ => Progress::More,
        })
    }

    /// `/v1/keys` arrived: trust it at once, or plan the walk to it.
    fn current(&self, held: Option<VerifiedKeyset>, served: Envelope) -> Result<Step, Error> {
        // The version is read before verification only to plan the walk and name refusals.
        let target = Keyset::parse(&served.payload)
            .map_err(|e| crate::error::signing("the server's keyset", e))?
            .version;
        match held {
            Some(held) => {
                let have = held.version();
                if served.payload == held.envelope.payload {
                    if held.keyset.expires <= self.now {
                        return Err(Error::KeysetExpired(format!(
                            "keyset version {have} expired at {} and the server offers no newer one; retry later",
                            held.keyset.expires.to_rfc3339()
                        )));
                    }
                    return Ok(Step::Done(held));
                }
                if target < have {
                    return Err(Error::UntrustedKeyset(format!("the server's keyset version {target} is older than version {have} held in the saved state (rollback); refusing")));
                }
                if target == have {
                    return Err(Error::UntrustedKeyset(format!("the server's keyset version {target} differs from the version {target} held in the saved state; refusing")));
                }
                self.walk(held, served, target)
            }
            None => match VerifiedKeyset::anchor(served.clone(), &self.pinned) {
                Ok(first) => {
                    self.ensure_current(&first)?;
                    Ok(Step::Done(first))
                }
                Err(_) if target > MAX_WALK => Err(Error::UntrustedKeyset(format!(
                    "the server's keyset version {target} is not signed by the pinned root and is more than {MAX_WALK} versions past version 1; refusing"
                ))),
                // Signed by a later root: walk up from the oldest version the pinned root signed.
                Err(_) if target > 1 => Ok(Step::History {
                    at: 1,
                    served,
                    target,
                }),
                Err(e) => Err(Error::UntrustedKeyset(format!(
                    "the server's keyset does not verify against the pinned root: {e}"
                ))),
            },
        }
    }

    /// From `from` towards `target`: done when there, else the next link.
    fn walk(&self, from: VerifiedKeyset, served: Envelope, target: u64) -> Result<Step, Error> {
        if target.saturating_sub(from.version()) > MAX_WALK {
            return Err(Error::UntrustedKeyset(format!(
                "the server's keyset version {target} is more than {MAX_WALK} versions past version {}; refusing",
                from.version()
            )));
        }
        if from.version() + 1 < target {
            return Ok(Step::Walk {
                from,
                served,
                target,
            });
        }
        let last = if from.version() == target {
            from
        } else {
            follow(&from, served)?
        };
        self.ensure_current(&last)?;
        Ok(Step::Done(last))
    }

    fn ensure_current(&self, k: &VerifiedKeyset) -> Result<(), Error> {
        k.ensure_current(self.now).map_err(|e| {
            Error::KeysetExpired(format!(
                "the server's newest keyset: {e}; retry later (the app cannot fix this)"
            ))
        })
    }
}

fn follow(from: &VerifiedKeyset, env: Envelope) -> Result<VerifiedKeyset, Error> {
    let version = from.version() + 1;
    from.follow(env).map_err(|e| {
        Error::UntrustedKeyset(format!(
            "the server's keyset version {version} does not verify as the successor of version {}: {e}",
            from.version()
        ))
    })
}

/// The envelope of a keys answer; `None` for a 404 of a numbered version
/// (the server does not keep it).
fn envelope(resp: &Response, version: Option<u64>) -> Result<Option<Envelope>, Error> {
    if version.is_some() && resp.status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&resp.status) {
        return Err(status_error(resp.status, &resp.headers, &resp.body));
    }
    let what = match version {
        None => "keyset".to_owned(),
        Some(v) => format!("keyset version {v}"),
    };
    if resp.body.len() > MAX_JSON {
        return Err(Error::Malformed(format!(
            "the server's {what} is larger than {MAX_JSON} bytes; retry later"
        )));
    }
    let env = Envelope::parse(&resp.body)
        .map_err(|e| Error::Malformed(format!("the server's {what}: {e}; retry later")))?;
    if let Some(v) = version {
        let found = Keyset::parse(&env.payload)
            .map_err(|e| Error::Malformed(format!("the server's {what}: {e}; retry later")))?
            .version;
        if found != v {
            return Err(Error::UntrustedKeyset(format!(
                "asked for keyset version {v}, the server sent version {found}; refusing"
            )));
        }
    }
    Ok(Some(env))
}
