//! The OpenAPI document against the real server: schemathesis generates
//! requests for every operation in `docs/openapi.yaml` (served by the server
//! at `/v1/openapi.yaml`) and checks that nothing answers 5xx and that every
//! response matches the document.

use crate::support;

use std::process::Command;
use support::cli::firmcast;
use support::server::spawn_server_with;

fn schemathesis_available() -> bool {
    Command::new("python3")
        .args(["-c", "import schemathesis"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn the_server_matches_its_openapi_document() {
    assert!(
        schemathesis_available(),
        "schemathesis is missing: python3 -m pip install schemathesis (.ci/run does this)"
    );
    // Rate limits off: the fuzzer sends hundreds of requests from one address.
    let server = spawn_server_with("[limits]\nper_ip_rps = 0\n");
    let dir = server.dir.path();

    // One published release, so the examples in the document reach real data.
    let fw = support::app::firmware(64 * 1024, 3);
    std::fs::write(dir.join("fw.bin"), &fw).unwrap();
    firmcast(
        dir,
        &[
            "release",
            "sign",
            "--key",
            "keys/release-1.pem",
            "--product",
            "WH-1000XM5",
            "--version",
            "2.2.0",
            "--seq",
            "1",
            "--file",
            "fw.bin",
            "--notes",
            "en=Better calls.",
            "--out",
            "release.json",
        ],
    )
    .ok();
    firmcast(
        dir,
        &[
            "release",
            "publish",
            "--server",
            &server.url,
            "--release",
            "release.json",
            "--file",
            "fw.bin",
            "--token",
            &server.token,
        ],
    )
    .ok();

    // The served document is the one in the repository.
    let served = reqwest::blocking::get(format!("{}/v1/openapi.yaml", server.url)).unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/yaml");
    let text = served.text().unwrap();
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"),
    )
    .unwrap();
    assert_eq!(text, file);

    let out = Command::new("python3")
        .current_dir(dir)
        .args([
            "-m",
            "schemathesis.cli",
            "run",
            &format!("{}/v1/openapi.yaml", server.url),
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
            "--max-examples",
            "20",
            // CPython 3.11's ast module is not thread-safe; hypothesis parses
            // lambdas with it, so parallel workers crash the coverage phase.
            "--workers",
            "1",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "-H",
            &format!("Authorization: Bearer {}", server.token),
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "schemathesis found problems (see above)"
    );
}
