//! The console's error page: the API's typed errors ([`ApiError`]), with
//! their status and what to do, as a page instead of JSON.

use super::navbar::Nav;
use super::{render, Response};
use crate::error::ApiError;
use askama::Template;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Nav,
    status: u16,
    title: &'static str,
    message: &'a str,
}

pub fn page(nav: Option<Nav>, e: &ApiError) -> Response {
    let mut resp = render(
        e.status,
        &ErrorPage {
            nav: nav.unwrap_or_else(Nav::signed_out),
            status: e.status.as_u16(),
            title: e.status.canonical_reason().unwrap_or("Error"),
            message: &e.message,
        },
    );
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

pub fn not_found(nav: Option<Nav>) -> Response {
    page(
        nav,
        &ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "there is no such console page; start from Products",
        ),
    )
}
