//! The web console (issue 19), against the real server in process:
//!
//! - in a real browser: headless Chromium from Debian's `chromium` and
//!   `chromium-driver`, driven over WebDriver with fantoccini. A release
//!   engineer signs in, sees a product, sets the rollout, pauses, resumes,
//!   watches a bad release pause itself, publishes by upload and notifies
//!   with a dry run; after each step the public check API agrees. Every
//!   page is screenshotted into `target/console-screenshots/`. Without
//!   Chromium the test FAILS and says how to install it.
//! - over plain HTTP (reqwest): the cookie's flags and scope, CSRF, roles,
//!   stale and forged cookies, no cookie from any public endpoint, and
//!   sessions shared through Redis.

use crate::support;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::app::{
    firmware, sign_with, spawn_app_sharing_keys, spawn_app_with, Rel, TestApp, ADMIN_TOKEN,
    PUBLISHER_TOKEN, VIEWER_TOKEN,
};

const INSECURE: &str = "[console]\ninsecure_cookies = true\n";

// ---------------------------------------------------------------- browser --

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first of `names` found on PATH (or named by `env`).
fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

const INSTALL: &str = "headless Chromium is needed for the console's browser tests: \
    `apt-get install -y chromium chromium-driver` (Debian; .ci/run installs them), \
    or set CHROME and CHROMEDRIVER to the binaries";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let bin = find_binary("CHROMEDRIVER", &["chromedriver"])
            .unwrap_or_else(|| panic!("no chromedriver found. {INSTALL}"));
        let port = free_port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}. {INSTALL}", bin.display()));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/status", driver.url)).await {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A fresh headless Chromium session with its own profile directory.
    async fn browser(&self, profile: &Path) -> Client {
        let chrome = find_binary("CHROME", &["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("no chromium found. {INSTALL}"));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}. {INSTALL}"))
    }
}

fn screenshot_dir() -> PathBuf {
    // The target directory: CARGO_TARGET_TMPDIR is <target>/tmp.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// The page's visible text.
async fn text(b: &Client) -> String {
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls until `css` holds `want` (htmx swaps it in by itself).
async fn wait_text(b: &Client, css: &str, want: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(el) = b.find(Locator::Css(css)).await {
            if el.text().await.unwrap_or_default().contains(want) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {want:?}; the page says: {}",
            text(b).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the button whose text is `label` (visible text labels, as the
/// design asks).
async fn press(b: &Client, label: &str) {
    let xpath = format!("//button[normalize-space(.)='{label}']");
    b.find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no button {label:?}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The field labelled `label`: the label exists and names its control.
async fn field(b: &Client, label: &str) -> fantoccini::elements::Element {
    let xpath = format!("//label[normalize-space(.)='{label}']");
    let l = b
        .find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no label {label:?}: {e}"));
    let id = l
        .attr("for")
        .await
        .unwrap()
        .expect("the label names its control");
    b.find(Locator::Id(&id)).await.unwrap()
}

/// What a check from 127.0.0.1 is offered now.
async fn offered(app: &TestApp, product: &str, version: &str) -> Option<String> {
    let v = app.check(product, version).await;
    v["update"]["version"].as_str().map(str::to_owned)
}

/// Polls the public check until it offers `want` (the catalog changes at
/// once on this instance; the poll only absorbs scheduling).
async fn check_agrees(app: &TestApp, product: &str, from: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = offered(app, product, from).await;
        if got.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the check of {product} {from} offers {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_engineer_steers_a_rollout_in_the_browser() {
    // A quick gate evaluation, so the bad release pauses itself within seconds.
    let app = spawn_app_with(&format!(
        "{INSECURE}[rollout]\nevaluate_interval_secs = 1\nflush_interval_secs = 1\n"
    ))
    .await;
    let fw = firmware(40_000, 1);
    app.publish(&Rel::new("Buds", "1.0.0", 1, &fw), 100.0).await;
    let fw11 = firmware(50_000, 2);
    app.publish(&Rel::new("Buds", "1.1.0", 2, &fw11), 0.0).await;
    // Some adoption for the chart: checks from a few installed versions.
    for (i, v) in ["1.0.0", "1.0.0", "1.1.0", "0.9.0"].iter().enumerate() {
        let c = app.client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8 + 1)));
        let r = c
            .get(format!("{}/v1/updates/Buds/{v}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Four weeks of adoption, as the server's flushes would have left it:
    // 1.1.0 taking over from 1.0.0, a few stragglers on 0.9.0.
    let today = firmcast::rollout::day::day_of(chrono::Utc::now());
    let mut adoption = Vec::new();
    for age in 0..28u32 {
        let d = today - age;
        let shift = u64::from(27 - age.min(27));
        for (version, active) in [
            ("0.9.0", 300 - 10 * shift),
            ("1.0.0", 2_400 - 60 * shift),
            (
                "1.1.0",
                if age < 20 {
                    120 * (20 - u64::from(age))
                } else {
                    0
                },
            ),
        ] {
            adoption.push(firmcast::stats::AdoptionCount {
                day: d,
                product: "Buds".into(),
                channel: "stable".into(),
                version: version.into(),
                active,
                new: active / 10,
            });
        }
    }
    let flush = firmcast::stats::Flush {
        id: "console-test".into(),
        adoption,
        reports: Vec::new(),
    };
    app.api.rollout.stats().add(&flush).await.unwrap();
    // A push subscriber for the dry run to count.
    let r = app
        .client
        .post(format!("{}/v1/push/subscriptions", app.url))
        .json(&json!({"provider": "fcm", "token": "dK3x000001:APA91bH-console_test.1", "products": ["Buds"], "locale": "en"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let b = driver.browser(profile.path()).await;
    let url = &app.url;

    // Sign in: the console sends a stranger to the sign-in page.
    b.goto(&format!("{url}/console")).await.unwrap();
    assert!(b
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));
    shot(&b, "01-sign-in").await;
    field(&b, "Admin token")
        .await
        .send_keys(PUBLISHER_TOKEN)
        .await
        .unwrap();
    press(&b, "Sign in").await;

    // See the product: its channels, the live release, the chart.
    wait_text(&b, "h1", "Products", Duration::from_secs(5)).await;
    let page = text(&b).await;
    assert!(page.contains("Buds") && page.contains("1.1.0"), "{page}");
    assert!(page.contains("release-bot"), "who is signed in: {page}");
    b.find(Locator::Css("svg.chart"))
        .await
        .expect("the adoption chart");
    shot(&b, "02-products").await;
    b.find(Locator::LinkText("Buds"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&b, "h1", "Buds", Duration::from_secs(5)).await;
    shot(&b, "03-product").await;

    // The release at 0%: nobody on 1.0.0 is offered it.
    b.goto(&format!("{url}/console/releases/Buds/1.1.0"))
        .await
        .unwrap();
    wait_text(&b, "h1", "Buds 1.1.0", Duration::from_secs(5)).await;
    check_agrees(&app, "Buds", "1.0.0", None).await;

    // Set the rollout to 100%.
    let rollout = field(&b, "Rollout %").await;
    rollout.clear().await.unwrap();
    rollout.send_keys("100").await.unwrap();
    press(&b, "Set rollout").await;
    wait_text(&b, ".flash", "Rollout set.", Duration::from_secs(5)).await;
    wait_text(&b, "#rollout-now", "100%", Duration::from_secs(5)).await;
    check_agrees(&app, "Buds", "1.0.0", Some("1.1.0")).await;
    shot(&b, "04-release").await;

    // Pause, then resume.
    press(&b, "Pause").await;
    wait_text(&b, "#state", "paused", Duration::from_secs(5)).await;
    check_agrees(&app, "Buds", "1.0.0", None).await;
    assert!(text(&b).await.contains("paused by release-bot"));
    shot(&b, "05-release-paused").await;
    press(&b, "Resume").await;
    wait_text(&b, "#state", "live", Duration::from_secs(5)).await;
    check_agrees(&app, "Buds", "1.0.0", Some("1.1.0")).await;

    // A bad release pauses itself; the open page shows it, with the reason,
    // without a reload (htmx polls the status panel).
    let gate = field(&b, "Minimum reports").await;
    gate.clear().await.unwrap();
    gate.send_keys("3").await.unwrap();
    press(&b, "Set gate").await;
    wait_text(&b, ".flash", "Health gate set.", Duration::from_secs(5)).await;
    for i in 0..3u8 {
        let c = app.client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 2, i + 1)));
        let r = c
            .post(format!("{url}/v1/reports"))
            .json(&json!({"product": "Buds", "from": "1.0.0", "to": "1.1.0",
                "outcome": "failed", "stage": "install", "code": "E_FLASH"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    wait_text(&b, "#state", "paused by its gate", Duration::from_secs(30)).await;
    wait_text(&b, "#pause-reason", "3", Duration::from_secs(5)).await;
    check_agrees(&app, "Buds", "1.0.0", None).await;
    assert!(
        text(&b).await.contains("E_FLASH"),
        "top failure codes shown"
    );
    shot(&b, "06-release-paused-by-gate").await;
    // htmx swapped the panel in several times: nothing it did at run time
    // broke the CSP (console.js counts violations on the page).
    let violations = b
        .execute(
            "return document.documentElement.dataset.cspViolations || '0'",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(violations, json!("0"));
    // Resuming is a person's decision (the panel now offers it); the gate
    // then counts afresh.
    press(&b, "Resume").await;
    wait_text(&b, "#state", "live", Duration::from_secs(5)).await;
    check_agrees(&app, "Buds", "1.0.0", Some("1.1.0")).await;

    // Publish 1.2.0 by upload from the browser.
    let files = tempfile::tempdir().unwrap();
    let fw12 = firmware(300_000, 3);
    let env = sign_with(&app.release_key, &Rel::new("Buds", "1.2.0", 3, &fw12));
    let release_file = files.path().join("Buds-1.2.0.release.json");
    let firmware_file = files.path().join("Buds-1.2.0.bin");
    std::fs::write(&release_file, env.to_pretty_json()).unwrap();
    std::fs::write(&firmware_file, &fw12).unwrap();
    b.find(Locator::LinkText("Publish"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&b, "h1", "Publish a release", Duration::from_secs(5)).await;
    field(&b, "Signed release file")
        .await
        .send_keys(release_file.to_str().unwrap())
        .await
        .unwrap();
    wait_text(
        &b,
        "#release-summary",
        "Buds 1.2.0 (seq 3",
        Duration::from_secs(5),
    )
    .await;
    field(&b, "Firmware file")
        .await
        .send_keys(firmware_file.to_str().unwrap())
        .await
        .unwrap();
    press(&b, "Upload and publish").await;
    wait_text(&b, "#verdict", "Signature: valid", Duration::from_secs(20)).await;
    let verdict = b
        .find(Locator::Css("#verdict"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(verdict.contains("Digest: matches"), "{verdict}");
    assert!(
        verdict.contains(&env.signatures[0].keyid[..16]),
        "{verdict}"
    );
    let progress = b
        .execute(
            "return document.getElementById('upload-progress').value",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(progress, json!(100), "the progress bar ends full");
    check_agrees(&app, "Buds", "1.0.0", Some("1.2.0")).await;
    shot(&b, "07-publish").await;

    // Notify with a dry run: the count first, nothing sent.
    b.find(Locator::LinkText("Open the release"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&b, "h1", "Buds 1.2.0", Duration::from_secs(5)).await;
    press(&b, "Notify").await;
    wait_text(
        &b,
        "#notify",
        "1 subscriber would be notified",
        Duration::from_secs(5),
    )
    .await;
    b.find(Locator::XPath(
        "//button[normalize-space(.)='Send to 1 subscriber']",
    ))
    .await
    .expect("the send button, after the count");
    let jobs = app.api.push.list_jobs(10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(
        jobs[0].dry_run && jobs[0].counters.total == 1,
        "{:?}",
        jobs[0]
    );
    assert_eq!(jobs[0].counters.sent, 0, "a dry run sends nothing");
    check_agrees(&app, "Buds", "1.0.0", Some("1.2.0")).await;
    shot(&b, "08-notify-dry-run").await;

    // The other pages.
    for (link, name, h1, want) in [
        ("Jobs", "09-jobs", "Push jobs", "dry run"),
        ("Audit", "10-audit", "Audit log", "release.publish"),
        ("Keys", "11-keys", "Keys", "Keyset version 1"),
    ] {
        b.find(Locator::LinkText(link))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text(&b, "h1", h1, Duration::from_secs(5)).await;
        assert!(text(&b).await.contains(want), "{link}: {want}");
        shot(&b, name).await;
    }
    let audit = {
        b.goto(&format!("{url}/console/audit?actor=release-bot"))
            .await
            .unwrap();
        text(&b).await
    };
    for action in [
        "console.sign_in",
        "release.patch",
        "release.publish",
        "release.notify",
    ] {
        assert!(audit.contains(action), "{action} audited: {audit}");
    }

    // A phone's width: the release page still reads (no sideways scroll).
    b.set_window_size(390, 844).await.unwrap();
    b.goto(&format!("{url}/console/releases/Buds/1.2.0"))
        .await
        .unwrap();
    let overflow = b
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        overflow.as_i64().unwrap_or(99) <= 1,
        "sideways scroll at phone width: {overflow}"
    );
    shot(&b, "12-release-phone").await;
    b.set_window_size(1280, 1000).await.unwrap();

    // The keyboard alone reaches the first control: the skip link.
    b.goto(&format!("{url}/console/products")).await.unwrap();
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .send_keys(&char::from(fantoccini::key::Key::Tab).to_string())
        .await
        .unwrap();
    let active = b.active_element().await.unwrap().text().await.unwrap();
    assert_eq!(active, "Skip to content");

    // Sign out: the session is gone on the server.
    press(&b, "Sign out").await;
    wait_text(&b, "h1", "Sign in", Duration::from_secs(5)).await;
    b.goto(&format!("{url}/console/products")).await.unwrap();
    assert!(b
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));

    b.close().await.unwrap();
    app.stop().await;
}

// ------------------------------------------------------------ plain HTTP --

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A signed-in session: its cookie header and CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &TestApp, token: &str) -> Signed {
    let c = no_redirects();
    let r = c
        .post(format!("{}/console/login", app.url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = c
        .get(format!("{}/console/publish", app.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the sign-out form carries the CSRF token")
        .to_owned();
    Signed { cookie, csrf }
}

async fn post_form(
    app: &TestApp,
    s: &Signed,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    no_redirects()
        .post(format!("{}{path}", app.url))
        .header("cookie", &s.cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn released(app: &TestApp) {
    let fw = firmware(1000, 9);
    app.publish(&Rel::new("Case", "2.0.0", 1, &fw), 100.0).await;
}

#[tokio::test]
async fn sign_in_sets_one_strict_cookie_under_console_and_pages_are_locked_down() {
    let app = spawn_app_with("").await; // production defaults: Secure cookies
    let c = no_redirects();
    let r = c
        .post(format!("{}/console/login", app.url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/products");
    let cookies: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let (pair, attrs) = cookies[0].split_once("; ").unwrap();
    let (name, id) = pair.split_once('=').unwrap();
    assert_eq!(name, "firmcast_session");
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(attrs, "Path=/console; HttpOnly; SameSite=Strict; Secure");
    let page = c
        .get(format!("{}/console/products", app.url))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline script or style"
    );
    let handler = html.split(" on").skip(1).find(|rest| {
        let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(
        handler.is_none(),
        "an inline handler: on{}",
        handler.unwrap_or("")
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_tokens_are_refused_and_throttled_like_bearer_tokens() {
    let app = spawn_app_with("").await;
    let c = no_redirects();
    for _ in 0..10 {
        let r = c
            .post(format!("{}/console/login", app.url))
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("set-cookie").is_none());
        assert!(r.text().await.unwrap().contains("not configured"));
    }
    let r = c
        .post(format!("{}/console/login", app.url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the one throttle: even the right token waits"
    );
    let r = c
        .get(format!("{}/v1/admin/audit", app.url))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "and the admin API counts the same failures"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_state_change_without_the_csrf_token_is_refused() {
    let app = spawn_app_with(INSECURE).await;
    released(&app).await;
    let s = sign_in(&app, PUBLISHER_TOKEN).await;
    let pause = "/console/releases/Case/2.0.0/pause";
    for form in [vec![], vec![("csrf", "0".repeat(64))]] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = post_form(&app, &s, pause, &form).await;
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("CSRF"));
    }
    assert_eq!(
        offered(&app, "Case", "1.0.0").await.as_deref(),
        Some("2.0.0")
    );
    // Another site's request is refused even with the token.
    let r = no_redirects()
        .post(format!("{}{pause}", app.url))
        .header("cookie", &s.cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", s.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Uploads and publishes carry it as a header.
    let r = no_redirects()
        .put(format!("{}/console/upload/Case/2.1.0", app.url))
        .header("cookie", &s.cookie)
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = no_redirects()
        .post(format!("{}/console/publish", app.url))
        .header("cookie", &s.cookie)
        .json(&json!({"release": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // With the token it acts.
    let r = post_form(&app, &s, pause, &[("csrf", &s.csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(offered(&app, "Case", "1.0.0").await, None);
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_sees_everything_and_changes_nothing() {
    let app = spawn_app_with(INSECURE).await;
    released(&app).await;
    let s = sign_in(&app, VIEWER_TOKEN).await;
    let page = no_redirects()
        .get(format!("{}/console/releases/Case/2.0.0", app.url))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Case 2.0.0") && page.contains("Signed manifest"));
    for hidden in [
        "Set rollout",
        "Pause",
        "Yank",
        "Notify</button>",
        "Set ramp",
    ] {
        assert!(!page.contains(hidden), "a viewer sees no {hidden:?}");
    }
    for action in ["pause", "rollout", "yank", "notify", "ramp_stop"] {
        let r = post_form(
            &app,
            &s,
            &format!("/console/releases/Case/2.0.0/{action}"),
            &[("csrf", &s.csrf), ("rollout", "0"), ("confirm", "yes")],
        )
        .await;
        assert_eq!(r.status(), 403, "{action}");
    }
    let r = no_redirects()
        .put(format!("{}/console/upload/Case/2.1.0", app.url))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        offered(&app, "Case", "1.0.0").await.as_deref(),
        Some("2.0.0")
    );
    let jobs = app.api.push.list_jobs(10).await.unwrap();
    assert!(jobs.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn stale_and_forged_cookies_are_refused() {
    let app = spawn_app_with(INSECURE).await;
    released(&app).await;
    let s = sign_in(&app, PUBLISHER_TOKEN).await;
    let forged = format!("firmcast_session={}", "ab".repeat(32));
    let stale = {
        let old = sign_in(&app, PUBLISHER_TOKEN).await;
        let r = post_form(&app, &old, "/console/logout", &[("csrf", &old.csrf)]).await;
        assert_eq!(r.status(), 303);
        old.cookie
    };
    for cookie in [
        forged.as_str(),
        stale.as_str(),
        "firmcast_session=not-an-id",
    ] {
        let r = no_redirects()
            .get(format!("{}/console/products", app.url))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{cookie}");
        assert_eq!(r.headers()["location"], "/console/login");
        let clear = r.headers()["set-cookie"].to_str().unwrap();
        assert!(clear.starts_with("firmcast_session=; Max-Age=0"), "{clear}");
        let r = no_redirects()
            .post(format!("{}/console/releases/Case/2.0.0/pause", app.url))
            .header("cookie", cookie)
            .form(&[("csrf", s.csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{cookie}");
    }
    // A poll of an unchanged status panel swaps nothing.
    let panel = no_redirects()
        .get(format!("{}/console/releases/Case/2.0.0/status", app.url))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let seen = panel
        .split("status?seen=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let r = no_redirects()
        .get(format!(
            "{}/console/releases/Case/2.0.0/status?seen={seen}",
            app.url
        ))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // htmx polls stop (286) instead of swapping the sign-in page in.
    let r = no_redirects()
        .get(format!("{}/console/releases/Case/2.0.0/status", app.url))
        .header("cookie", &forged)
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 286);
    assert_eq!(
        offered(&app, "Case", "1.0.0").await.as_deref(),
        Some("2.0.0")
    );
    // The live session still works.
    let r = post_form(
        &app,
        &s,
        "/console/releases/Case/2.0.0/pause",
        &[("csrf", &s.csrf)],
    )
    .await;
    assert_eq!(r.status(), 303);
    app.stop().await;
}

#[tokio::test]
async fn no_public_endpoint_sets_a_cookie_only_the_console_does() {
    let app = spawn_app_with(INSECURE).await;
    released(&app).await;
    let c = no_redirects();
    let u = &app.url;
    let token = "dK3x000002:APA91bH-console_test.2";
    let requests = [
        c.get(format!("{u}/v1/updates/Case/1.0.0")),
        c.post(format!("{u}/v1/updates"))
            .json(&json!({"items": [{"product": "Case", "version": "1.0.0"}]})),
        c.get(format!("{u}/v1/artifacts/Case/2.0.0")),
        c.get(format!("{u}/v1/keys")),
        c.get(format!("{u}/v1/openapi.yaml")),
        c.post(format!("{u}/v1/reports")).json(
            &json!({"product": "Case", "from": "1.0.0", "to": "2.0.0", "outcome": "installed"}),
        ),
        c.post(format!("{u}/v1/push/subscriptions"))
            .json(&json!({"provider": "fcm", "token": token, "products": ["Case"]})),
        c.post(format!("{u}/v1/push/unsubscribe"))
            .json(&json!({"provider": "fcm", "token": token})),
        c.get(format!("{u}/healthz")),
        c.get(format!("{u}/readyz")),
        c.get(format!("{u}/metrics")),
        c.get(format!("{u}/v1/admin/releases"))
            .bearer_auth(ADMIN_TOKEN),
        c.get(format!("{u}/v1/nothing-here")),
        // The console's own pages set none until someone signs in.
        c.get(format!("{u}/console/login")),
        c.get(format!("{u}/console/products")),
    ];
    for req in requests {
        let r = req.send().await.unwrap();
        assert!(
            r.headers().get("set-cookie").is_none(),
            "{} {} set a cookie",
            r.url(),
            r.status()
        );
    }
    let r = c
        .post(format!("{u}/console/login"))
        .form(&[("token", VIEWER_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Path=/console;"), "{cookie}");
    app.stop().await;
}

#[tokio::test]
async fn sessions_live_in_redis_so_any_instance_serves_them() {
    let prefix = support::state_suite::unique_prefix();
    let keys = support::state_suite::RedisKeys::new(&prefix);
    let config = format!(
        "{INSECURE}[state]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"\n",
        keys.url
    );
    let a = spawn_app_with(&config).await;
    let b = spawn_app_sharing_keys(&a, &config).await;
    let s = sign_in(&a, ADMIN_TOKEN).await;
    let id = s.cookie.split_once('=').unwrap().1.to_owned();
    let page = |app: &TestApp| {
        no_redirects()
            .get(format!("{}/console/keys", app.url))
            .header("cookie", &s.cookie)
            .send()
    };
    assert_eq!(
        page(&b).await.unwrap().status(),
        200,
        "signed in on a, served by b"
    );
    // Kept under the hash of the id, with the idle time as its TTL.
    let hashed = firmcast_signing::digest::sha256_hex(id.as_bytes());
    let key = format!("{prefix}:console:session:{hashed}");
    let mut r = redis::Client::open(keys.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut r).unwrap();
    assert!((28_000..=28_800).contains(&ttl), "ttl {ttl}");
    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut r)
        .unwrap();
    for k in &all {
        let v: Option<String> = redis::cmd("GET").arg(k).query(&mut r).unwrap_or(None);
        assert!(
            !k.contains(&id) && !v.unwrap_or_default().contains(&id),
            "the raw id is stored: {k}"
        );
    }
    // Signed out on b: refused on a.
    let out = post_form(&b, &s, "/console/logout", &[("csrf", &s.csrf)]).await;
    assert_eq!(out.status(), 303);
    assert_eq!(page(&a).await.unwrap().status(), 303);
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut r).unwrap();
    assert!(!exists);
    b.stop().await;
    a.stop().await;
}
