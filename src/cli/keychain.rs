//! How `check` comes to trust a keyset: from the pinned root on first
//! contact, then one rotation at a time, fetching any versions it missed from
//! `/v1/keys/{version}` so every link is signed by the root before it.

use super::client::{read_limited, Api, MAX_JSON};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use firmcast_signing::{Envelope, Keyset, Role, VerifiedKeyset};
use reqwest::{Method, StatusCode};

/// A server claiming a keyset this far ahead is not followed: rotations are
/// rare, and a hostile server must not keep the client fetching forever.
const MAX_WALK: u64 = 1000;

pub fn trusted_keyset(
    api: &Api,
    pinned: &Role,
    held: Option<VerifiedKeyset>,
    now: DateTime<Utc>,
) -> Result<VerifiedKeyset> {
    let served = fetch(api, None)?.context("the server has no keyset at /v1/keys")?;
    // The version is read before verification only to plan the walk and name refusals.
    let target = Keyset::parse(&served.payload)
        .context("the server's keyset")?
        .version;
    let start = match held {
        Some(held) => {
            let have = held.version();
            if served.payload == held.envelope.payload {
                if held.keyset.expires <= now {
                    bail!(
                        "keyset version {have} expired at {} and the server offers no newer one; retry later",
                        held.keyset.expires.to_rfc3339()
                    );
                }
                return Ok(held);
            }
            if target < have {
                bail!("the server's keyset version {target} is older than version {have} held in the state file (rollback); refusing");
            }
            if target == have {
                bail!("the server's keyset version {target} differs from the version {target} held in the state file; refusing");
            }
            held
        }
        None => match VerifiedKeyset::anchor(served.clone(), pinned) {
            Ok(first) => {
                first
                    .ensure_current(now)
                    .context("the server's keyset does not verify against the pinned root")?;
                return Ok(first);
            }
            Err(_) if target > MAX_WALK => bail!(
                "the server's keyset version {target} is not signed by the pinned root and is more than {MAX_WALK} versions past version 1; refusing"
            ),
            // Signed by a later root: walk up from the oldest version the pinned root signed.
            Err(_) if target > 1 => anchor_in_history(api, pinned, target)?,
            Err(e) => {
                return Err(anyhow!(e))
                    .context("the server's keyset does not verify against the pinned root")
            }
        },
    };
    if target - start.version() > MAX_WALK {
        bail!(
            "the server's keyset version {target} is more than {MAX_WALK} versions past version {}; refusing",
            start.version()
        );
    }
    let mut keyset = start;
    for version in keyset.version() + 1..=target {
        let env = if version == target {
            served.clone()
        } else {
            fetch(api, Some(version))?.with_context(|| {
                format!(
                    "this client holds keyset version {} and the server offers version {target}, \
                     but it does not keep version {version} to follow the rotation; refusing",
                    keyset.version()
                )
            })?
        };
        keyset = keyset.follow(env).with_context(|| {
            format!(
                "the server's keyset version {version} does not verify as the successor of version {}",
                version - 1
            )
        })?;
    }
    keyset
        .ensure_current(now)
        .context("the server's newest keyset")?;
    Ok(keyset)
}

/// The oldest kept keyset signed by the pinned root.
fn anchor_in_history(api: &Api, pinned: &Role, target: u64) -> Result<VerifiedKeyset> {
    for version in 1..target {
        let Some(env) = fetch(api, Some(version))? else {
            continue;
        };
        if let Ok(k) = VerifiedKeyset::anchor(env, pinned) {
            return Ok(k);
        }
    }
    bail!(
        "neither the server's keyset (version {target}) nor any earlier version it keeps is signed by the pinned root; \
         check --root, or this server is not the one the app trusts"
    )
}

/// `/v1/keys` or `/v1/keys/{version}`; `None` when the server does not keep it.
fn fetch(api: &Api, version: Option<u64>) -> Result<Option<Envelope>> {
    let url = match version {
        None => api.url(&["v1", "keys"]),
        Some(v) => api.url(&["v1", "keys", &v.to_string()]),
    };
    let resp = api.send_any(api.request(Method::GET, url))?;
    if version.is_some() && resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(api.refusal(resp));
    }
    let what = match version {
        None => "keyset".to_owned(),
        Some(v) => format!("keyset version {v}"),
    };
    let body =
        read_limited(resp, MAX_JSON).with_context(|| format!("cannot read the server's {what}"))?;
    let env = Envelope::parse(&body).with_context(|| format!("the server's {what}"))?;
    if let Some(v) = version {
        let found = Keyset::parse(&env.payload)
            .with_context(|| format!("the server's {what}"))?
            .version;
        if found != v {
            bail!("asked for keyset version {v}, the server sent version {found}; refusing");
        }
    }
    Ok(Some(env))
}
