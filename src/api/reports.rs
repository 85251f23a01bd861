//! `POST /v1/reports`: an anonymous install outcome. Validated, checked
//! against the catalog, then counted once per address, release, outcome and
//! day (`crate::rollout`); nothing of the client is kept.

use super::{json, parse_json, read_json_body, MAX_JSON_BODY};
use crate::catalog::Catalog;
use crate::edge::body::RequestBody;
use crate::edge::Response;
use crate::error::ApiError;
use crate::rollout::{Report, Rollout};
use crate::stats::{Outcome, Stage};
use hyper::http::request::Parts;
use hyper::StatusCode;
use serde::Deserialize;
use std::net::IpAddr;

/// The longest failure code; codes are `[A-Za-z0-9_.-]{1,32}`.
pub const MAX_CODE: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    product: String,
    from: String,
    to: String,
    outcome: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

pub async fn report(
    catalog: &Catalog,
    rollout: &Rollout,
    parts: &Parts,
    body: &mut RequestBody,
    client: IpAddr,
) -> Result<Response, ApiError> {
    let body = read_json_body(&parts.headers, body, MAX_JSON_BODY).await?;
    let req: ReportRequest = parse_json(&body)?;
    let to = super::check_names(&req.product, &req.to)?;
    firmcast_signing::names::parse_version(&req.from)
        .map_err(|e| ApiError::bad_request("bad_from", format!("from: {e}")))?;
    let outcome = match req.outcome.as_str() {
        "installed" => Outcome::Installed,
        "failed" => Outcome::Failed,
        other => {
            return Err(ApiError::bad_request(
                "bad_outcome",
                format!(
                    "outcome {:?} is not one of installed, failed",
                    other.chars().take(40).collect::<String>()
                ),
            ))
        }
    };
    let stage = req.stage.as_deref().map(stage).transpose()?;
    let code = req.code.as_deref().map(code).transpose()?;
    if outcome == Outcome::Installed && (stage.is_some() || code.is_some()) {
        return Err(ApiError::bad_request(
            "bad_report",
            "stage and code describe a failure; send them only with outcome failed",
        ));
    }
    let window = {
        let snap = catalog.load();
        let release = snap
            .product(&req.product)
            .and_then(|p| p.release(&to))
            .ok_or_else(|| {
                ApiError::not_found(
                    "unknown_release",
                    format!(
                        "{} {} is not a published release; report the version you were offered",
                        req.product, req.to
                    ),
                )
            })?;
        release.stored.steering.window
    };
    let to = to.to_string();
    rollout.reported(
        client,
        &Report {
            product: &req.product,
            to: &to,
            from: &req.from,
            outcome,
            stage,
            code,
            window,
        },
    );
    // Whether or not it counted (once per address a day): the same answer,
    // so a client learns nothing of the rule's state.
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"accepted": true}),
    ))
}

fn stage(s: &str) -> Result<Stage, ApiError> {
    Stage::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_stage",
                format!(
                    "stage {:?} is not one of download, verify, transfer, install, boot",
                    s.chars().take(40).collect::<String>()
                ),
            )
        })
}

fn code(c: &str) -> Result<&str, ApiError> {
    let ok = (1..=MAX_CODE).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(c)
    } else {
        Err(ApiError::bad_request(
            "bad_code",
            format!(
                "code {:?} must be 1 to {MAX_CODE} of A-Z a-z 0-9 _ . -; send the device's error code in that form",
                c.chars().take(40).collect::<String>()
            ),
        ))
    }
}
