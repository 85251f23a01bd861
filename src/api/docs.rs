//! The API description: `GET /v1/openapi.yaml`, the OpenAPI 3.1 document in
//! `docs/openapi.yaml`, compiled in so it always matches this build.

use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::Filter;

pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

pub fn routes() -> BoxedFilter<(Response,)> {
    warp::path!("v1" / "openapi.yaml")
        .and(warp::get())
        .map(|| {
            let mut resp = Response::new(OPENAPI_YAML.into());
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
        })
        .boxed()
}
