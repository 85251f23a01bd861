//! The audit page: who did what, when, filtered by actor, action and
//! product, newest first, a page at a time.

use super::super::format;
use super::super::{errors, render, Ctx, Response};
use crate::console::navbar::Nav;
use askama::Template;
use hyper::http::request::Parts;
use hyper::StatusCode;
use std::collections::HashMap;

/// Entries a page shows.
const PAGE: usize = 100;
/// Entries read per store call, and at most per page view: a filter that
/// matches rarely pages on through "Older entries" instead of reading the
/// whole log at once.
const CHUNK: usize = 500;
const MAX_SCAN: usize = 5_000;

/// Every action firmcast audits.
const ACTIONS: [&str; 9] = [
    "artifact.upload",
    "release.publish",
    "release.patch",
    "release.auto_pause",
    "release.ramp_step",
    "release.notify",
    "job.cancel",
    "console.sign_in",
    "console.sign_out",
];

pub struct Row {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct Audit {
    nav: Nav,
    actor: String,
    action: String,
    product: String,
    actions: &'static [&'static str],
    rows: Vec<Row>,
    /// The query of the next (older) page, when there may be one.
    older: Option<String>,
    scanned: usize,
}

/// `GET /console/audit?actor=&action=&product=&before=`.
pub async fn index(ctx: &Ctx<'_>, parts: &Parts) -> Response {
    let q: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| q.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let (actor, action, product) = (get("actor"), get("action"), get("product"));
    let mut before: Option<u64> = get("before").parse().ok();
    let store = ctx.api.releases.store();
    let mut rows = Vec::new();
    let mut scanned = 0;
    let mut last_id = None;
    let mut exhausted = false;
    while rows.len() < PAGE && scanned < MAX_SCAN {
        let entries = match store.list_audit(before, CHUNK).await {
            Ok(e) => e,
            Err(e) => return errors::page(Some(ctx.nav("audit")), &e.into()),
        };
        if entries.len() < CHUNK {
            exhausted = true;
        }
        for e in entries {
            scanned += 1;
            last_id = Some(e.id);
            before = Some(e.id);
            let target_product = e.target.split(' ').next().unwrap_or("");
            if (actor.is_empty() || e.actor == actor)
                && (action.is_empty() || e.action == action)
                && (product.is_empty() || target_product == product)
            {
                let mut detail = e.detail.to_string();
                if detail == "{}" {
                    detail.clear();
                }
                if detail.len() > 300 {
                    detail.truncate(detail.floor_char_boundary(300));
                    detail.push('…');
                }
                rows.push(Row {
                    at: format::time(e.at),
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail,
                });
                if rows.len() == PAGE {
                    break;
                }
            }
        }
        if exhausted {
            break;
        }
    }
    // Stopped before the log's end (a full page, or the scan's bound).
    let older = (last_id.is_some() && (!exhausted || rows.len() == PAGE)).then(|| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &actor),
            ("action", &action),
            ("product", &product),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("before", &last_id.unwrap_or(0).to_string());
        s.finish()
    });
    render(
        StatusCode::OK,
        &Audit {
            nav: ctx.nav("audit"),
            actor,
            action,
            product,
            actions: &ACTIONS,
            rows,
            older,
            scanned,
        },
    )
}
