//! Sign-in with an admin token, and sign-out.

use super::super::{
    cookies, errors, read_form_fields, redirect, render, store_error, Ctx, Response,
};
use crate::api::Api;
use crate::console::navbar::Nav;
use crate::console::session::{Session, SessionId};
use crate::edge::body::RequestBody;
use askama::Template;
use hyper::header::{self};
use hyper::http::request::Parts;
use hyper::StatusCode;
use std::net::IpAddr;

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    nav: Nav,
    error: Option<String>,
}

/// The sign-in form (with why the last attempt failed).
pub fn page(error: Option<String>, status: StatusCode) -> Response {
    render(
        status,
        &Login {
            nav: Nav::signed_out(),
            error,
        },
    )
}

/// `POST /console/login`: the token goes through the admin API's check
/// and failure throttle; a good one starts a session.
pub async fn sign_in(api: &Api, parts: &Parts, body: &mut RequestBody, client: IpAddr) -> Response {
    if !crate::console::csrf::same_origin(&parts.headers) {
        return page(
            Some("sign in from the console's own page".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let form = match read_form_fields(parts, body).await {
        Ok(form) => form,
        Err(e) => return page(Some(e.message), e.status),
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let actor = match api.auth.sign_in(token.as_bytes(), client) {
        Ok(actor) => actor,
        Err(e) => {
            let mut resp = page(Some(e.message.clone()), e.status);
            if let Some(s) = e.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, hyper::header::HeaderValue::from(s));
            }
            return resp;
        }
    };
    let id = SessionId::generate();
    let session = Session::new(actor.name.clone(), actor.role);
    if let Err(e) = api.console.sessions.put(&id, &session).await {
        return errors::page(None, &store_error(e));
    }
    if let Err(e) = api
        .releases
        .audit(
            &actor,
            "console.sign_in",
            actor.name.clone(),
            serde_json::json!({}),
        )
        .await
    {
        return errors::page(None, &e);
    }
    let mut resp = redirect("/console/products");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookies::set(&id, api.console.secure_cookies),
    );
    resp
}

/// `POST /console/logout`: the session is deleted on the server, so the
/// cookie is worthless even if the browser kept it.
pub async fn sign_out(api: &Api, ctx: &Ctx<'_>, id: &SessionId) -> Response {
    if let Err(e) = api.console.sessions.delete(id).await {
        return errors::page(Some(ctx.nav("")), &store_error(e));
    }
    let _ = api
        .releases
        .audit(
            &ctx.actor(),
            "console.sign_out",
            ctx.session.actor.clone(),
            serde_json::json!({}),
        )
        .await;
    let mut resp = redirect("/console/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        cookies::clear(api.console.secure_cookies),
    );
    resp
}
