//! The keys page: the keyset the server serves (version, expiry, each
//! role's keys and threshold) and when its freshness statements expire.

use super::super::format;
use super::super::{render, Ctx, Response};
use crate::console::navbar::Nav;
use askama::Template;
use chrono::Utc;
use firmcast_signing::{Envelope, Freshness};
use hyper::StatusCode;

pub struct RoleView {
    pub name: &'static str,
    pub signs: &'static str,
    pub threshold: usize,
    pub keys: Vec<String>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct Keys {
    nav: Nav,
    version: u64,
    expires: String,
    expires_in: String,
    /// Under 30 days left: rotate soon.
    expiring: bool,
    roles: Vec<RoleView>,
    /// When the freshness statements served now expire (from one of them).
    freshness: Option<String>,
    freshness_in: String,
}

/// `GET /console/keys`.
pub fn index(ctx: &Ctx<'_>) -> Response {
    let verified = ctx.api.catalog.keyset();
    let k = &verified.keyset;
    let ids = |r: &firmcast_signing::Role| r.keys.iter().map(|k| k.keyid().to_owned()).collect();
    let mut roles = vec![RoleView {
        name: "root",
        signs: "the keyset (offline; pinned in apps)",
        threshold: verified.root.threshold,
        keys: ids(&verified.root),
    }];
    roles.push(RoleView {
        name: "release",
        signs: "release manifests (offline, release engineers)",
        threshold: k.release.threshold,
        keys: ids(&k.release),
    });
    roles.push(RoleView {
        name: "timestamp",
        signs: "freshness statements (online, this server)",
        threshold: k.timestamp.threshold,
        keys: ids(&k.timestamp),
    });
    let snap = ctx.api.catalog.load();
    let mut names: Vec<&String> = snap.products.keys().collect();
    names.sort();
    let freshness = names.first().and_then(|name| {
        let p = snap.product(name)?;
        let env = Envelope::parse(p.freshness("stable")?).ok()?;
        Freshness::parse(&env.payload).ok().map(|f| f.expires)
    });
    render(
        StatusCode::OK,
        &Keys {
            nav: ctx.nav("keys"),
            version: k.version,
            expires: format::time(k.expires),
            expires_in: format::relative(k.expires),
            expiring: k.expires - Utc::now() < chrono::Duration::days(30),
            roles,
            freshness: freshness.map(format::time),
            freshness_in: freshness.map(format::relative).unwrap_or_default(),
        },
    )
}
