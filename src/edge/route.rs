//! The route table: every endpoint firmcast answers, decided once per
//! request from its method and path. Admission (which pool, whether the
//! per-client rate applies), dispatch, the role an admin call needs, metric
//! labels and the request log all read the same [`Route`].

use hyper::Method;
use std::borrow::Cow;

/// One endpoint, with its path parameters (percent-decoded when needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /v1/updates/{product}/{version}`: the hot path.
    Check {
        product: Cow<'a, str>,
        version: Cow<'a, str>,
    },
    /// `POST /v1/updates`: the app and its paired devices in one call.
    Batch,
    /// `POST /v1/reports`: an anonymous install outcome.
    Report,
    /// `GET|HEAD /v1/artifacts/{product}/{version}`.
    Artifact {
        product: Cow<'a, str>,
        version: Cow<'a, str>,
        head: bool,
    },
    /// `GET /v1/keys`.
    Keys,
    /// `GET /v1/keys/{version}`: the rotation chain.
    KeysAt(Cow<'a, str>),
    /// `POST /v1/push/subscriptions`.
    Subscribe,
    /// `POST /v1/push/unsubscribe`.
    Unsubscribe,
    /// `GET /v1/openapi.yaml`.
    OpenApi,
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `PUT /v1/admin/artifacts/{product}/{version}`.
    Upload {
        product: Cow<'a, str>,
        version: Cow<'a, str>,
    },
    /// `POST /v1/admin/releases`.
    Publish,
    /// `GET /v1/admin/releases`.
    ListReleases,
    /// `PATCH /v1/admin/releases/{product}/{version}`.
    PatchRelease {
        product: Cow<'a, str>,
        version: Cow<'a, str>,
    },
    /// `POST /v1/admin/releases/{product}/{version}/notify`.
    Notify {
        product: Cow<'a, str>,
        version: Cow<'a, str>,
    },
    /// `GET /v1/admin/jobs/{id}`.
    Job(Cow<'a, str>),
    /// `DELETE /v1/admin/jobs/{id}`.
    CancelJob(Cow<'a, str>),
    /// `GET /v1/admin/audit`.
    Audit,
    /// `GET /v1/admin/stats/{product}`.
    Stats(Cow<'a, str>),
    /// `/console` and everything under it, any method: the web console,
    /// which routes its own pages (`crate::console`) and authenticates by
    /// its session cookie, not by bearer token. Holds the path after
    /// `/console` (empty or starting with `/`).
    Console(Cow<'a, str>),
}

/// Which limits and pool a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Anyone on the internet: per-client rate and in-flight caps, the
    /// public pool.
    Public,
    /// Operators: authenticated admin calls, probes and metrics. Their own
    /// small pool, so they answer while the public one is full.
    Ops,
}

/// Why no route matched: a 404, or a 405 with the methods the path takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    MethodNotAllowed { allow: &'static str },
}

impl<'a> Route<'a> {
    /// The route for `method` and `path` (without the query).
    pub fn parse(method: &Method, path: &'a str) -> Result<Route<'a>, NoRoute> {
        // The update check, nearly every request: two searches for '/'.
        if let Some(rest) = path.strip_prefix("/v1/updates/") {
            // One pass: where the one '/' is, and whether anything is escaped.
            let (mut slash, mut slashes, mut escaped) = (0, 0, false);
            for (i, &b) in rest.as_bytes().iter().enumerate() {
                match b {
                    b'/' => {
                        slash = i;
                        slashes += 1;
                    }
                    b'%' => escaped = true,
                    _ => {}
                }
            }
            if slashes == 1 && slash > 0 && slash + 1 < rest.len() {
                if *method != Method::GET && *method != Method::HEAD {
                    return Err(NoRoute::MethodNotAllowed { allow: "GET, HEAD" });
                }
                let (product, version) = (&rest[..slash], &rest[slash + 1..]);
                let p = |s: &'a str| if escaped { decode(s) } else { Cow::Borrowed(s) };
                return Ok(Route::Check {
                    product: p(product),
                    version: p(version),
                });
            }
        }
        Self::parse_any(method, path)
    }

    /// Every route, segment by segment.
    fn parse_any(method: &Method, path: &'a str) -> Result<Route<'a>, NoRoute> {
        if let Some(page) = path.strip_prefix("/console") {
            if page.is_empty() || page.starts_with('/') {
                return Ok(Route::Console(Cow::Borrowed(page)));
            }
        }
        let rest = path.strip_prefix('/').ok_or(NoRoute::NotFound)?;
        let mut segs = rest.split('/');
        let s: [Option<&'a str>; 7] = std::array::from_fn(|_| segs.next());
        if segs.next().is_some() {
            return Err(NoRoute::NotFound);
        }
        let m = method;
        let get = *m == Method::GET || *m == Method::HEAD;
        let allow = |ok: bool, allow: &'static str, route: Route<'a>| {
            if ok {
                Ok(route)
            } else {
                Err(NoRoute::MethodNotAllowed { allow })
            }
        };
        let p = |s: &'a str| decode(s);
        match s {
            [Some("v1"), Some("updates"), Some(product), Some(version), None, ..]
                if param(product) && param(version) =>
            {
                allow(
                    get,
                    "GET, HEAD",
                    Route::Check {
                        product: p(product),
                        version: p(version),
                    },
                )
            }
            [Some("v1"), Some("updates"), None, ..] => {
                allow(*m == Method::POST, "POST", Route::Batch)
            }
            [Some("v1"), Some("reports"), None, ..] => {
                allow(*m == Method::POST, "POST", Route::Report)
            }
            [Some("v1"), Some("artifacts"), Some(product), Some(version), None, ..]
                if param(product) && param(version) =>
            {
                allow(
                    get,
                    "GET, HEAD",
                    Route::Artifact {
                        product: p(product),
                        version: p(version),
                        head: *m == Method::HEAD,
                    },
                )
            }
            [Some("v1"), Some("keys"), None, ..] => allow(get, "GET, HEAD", Route::Keys),
            [Some("v1"), Some("keys"), Some(v), None, ..] if param(v) => {
                allow(get, "GET, HEAD", Route::KeysAt(p(v)))
            }
            [Some("v1"), Some("push"), Some("subscriptions"), None, ..] => {
                allow(*m == Method::POST, "POST", Route::Subscribe)
            }
            [Some("v1"), Some("push"), Some("unsubscribe"), None, ..] => {
                allow(*m == Method::POST, "POST", Route::Unsubscribe)
            }
            [Some("v1"), Some("openapi.yaml"), None, ..] => allow(get, "GET, HEAD", Route::OpenApi),
            [Some("healthz"), None, ..] => allow(get, "GET, HEAD", Route::Health),
            [Some("readyz"), None, ..] => allow(get, "GET, HEAD", Route::Ready),
            [Some("metrics"), None, ..] => allow(get, "GET, HEAD", Route::Metrics),
            [Some("v1"), Some("admin"), ..] => Self::admin(m, &s[2..]),
            _ => Err(NoRoute::NotFound),
        }
    }

    /// `/v1/admin/...`, from the segments after `admin`.
    fn admin(m: &Method, s: &[Option<&'a str>]) -> Result<Route<'a>, NoRoute> {
        let allow = |ok: bool, allow: &'static str, route: Route<'a>| {
            if ok {
                Ok(route)
            } else {
                Err(NoRoute::MethodNotAllowed { allow })
            }
        };
        let get = *m == Method::GET || *m == Method::HEAD;
        let p = |s: &'a str| decode(s);
        match *s {
            [Some("artifacts"), Some(product), Some(version), None, None]
                if param(product) && param(version) =>
            {
                allow(
                    *m == Method::PUT,
                    "PUT",
                    Route::Upload {
                        product: p(product),
                        version: p(version),
                    },
                )
            }
            [Some("releases"), None, ..] => match *m {
                Method::POST => Ok(Route::Publish),
                _ if get => Ok(Route::ListReleases),
                _ => Err(NoRoute::MethodNotAllowed {
                    allow: "GET, HEAD, POST",
                }),
            },
            [Some("releases"), Some(product), Some(version), None, None]
                if param(product) && param(version) =>
            {
                allow(
                    *m == Method::PATCH,
                    "PATCH",
                    Route::PatchRelease {
                        product: p(product),
                        version: p(version),
                    },
                )
            }
            [Some("releases"), Some(product), Some(version), Some("notify"), None]
                if param(product) && param(version) =>
            {
                allow(
                    *m == Method::POST,
                    "POST",
                    Route::Notify {
                        product: p(product),
                        version: p(version),
                    },
                )
            }
            [Some("jobs"), Some(id), None, ..] if param(id) => match *m {
                Method::DELETE => Ok(Route::CancelJob(p(id))),
                _ if get => Ok(Route::Job(p(id))),
                _ => Err(NoRoute::MethodNotAllowed {
                    allow: "GET, HEAD, DELETE",
                }),
            },
            [Some("audit"), None, ..] => allow(get, "GET, HEAD", Route::Audit),
            [Some("stats"), Some(product), None, ..] if param(product) => {
                allow(get, "GET, HEAD", Route::Stats(p(product)))
            }
            _ => Err(NoRoute::NotFound),
        }
    }

    pub fn class(&self) -> Class {
        match self {
            Route::Check { .. }
            | Route::Batch
            | Route::Report
            | Route::Artifact { .. }
            | Route::Keys
            | Route::KeysAt(_)
            | Route::Subscribe
            | Route::Unsubscribe
            | Route::OpenApi => Class::Public,
            Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::Upload { .. }
            | Route::Publish
            | Route::ListReleases
            | Route::PatchRelease { .. }
            | Route::Notify { .. }
            | Route::Job(_)
            | Route::CancelJob(_)
            | Route::Audit
            | Route::Stats(_)
            | Route::Console(_) => Class::Ops,
        }
    }

    /// The route behind `Authorization: Bearer`, with the least role it
    /// needs; `None` for the public and operations routes, and for the
    /// console, which checks its session's role per page and action.
    pub fn needs_role(&self) -> Option<crate::config::Role> {
        use crate::config::Role;
        match self {
            // A viewer reads everything under /v1/admin and changes nothing.
            Route::ListReleases | Route::Job(_) | Route::Audit | Route::Stats(_) => {
                Some(Role::Viewer)
            }
            Route::Upload { .. }
            | Route::Publish
            | Route::PatchRelease { .. }
            | Route::Notify { .. }
            | Route::CancelJob(_) => Some(Role::Publisher),
            _ => None,
        }
    }

    /// The route's names, by [`Route::index`]: metric labels and the
    /// request log.
    pub const NAMES: [&'static str; 20] = [
        "check",
        "batch",
        "report",
        "artifact",
        "keys",
        "subscribe",
        "unsubscribe",
        "openapi",
        "healthz",
        "readyz",
        "metrics",
        "admin.upload",
        "admin.publish",
        "admin.releases",
        "admin.patch",
        "admin.notify",
        "admin.job",
        "admin.audit",
        "admin.stats",
        "console",
    ];

    /// The route's place in [`Route::NAMES`] (and in per-route counters).
    pub fn index(&self) -> usize {
        match self {
            Route::Check { .. } => 0,
            Route::Batch => 1,
            Route::Report => 2,
            Route::Artifact { .. } => 3,
            Route::Keys | Route::KeysAt(_) => 4,
            Route::Subscribe => 5,
            Route::Unsubscribe => 6,
            Route::OpenApi => 7,
            Route::Health => 8,
            Route::Ready => 9,
            Route::Metrics => 10,
            Route::Upload { .. } => 11,
            Route::Publish => 12,
            Route::ListReleases => 13,
            Route::PatchRelease { .. } => 14,
            Route::Notify { .. } => 15,
            Route::Job(_) | Route::CancelJob(_) => 16,
            Route::Audit => 17,
            Route::Stats(_) => 18,
            Route::Console(_) => 19,
        }
    }

    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Answered before the call returns, from memory: such a request takes
    /// a token (public routes) but no slot, and never reads a body.
    pub fn immediate(&self) -> bool {
        matches!(
            self,
            Route::Check { .. }
                | Route::Keys
                | Route::KeysAt(_)
                | Route::OpenApi
                | Route::Health
                | Route::Metrics
        )
    }

    /// The same route, owning its parameters, for a handler that outlives
    /// the request head.
    pub fn into_owned(self) -> Route<'static> {
        let o = |c: Cow<'a, str>| Cow::Owned(c.into_owned());
        match self {
            Route::Check { product, version } => Route::Check {
                product: o(product),
                version: o(version),
            },
            Route::Artifact {
                product,
                version,
                head,
            } => Route::Artifact {
                product: o(product),
                version: o(version),
                head,
            },
            Route::KeysAt(v) => Route::KeysAt(o(v)),
            Route::Upload { product, version } => Route::Upload {
                product: o(product),
                version: o(version),
            },
            Route::PatchRelease { product, version } => Route::PatchRelease {
                product: o(product),
                version: o(version),
            },
            Route::Notify { product, version } => Route::Notify {
                product: o(product),
                version: o(version),
            },
            Route::Job(id) => Route::Job(o(id)),
            Route::CancelJob(id) => Route::CancelJob(o(id)),
            Route::Stats(p) => Route::Stats(o(p)),
            Route::Console(p) => Route::Console(o(p)),
            Route::Batch => Route::Batch,
            Route::Report => Route::Report,
            Route::Keys => Route::Keys,
            Route::Subscribe => Route::Subscribe,
            Route::Unsubscribe => Route::Unsubscribe,
            Route::OpenApi => Route::OpenApi,
            Route::Health => Route::Health,
            Route::Ready => Route::Ready,
            Route::Metrics => Route::Metrics,
            Route::Publish => Route::Publish,
            Route::ListReleases => Route::ListReleases,
            Route::Audit => Route::Audit,
        }
    }
}

/// A path parameter: one non-empty segment.
fn param(s: &str) -> bool {
    !s.is_empty()
}

/// A segment percent-decoded, as URLs allow (`WH%2D1000XM5` names
/// `WH-1000XM5`); borrowed when there is nothing to decode, kept as sent
/// when it does not decode to UTF-8 (the handler's validation names it).
pub(crate) fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_checks_fast_path_agrees_with_the_general_parser(
            parts in prop::collection::vec(
                prop::sample::select(vec!["/", "v1", "updates", "/v1/updates/", "P", "1.0.0", "%2D", "%", "x", ""]),
                0..8,
            ),
            method in prop::sample::select(vec![Method::GET, Method::HEAD, Method::POST, Method::DELETE]),
        ) {
            let path = parts.concat();
            prop_assert_eq!(Route::parse(&method, &path), Route::parse_any(&method, &path), "{}", path);
        }
    }

    fn route(m: Method, path: &str) -> Result<Route<'_>, NoRoute> {
        Route::parse(&m, path)
    }

    #[test]
    fn every_endpoint_has_one_route() {
        let c = |p: &'static str, v: &'static str| Route::Check {
            product: p.into(),
            version: v.into(),
        };
        assert_eq!(
            route(Method::GET, "/v1/updates/P/1.0.0"),
            Ok(c("P", "1.0.0"))
        );
        assert_eq!(
            route(Method::HEAD, "/v1/updates/P/1.0.0"),
            Ok(c("P", "1.0.0"))
        );
        assert_eq!(route(Method::POST, "/v1/updates"), Ok(Route::Batch));
        assert_eq!(route(Method::POST, "/v1/reports"), Ok(Route::Report));
        assert!(matches!(
            route(Method::HEAD, "/v1/artifacts/P/1.0.0"),
            Ok(Route::Artifact { head: true, .. })
        ));
        assert_eq!(route(Method::GET, "/v1/keys"), Ok(Route::Keys));
        assert_eq!(
            route(Method::GET, "/v1/keys/3"),
            Ok(Route::KeysAt("3".into()))
        );
        assert_eq!(route(Method::GET, "/healthz"), Ok(Route::Health));
        assert_eq!(
            route(Method::GET, "/v1/admin/releases"),
            Ok(Route::ListReleases)
        );
        assert_eq!(
            route(Method::POST, "/v1/admin/releases"),
            Ok(Route::Publish)
        );
        assert!(matches!(
            route(Method::POST, "/v1/admin/releases/P/1.0.0/notify"),
            Ok(Route::Notify { .. })
        ));
        assert_eq!(
            route(Method::DELETE, "/v1/admin/jobs/ab"),
            Ok(Route::CancelJob("ab".into()))
        );
    }

    #[test]
    fn wrong_methods_say_which_ones_the_path_takes() {
        assert_eq!(
            route(Method::DELETE, "/v1/updates/P/1.0.0"),
            Err(NoRoute::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(
            route(Method::GET, "/v1/updates"),
            Err(NoRoute::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(Method::PUT, "/v1/admin/releases"),
            Err(NoRoute::MethodNotAllowed {
                allow: "GET, HEAD, POST"
            })
        );
    }

    #[test]
    fn near_misses_are_not_found() {
        for path in [
            "",
            "/",
            "/v1",
            "/v1/updates/P",
            "/v1/updates/P/",
            "/v1/updates//1.0.0",
            "/v1/updates/P/1.0.0/x",
            "/v1/updates/",
            "/v1/adminx/releases",
            "/v1/admin",
            "/v1/admin/releases/P",
            "/healthz/",
            "v1/keys",
            "/v1/a/b/c/d/e/f/g/h",
        ] {
            assert_eq!(route(Method::GET, path), Err(NoRoute::NotFound), "{path:?}");
        }
    }

    #[test]
    fn segments_are_percent_decoded_only_when_needed() {
        let Ok(Route::Check { product, version }) = route(Method::GET, "/v1/updates/WH%2D1/1.0.0")
        else {
            panic!()
        };
        assert_eq!((product.as_ref(), version.as_ref()), ("WH-1", "1.0.0"));
        assert!(matches!(version, Cow::Borrowed(_)));
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(
            decode("%ff"),
            "%ff",
            "not UTF-8: kept for validation to name"
        );
        assert_eq!(decode("%2F"), "/");
    }

    #[test]
    fn the_console_is_one_ops_route_that_routes_its_own_pages() {
        for (m, path, page) in [
            (Method::GET, "/console", ""),
            (Method::GET, "/console/", "/"),
            (Method::POST, "/console/login", "/login"),
            (Method::PUT, "/console/upload/P/1.0.0", "/upload/P/1.0.0"),
            (Method::GET, "/console/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/h"),
        ] {
            let r = route(m, path).unwrap();
            assert_eq!(r, Route::Console(page.into()), "{path}");
            assert_eq!(
                (r.class(), r.needs_role(), r.name()),
                (Class::Ops, None, "console")
            );
            assert!(!r.immediate());
        }
        for path in ["/consoles", "/console.css", "/v1/console"] {
            assert_eq!(route(Method::GET, path), Err(NoRoute::NotFound), "{path}");
        }
    }

    #[test]
    fn admin_routes_are_ops_and_say_the_role_they_need() {
        use crate::config::Role;
        let publish = route(Method::POST, "/v1/admin/releases").unwrap();
        assert_eq!(publish.class(), Class::Ops);
        assert_eq!(publish.needs_role(), Some(Role::Publisher));
        let audit = route(Method::GET, "/v1/admin/audit").unwrap();
        assert_eq!(audit.needs_role(), Some(Role::Viewer));
        let check = route(Method::GET, "/v1/updates/P/1.0.0").unwrap();
        assert_eq!((check.class(), check.needs_role()), (Class::Public, None));
        assert_eq!(route(Method::GET, "/readyz").unwrap().class(), Class::Ops);
    }
}
