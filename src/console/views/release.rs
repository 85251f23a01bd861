//! The release page: the signed manifest as people read it, the rollout
//! ("Set rollout", "Pause"/"Resume", "Yank"), the ramp, the health gate
//! with the reports it reads, and "Notify" (a dry run's count first, then
//! the job's live progress). Every action is the admin API's own code
//! (`api::admin::apply_patch`, `api::jobs::start_notify`) as the session's
//! actor.

use super::super::format::{self, State};
use super::super::{errors, redirect, render, Ctx, Response};
use super::jobs::JobRow;
use super::products::{release_href, RampProgress};
use crate::api::admin::{HealthRequest, PatchRequest, RampRequest, RampSteps};
use crate::api::stats::ReleaseStats;
use crate::console::navbar::Nav;
use crate::error::ApiError;
use crate::state::StoredRelease;
use askama::Template;
use firmcast_signing::Envelope;
use hyper::{StatusCode, Uri};
use std::collections::HashMap;

pub struct KeyRow {
    pub keyid: String,
    /// A release key of the server's current keyset.
    pub trusted: bool,
}

pub struct Manifest {
    pub channel: String,
    pub seq: u64,
    pub size: String,
    pub sha256: String,
    pub from: String,
    pub critical: bool,
    pub released_at: String,
    pub notes: Vec<(String, String)>,
    pub keys: Vec<KeyRow>,
    pub threshold: usize,
    pub published: String,
}

pub struct Step {
    pub pct: String,
    /// `done`, `current` or `todo`.
    pub class: &'static str,
}

pub struct RampDetail {
    pub progress: RampProgress,
    pub steps: Vec<Step>,
    pub every: String,
}

pub struct Gate {
    pub min_reports: String,
    pub max_rate: String,
    pub default: bool,
    pub red: bool,
    pub installed: String,
    pub failed: String,
    pub enough: bool,
    pub rate: String,
    /// For `<meter>`: the failure rate in percent, its limit, and a scale
    /// that shows both.
    pub meter_value: String,
    pub meter_limit: String,
    pub meter_max: String,
    pub by_stage: Vec<(String, String)>,
    pub top_codes: Vec<(String, String)>,
    pub window: u32,
}

/// What the status panel shows, with "Pause"/"Resume" (so the button
/// follows the state, also when the gate paused the release). htmx polls
/// it every few seconds and swaps it only when it changed.
pub struct Status {
    pub href: String,
    /// A digest of the panel as drawn: the poll sends it back, and an
    /// unchanged panel is answered 204 (no swap, no re-announcement).
    pub seen: String,
    pub can_act: bool,
    pub csrf: String,
    pub paused: bool,
    pub yanked: bool,
    pub state: State,
    pub rollout: String,
    pub ramp: Option<RampDetail>,
    pub gate: Gate,
}

#[derive(Template)]
#[template(path = "release.html")]
struct Page {
    nav: Nav,
    product: String,
    version: String,
    href: String,
    product_href: String,
    can_act: bool,
    csrf: String,
    manifest: Manifest,
    status: Status,
    paused: bool,
    yanked: bool,
    rollout_value: String,
    ramp_steps: String,
    ramp_every: String,
    has_ramp: bool,
    gate_min: u64,
    gate_max_pct: String,
    gate_default: bool,
    flash: Option<&'static str>,
    error: Option<String>,
    /// A job named by `?job=` (after "Notify"): a dry run's count, or the
    /// sent job's progress.
    job: Option<JobRow>,
    /// The dry run would tell recipients outside a partial rollout.
    needs_force: bool,
    jobs: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "release_status.html")]
struct StatusPartial {
    status: Status,
}

/// The release named by the path, from this instance's snapshot (kept in
/// step with the store), with its envelope.
fn load(
    ctx: &Ctx<'_>,
    product: &str,
    version: &str,
) -> Result<(StoredRelease, Envelope), ApiError> {
    let v = crate::api::check_names(product, version)?;
    let snap = ctx.api.catalog.load();
    let r = snap
        .product(product)
        .and_then(|p| p.release(&v))
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_release",
                format!("no release {product} {v}; pick one from Products"),
            )
        })?;
    let env = Envelope::parse(r.envelope())
        .map_err(|e| ApiError::internal(format!("stored release {product} {v}: {e}")))?;
    Ok((r.stored.clone(), env))
}

fn status(ctx: &Ctx<'_>, s: &StoredRelease, st: &ReleaseStats) -> Status {
    let ramp = s.steering.ramp.as_ref().map(|r| RampDetail {
        progress: RampProgress::of(r, s.paused),
        steps: r
            .steps_bp
            .iter()
            .enumerate()
            .map(|(i, bp)| Step {
                pct: format::pct(*bp),
                class: match i.cmp(&r.step) {
                    std::cmp::Ordering::Less => "done",
                    std::cmp::Ordering::Equal => "current",
                    std::cmp::Ordering::Greater => "todo",
                },
            })
            .collect(),
        every: humantime::format_duration(std::time::Duration::from_secs(r.every_secs)).to_string(),
    });
    let h = &st.health;
    let rep = &st.reports;
    let total = rep.installed + rep.failed;
    let limit = h.max_failure_rate * 100.0;
    let status = Status {
        href: release_href(&s.product, &s.version),
        seen: String::new(),
        can_act: ctx.can_act(),
        csrf: ctx.session.csrf.clone(),
        paused: s.paused,
        yanked: s.yanked,
        state: format::state(s),
        rollout: format::pct(s.rollout_bp),
        ramp,
        gate: Gate {
            min_reports: format::count(h.min_reports),
            max_rate: format::rate(h.max_failure_rate),
            default: h.default,
            red: h.red,
            installed: format::count(rep.installed),
            failed: format::count(rep.failed),
            enough: total >= h.min_reports,
            rate: format::rate(rep.failure_rate),
            meter_value: format!("{:.2}", rep.failure_rate * 100.0),
            meter_limit: format!("{limit:.2}"),
            meter_max: format!(
                "{:.2}",
                (limit * 2.0).max(rep.failure_rate * 100.0).max(1.0)
            ),
            by_stage: rep
                .by_stage
                .iter()
                .map(|(k, v)| (k.clone(), format::count(*v)))
                .collect(),
            top_codes: rep
                .top_codes
                .iter()
                .take(10)
                .map(|c| (c.code.clone(), format::count(c.count)))
                .collect(),
            window: rep.window,
        },
    };
    seal(status)
}

/// Sets the panel's digest: of the panel drawn without one.
fn seal(status: Status) -> Status {
    let panel = StatusPartial { status };
    let drawn = panel.render().unwrap_or_default();
    let mut status = panel.status;
    status.seen = firmcast_signing::digest::sha256_hex(drawn.as_bytes())[..16].to_owned();
    status
}

fn manifest(ctx: &Ctx<'_>, s: &StoredRelease, env: &Envelope) -> Result<Manifest, ApiError> {
    let m = firmcast_signing::ReleaseManifest::parse(&env.payload)
        .map_err(|e| ApiError::internal(format!("stored manifest: {e}")))?;
    let role = &ctx.api.catalog.keyset().keyset.release;
    Ok(Manifest {
        channel: m.channel.clone(),
        seq: m.seq,
        size: format::size(m.artifact.size),
        sha256: m.artifact.sha256.clone(),
        from: m
            .from
            .as_ref()
            .map_or_else(|| "any version".to_owned(), ToString::to_string),
        critical: m.critical,
        released_at: format::time(m.released_at),
        notes: m.notes.clone().into_iter().collect(),
        keys: env
            .signatures
            .iter()
            .map(|sig| KeyRow {
                keyid: sig.keyid.clone(),
                trusted: role.keys.iter().any(|k| k.keyid() == sig.keyid),
            })
            .collect(),
        threshold: role.threshold,
        published: format!("{} by {}", format::time(s.published_at), s.published_by),
    })
}

/// `GET /console/releases/{product}/{version}` (`?done=` after an action,
/// `?job=` after "Notify").
pub async fn page(ctx: &Ctx<'_>, product: &str, version: &str, uri: &Uri) -> Response {
    let q: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let flash = q.get("done").and_then(|d| flash(d));
    let job = match q.get("job") {
        Some(id) => match super::jobs::find(ctx, id).await {
            Ok(job) => Some(job),
            Err(e) => return errors::page(Some(ctx.nav("products")), &e),
        },
        None => None,
    };
    match page_with(ctx, product, version, flash, None, job).await {
        Ok(resp) => resp,
        Err(e) => errors::page(Some(ctx.nav("products")), &e),
    }
}

async fn page_with(
    ctx: &Ctx<'_>,
    product: &str,
    version: &str,
    flash: Option<&'static str>,
    error: Option<&ApiError>,
    job: Option<crate::fanout::Job>,
) -> Result<Response, ApiError> {
    let (s, env) = load(ctx, product, version)?;
    let st = crate::api::stats::release_stats(ctx.api, s.clone()).await?;
    let jobs: Vec<JobRow> = ctx
        .api
        .push
        .list_jobs(200)
        .await?
        .iter()
        .filter(|j| j.product == s.product && j.version == s.version)
        // The job shown above is not listed again (one element per job id).
        .filter(|j| job.as_ref().is_none_or(|shown| shown.id != j.id))
        .take(5)
        .map(JobRow::of)
        .collect();
    let gate = s.steering.health.unwrap_or(ctx.api.rollout.default_gate());
    let needs_force = s.paused || s.rollout_bp < 10_000;
    let page = Page {
        nav: ctx.nav("products"),
        product: s.product.clone(),
        version: s.version.clone(),
        href: release_href(&s.product, &s.version),
        product_href: format!("/console/products/{}", s.product),
        can_act: ctx.can_act(),
        csrf: ctx.session.csrf.clone(),
        manifest: manifest(ctx, &s, &env)?,
        status: status(ctx, &s, &st),
        paused: s.paused,
        yanked: s.yanked,
        rollout_value: format!("{}", f64::from(s.rollout_bp) / 100.0),
        ramp_steps: s.steering.ramp.as_ref().map_or_else(
            || "1, 5, 20, 50, 100".to_owned(),
            |r| {
                r.steps_bp
                    .iter()
                    .map(|bp| format!("{}", f64::from(*bp) / 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ramp_every: s.steering.ramp.as_ref().map_or_else(
            || "24h".to_owned(),
            |r| {
                humantime::format_duration(std::time::Duration::from_secs(r.every_secs)).to_string()
            },
        ),
        has_ramp: s.steering.ramp.is_some(),
        gate_min: gate.min_reports,
        gate_max_pct: format!("{}", gate.max_failure_rate * 100.0),
        gate_default: s.steering.health.is_none(),
        flash,
        error: error.map(|e| e.message.clone()),
        job: job.as_ref().map(JobRow::of),
        needs_force,
        jobs,
    };
    let status = error.map_or(StatusCode::OK, |e| e.status);
    Ok(render(status, &page))
}

/// `GET /console/releases/{product}/{version}/status?seen=`: the panel
/// htmx polls; 204 when it is still the one the page has.
pub async fn status_partial(ctx: &Ctx<'_>, product: &str, version: &str, uri: &Uri) -> Response {
    let result = async {
        let (s, _) = load(ctx, product, version)?;
        let st = crate::api::stats::release_stats(ctx.api, s.clone()).await?;
        Ok::<_, ApiError>(status(ctx, &s, &st))
    }
    .await;
    let seen = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "seen")
        .map(|(_, v)| v.into_owned());
    match result {
        Ok(status) if seen.as_deref() == Some(status.seen.as_str()) => {
            super::super::html(StatusCode::NO_CONTENT, String::new())
        }
        Ok(status) => render(StatusCode::OK, &StatusPartial { status }),
        Err(e) => errors::page(Some(ctx.nav("products")), &e),
    }
}

/// What a finished action says on the page it returns to.
fn flash(done: &str) -> Option<&'static str> {
    Some(match done {
        "rollout" => "Rollout set.",
        "paused" => "Paused: nobody new is offered this release until it is resumed.",
        "resumed" => {
            "Resumed: the gate counts reports from now on, and the ramp's interval starts again."
        }
        "yanked" => "Yanked: offered to nobody from now on.",
        "ramp" => "Ramp set.",
        "ramp_stopped" => "Ramp stopped: the rollout stays where it is.",
        "gate" => "Health gate set.",
        "gate_default" => "The release uses the default health gate again.",
        "sent" => "Notification job started.",
        _ => return None,
    })
}

/// `POST /console/releases/{product}/{version}/{action}` (a publisher's
/// form, its CSRF token already checked).
pub async fn act(
    ctx: &Ctx<'_>,
    product: &str,
    version: &str,
    action: &str,
    form: &HashMap<String, String>,
) -> Response {
    let result = match action {
        "notify" => notify(ctx, product, version, form).await,
        _ => patch_request(action, form).map(|(req, done)| (Some(req), done)),
    };
    let (req, done) = match result {
        Ok(r) => r,
        Err(e) => return again(ctx, product, version, &e).await,
    };
    if let Some(req) = req {
        let v = match crate::api::check_names(product, version) {
            Ok(v) => v.to_string(),
            Err(e) => return errors::page(Some(ctx.nav("products")), &e),
        };
        if let Err(e) =
            crate::api::admin::apply_patch(&ctx.api.releases, &ctx.actor(), product, &v, req).await
        {
            return again(ctx, product, version, &e).await;
        }
    }
    let href = release_href(product, version);
    redirect(&format!("{href}?{done}"))
}

/// The page again, saying why the action was refused.
async fn again(ctx: &Ctx<'_>, product: &str, version: &str, e: &ApiError) -> Response {
    match page_with(ctx, product, version, None, Some(e), None).await {
        Ok(resp) => resp,
        Err(_) => errors::page(Some(ctx.nav("products")), e),
    }
}

/// The admin API's patch request a form stands for, and the `done=` code.
fn patch_request(
    action: &str,
    form: &HashMap<String, String>,
) -> Result<(PatchRequest, String), ApiError> {
    let field = |name: &str| form.get(name).map_or("", |v| v.trim());
    let bad = |code: &'static str, m: String| ApiError::bad_request(code, m);
    let number = |name: &str, label: &str| -> Result<f64, ApiError> {
        let text = field(name).trim_end_matches('%').trim();
        text.parse::<f64>().map_err(|_| {
            bad(
                "bad_form",
                format!("{label} {text:?} is not a number; type e.g. 25"),
            )
        })
    };
    let req = |r: PatchRequest, done: &str| Ok((r, format!("done={done}")));
    match action {
        "rollout" => req(
            PatchRequest {
                rollout: Some(number("rollout", "Rollout %")?),
                ..PatchRequest::default()
            },
            "rollout",
        ),
        "pause" => req(
            PatchRequest {
                paused: Some(true),
                ..PatchRequest::default()
            },
            "paused",
        ),
        "resume" => req(
            PatchRequest {
                paused: Some(false),
                ..PatchRequest::default()
            },
            "resumed",
        ),
        "yank" => {
            if field("confirm") != "yes" {
                return Err(bad(
                    "not_confirmed",
                    "tick \"Yes, yank it\" first: a yanked release stays yanked".into(),
                ));
            }
            req(
                PatchRequest {
                    yanked: Some(true),
                    ..PatchRequest::default()
                },
                "yanked",
            )
        }
        "ramp" => {
            let text = field("steps");
            let steps = if text.eq_ignore_ascii_case("phased") {
                RampSteps::Named("phased".into())
            } else {
                let mut percents = Vec::new();
                for part in text.split([',', ' ']).filter(|p| !p.is_empty()) {
                    let p = part.trim_end_matches('%');
                    percents.push(p.parse::<f64>().map_err(|_| {
                        bad(
                            "bad_ramp",
                            format!("ramp step {part:?} is not a number; type e.g. 1, 5, 20, 100 or phased"),
                        )
                    })?);
                }
                RampSteps::Percents(percents)
            };
            let every = Some(field("every"))
                .filter(|e| !e.is_empty())
                .map(str::to_owned);
            req(
                PatchRequest {
                    ramp: Some(Some(RampRequest { steps, every })),
                    ..PatchRequest::default()
                },
                "ramp",
            )
        }
        "ramp_stop" => req(
            PatchRequest {
                ramp: Some(None),
                ..PatchRequest::default()
            },
            "ramp_stopped",
        ),
        "gate" => {
            let min = number("min_reports", "Minimum reports")?;
            if min.fract() != 0.0 || min < 0.0 {
                return Err(bad(
                    "bad_health",
                    format!("Minimum reports {min} must be a whole number"),
                ));
            }
            req(
                PatchRequest {
                    health: Some(Some(HealthRequest {
                        min_reports: min as u64,
                        max_failure_rate: number("max_failure_rate", "Maximum failure rate %")?
                            / 100.0,
                    })),
                    ..PatchRequest::default()
                },
                "gate",
            )
        }
        "gate_default" => req(
            PatchRequest {
                health: Some(None),
                ..PatchRequest::default()
            },
            "gate_default",
        ),
        other => Err(ApiError::not_found(
            "unknown_action",
            format!("there is no release action {other:?}"),
        )),
    }
}

/// "Notify": without `send`, a dry run whose count the page then shows
/// with a "Send" button; with it, the real job.
async fn notify(
    ctx: &Ctx<'_>,
    product: &str,
    version: &str,
    form: &HashMap<String, String>,
) -> Result<(Option<PatchRequest>, String), ApiError> {
    let v = crate::api::check_names(product, version)?;
    let send = form.get("send").is_some_and(|s| s == "yes");
    let force = form.get("force").is_some_and(|s| s == "yes");
    let job =
        crate::api::jobs::start_notify(ctx.api, &ctx.actor(), product, &v, !send, force).await?;
    let done = if send { "&done=sent" } else { "" };
    Ok((None, format!("job={}{done}#notify", job.id)))
}
