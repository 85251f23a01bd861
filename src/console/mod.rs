//! The web console at `/console`: server-rendered pages for release
//! engineers, on the admin API's roles and operations.
//!
//! - The route table sends everything under `/console` here as one route
//!   ([`crate::edge::route::Route::Console`]); [`answer`] routes the pages.
//! - [`session`]: sessions kept on the server (memory, or Redis when the
//!   state backend is Redis); [`cookies`]: the one cookie; [`csrf`]: the
//!   token every state change carries.
//! - [`views`]: one module per page (askama templates in `templates/`),
//!   [`navbar`] the bar they share, [`errors`] the error page, [`chart`]
//!   the server-drawn SVG adoption chart, [`assets`] the embedded CSS, JS
//!   and vendored htmx.
//!
//! Every state change calls the code the admin API calls (`Releases`,
//! `api::admin`, `api::jobs`), as the signed-in token's actor, and only
//! for a publisher or admin: a viewer sees no buttons, and the server
//! refuses the request anyway. Pages carry a strict CSP (no inline script
//! or style), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and
//! `Cache-Control: no-store`.

mod assets;
mod chart;
mod cookies;
mod csrf;
mod errors;
mod format;
mod navbar;
pub mod session;
mod views;

use crate::api::Api;
use crate::config::{ConsoleSettings, Role};
use crate::edge::body::{Body, RequestBody};
use crate::error::ApiError;
use crate::releases::Actor;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use session::{Session, SessionId, SessionStore};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use crate::edge::Response;

/// The policy every console answer carries: scripts, styles, images and
/// requests only from firmcast itself, no inline script or style, no
/// framing, forms only to firmcast.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A form body's limit: a few fields.
const MAX_FORM: u64 = 16 * 1024;

/// The console's state: its sessions and cookie policy.
pub struct Console {
    sessions: Arc<dyn SessionStore>,
    secure_cookies: bool,
}

impl Console {
    pub fn new(sessions: Arc<dyn SessionStore>, settings: &ConsoleSettings) -> Self {
        if settings.insecure_cookies {
            tracing::warn!("[console] insecure_cookies = true: the session cookie goes over plain HTTP too; for development only");
        }
        Console {
            sessions,
            secure_cookies: !settings.insecure_cookies,
        }
    }

    /// On the opened backend: sessions in memory for the embedded one, in
    /// Redis (shared by every instance) for Redis.
    pub fn from_backend(backend: &crate::storage::Backend, settings: &ConsoleSettings) -> Self {
        let idle = Duration::from_secs(settings.session_idle_secs);
        Self::new(session::open(backend, idle), settings)
    }
}

/// A signed-in request: the API, the session, and its role now.
pub(crate) struct Ctx<'a> {
    pub api: &'a Api,
    pub session: Session,
}

impl Ctx<'_> {
    /// Publishers and admins act; viewers look.
    pub fn can_act(&self) -> bool {
        self.session.role >= Role::Publisher
    }

    pub fn actor(&self) -> Actor {
        Actor {
            name: self.session.actor.clone(),
            role: self.session.role,
        }
    }

    pub fn nav(&self, current: &'static str) -> navbar::Nav {
        navbar::Nav::signed_in(&self.session, current)
    }

    /// The page refusing a viewer's (or a forged) state change.
    pub fn refuse_viewer(&self) -> Response {
        errors::page(
            Some(self.nav("")),
            &ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} has the viewer role: it sees everything and changes nothing. Sign in with a publisher's token to act.",
                    self.session.actor
                ),
            ),
        )
    }
}

/// The answer to any request under `/console`; `page` is the path after
/// `/console`.
pub async fn answer(
    api: &Api,
    page: &str,
    parts: &Parts,
    body: &mut RequestBody,
    client: IpAddr,
) -> Response {
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    let segs: Vec<String> = page
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| crate::edge::route::decode(s).into_owned())
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = method == Method::GET;
    // What anyone may fetch: assets and the sign-in page.
    match (&method, segs.as_slice()) {
        (m, ["assets", name]) if *m == Method::GET => {
            return assets::serve(name).unwrap_or_else(|| errors::not_found(None))
        }
        (m, ["login"]) if *m == Method::GET => {
            return match signed_in(api, parts).await {
                Ok(Some(_)) => redirect("/console/products"),
                _ => views::login::page(None, StatusCode::OK),
            }
        }
        (m, ["login"]) if *m == Method::POST => {
            return views::login::sign_in(api, parts, body, client).await
        }
        _ => {}
    }
    // Every other page needs a session.
    let session = match signed_in(api, parts).await {
        Ok(Some(session)) => session,
        Ok(None) => return not_signed_in(parts, get, api.console.secure_cookies),
        Err(e) => return errors::page(None, &e),
    };
    let (session, id) = session;
    let ctx = Ctx { api, session };
    if method != Method::GET {
        // One rule for every state change, before any handler runs.
        if !csrf::same_origin(&parts.headers) {
            return errors::page(
                Some(ctx.nav("")),
                &ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross_site",
                    "this request came from another site; act from the console's own pages",
                ),
            );
        }
    }
    match (method, segs.as_slice()) {
        (Method::GET, []) => redirect("/console/products"),
        (Method::POST, ["logout"]) => {
            if let Err(resp) = read_form(parts, body, &ctx).await {
                return resp;
            }
            views::login::sign_out(api, &ctx, &id).await
        }
        (Method::GET, ["products"]) => views::products::index(&ctx).await,
        (Method::GET, ["products", product]) => views::products::product(&ctx, product).await,
        (Method::GET, ["releases", product, version]) => {
            views::release::page(&ctx, product, version, &parts.uri).await
        }
        (Method::GET, ["releases", product, version, "status"]) => {
            views::release::status_partial(&ctx, product, version, &parts.uri).await
        }
        (Method::POST, ["releases", product, version, action]) => {
            if !ctx.can_act() {
                return ctx.refuse_viewer();
            }
            let form = match read_form(parts, body, &ctx).await {
                Ok(form) => form,
                Err(resp) => return resp,
            };
            views::release::act(&ctx, product, version, action, &form).await
        }
        (Method::GET, ["publish"]) => views::publish::page(&ctx),
        (Method::PUT, ["upload", product, version]) => {
            views::publish::upload(&ctx, product, version, parts, body).await
        }
        (Method::POST, ["publish"]) => views::publish::publish(&ctx, parts, body).await,
        (Method::GET, ["jobs"]) => views::jobs::index(&ctx).await,
        (Method::GET, ["jobs", id, "progress"]) => views::jobs::progress(&ctx, id).await,
        (Method::GET, ["audit"]) => views::audit::index(&ctx, parts).await,
        (Method::GET, ["keys"]) => views::keys::index(&ctx),
        _ => errors::not_found(Some(ctx.nav(""))),
    }
}

/// The session the request's cookie names, with its token's role now;
/// `None` when there is none (or it ended, or its token was removed).
async fn signed_in(api: &Api, parts: &Parts) -> Result<Option<(Session, SessionId)>, ApiError> {
    let Some(Some(id)) = cookies::session_id(&parts.headers) else {
        return Ok(None);
    };
    let console = &api.console;
    let Some(mut session) = console.sessions.get(&id).await.map_err(store_error)? else {
        return Ok(None);
    };
    match api.auth.role_of(&session.actor) {
        Some(role) => {
            session.role = role;
            Ok(Some((session, id)))
        }
        None => {
            // The token left the configuration: so does its session.
            console.sessions.delete(&id).await.map_err(store_error)?;
            Ok(None)
        }
    }
}

/// Without a session: pages send the browser to sign in (and forget a
/// cookie that named no session); polls stop; state changes are refused.
fn not_signed_in(parts: &Parts, get: bool, secure: bool) -> Response {
    let stale = cookies::session_id(&parts.headers).is_some();
    let mut resp = if parts.headers.contains_key("hx-request") {
        // htmx stops polling on 286.
        let mut r = html(
            StatusCode::from_u16(286).unwrap_or(StatusCode::OK),
            "<p class=\"notice\">Signed out. <a href=\"/console/login\">Sign in</a> again.</p>"
                .into(),
        );
        r.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/console/login"));
        r
    } else if get {
        redirect("/console/login")
    } else {
        errors::page(
            None,
            &ApiError::new(
                StatusCode::UNAUTHORIZED,
                "not_signed_in",
                "this session has ended (signed out, or idle for 8 hours); sign in again",
            ),
        )
    };
    if stale {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookies::clear(secure));
    }
    resp
}

pub(crate) fn store_error(e: crate::storage::StoreError) -> ApiError {
    match e {
        crate::storage::StoreError::Unavailable { .. } => {
            ApiError::unavailable(format!("{e}; retry shortly"))
        }
        crate::storage::StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "console session store corrupt");
            ApiError::internal("the session store holds unreadable data; sign in again")
        }
    }
}

/// A form post's fields, once its CSRF token has been checked; the refusal
/// page otherwise.
pub(crate) async fn read_form(
    parts: &Parts,
    body: &mut RequestBody,
    ctx: &Ctx<'_>,
) -> Result<HashMap<String, String>, Response> {
    let form = read_form_fields(parts, body)
        .await
        .map_err(|e| errors::page(Some(ctx.nav("")), &e))?;
    if !csrf::matches(&ctx.session.csrf, form.get(csrf::FIELD).map(String::as_str)) {
        return Err(errors::page(
            Some(ctx.nav("")),
            &ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "the form's CSRF token is missing or stale; reload the page and try again",
            ),
        ));
    }
    Ok(form)
}

/// An `application/x-www-form-urlencoded` body's fields.
pub(crate) async fn read_form_fields(
    parts: &Parts,
    body: &mut RequestBody,
) -> Result<HashMap<String, String>, ApiError> {
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the console's forms as the browser does (application/x-www-form-urlencoded)",
        ));
    }
    let bytes = crate::api::read_body(body, MAX_FORM).await?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

/// The headers every console answer carries.
pub(crate) fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// An HTML page (or partial): never cached.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    resp
}

/// A JSON answer for the publish page's script, with the page headers.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut resp = html(status, value.to_string());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 303 See Other to `location` (after a form post: the browser GETs it).
pub(crate) fn redirect(location: &str) -> Response {
    let mut resp = html(StatusCode::SEE_OTHER, String::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Renders an askama template, or the error page saying it could not.
pub(crate) fn render<T: askama::Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            errors::page(
                None,
                &ApiError::internal("the page could not be drawn; this is a bug"),
            )
        }
    }
}
