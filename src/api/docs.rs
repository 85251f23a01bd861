//! The API description: `GET /v1/openapi.yaml`, the OpenAPI 3.1 document in
//! `docs/openapi.yaml`, compiled in so it always matches this build.

use crate::edge::body::Body;
use crate::edge::Response;
use hyper::header::{self, HeaderValue};

pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

pub fn openapi() -> Response {
    let mut resp = Response::new(Body::from(OPENAPI_YAML));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}
