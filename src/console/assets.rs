//! The console's static files, inside the binary (no Node toolchain at
//! build or run time; nothing fetched from a CDN):
//!
//! - `htmx-2.0.11.min.js`: htmx 2.0.11 from the npm registry (`htmx.org`,
//!   tarball sha1 a85363c4c5af94cd634df04c4b83d06dd0e91aa7), unchanged;
//!   its licence (Zero-Clause BSD) is `htmx-LICENSE.txt`, served beside it.
//! - `console.css`, `console.js`: ours.
//!
//! Pages link them with a digest in the query (`?v=<sha256 prefix>`), so a
//! browser may keep them for a year and still never runs a stale script
//! after an upgrade.

use super::{security_headers, Response};
use crate::edge::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;
use std::sync::LazyLock;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/console.js"),
    },
    Asset {
        name: "htmx-2.0.11.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "htmx-LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("assets/htmx-LICENSE.txt"),
    },
];

/// Each asset's URL, with its digest.
static URLS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = firmcast_signing::digest::sha256_hex(a.bytes);
            format!("/console/assets/{}?v={}", a.name, &digest[..16])
        })
        .collect()
});

/// The URL pages link `name` by.
pub fn url(name: &str) -> &'static str {
    ASSETS
        .iter()
        .position(|a| a.name == name)
        .map(|i| URLS[i].as_str())
        .unwrap_or("/console/assets/missing")
}

/// `GET /console/assets/{name}`.
pub fn serve(name: &str) -> Option<Response> {
    let asset = ASSETS.iter().find(|a| a.name == name)?;
    let mut resp = Response::new(Body::from(bytes::Bytes::from_static(asset.bytes)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    security_headers(h);
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_digest_url_and_is_served() {
        for a in &ASSETS {
            let u = url(a.name);
            assert!(
                u.starts_with(&format!("/console/assets/{}?v=", a.name)),
                "{u}"
            );
            assert!(serve(a.name).is_some());
        }
        assert!(serve("../Cargo.toml").is_none());
        assert!(
            std::str::from_utf8(ASSETS[3].bytes)
                .unwrap()
                .contains("Zero-Clause BSD"),
            "htmx's licence ships with it"
        );
    }
}
