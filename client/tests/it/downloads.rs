//! Downloads: the signed bytes and nothing else. Truncated, oversized,
//! tampered, resumed, restarted and redirected bodies, and the reports an
//! app sends for each outcome.

use crate::support::*;
use firmcast_client::{Download, Error, ErrorKind, Outcome, Report, Stage, State, Update};

fn setup(size: usize) -> (Keys, Server, Update, Vec<u8>) {
    let keys = Keys::new(1);
    let mut server = Server::new(&keys);
    let fw = firmware(size, 7);
    server.publish(&keys, P, "2.2.0", 1, fw.clone());
    let update = single(&client(&keys), &server, &State::default(), "2.0.0")
        .unwrap()
        .unwrap();
    (keys, server, update, fw)
}

#[test]
fn the_signed_bytes_arrive_in_chunks_and_verify() {
    let (_, server, update, fw) = setup(100_000);
    let mut file = Vec::new();
    let v = download(&server, &update, &mut file, 4096).unwrap();
    assert_eq!(file, fw);
    assert_eq!((v.size, v.sha256), (update.size, update.sha256));
}

#[test]
fn a_truncated_download_is_interrupted_then_resumes_with_range() {
    let (_, mut server, update, fw) = setup(300_000);
    server.serve = Serve::CutAt(100_000);
    let mut file = Vec::new();
    let e = download(&server, &update, &mut file, 8192).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Interrupted);
    assert!(!e.discard_download(), "keep the bytes");
    assert!(
        e.to_string().contains("stopped at byte 100000 of 300000"),
        "{e}"
    );
    assert_eq!(file, fw[..100_000]);

    server.serve = Serve::Honest;
    server.log.borrow_mut().clear();
    download(&server, &update, &mut file, 8192).unwrap();
    assert_eq!(file, fw);
    let asked = server.log.borrow()[0].headers.clone();
    assert!(
        asked.contains(&("Range".into(), "bytes=100000-".into())),
        "{asked:?}"
    );
}

#[test]
fn a_resumed_download_with_a_bad_prefix_fails_the_digest() {
    let (_, server, update, fw) = setup(50_000);
    let mut file = vec![0u8; 20_000];
    let e = download(&server, &update, &mut file, 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);
    assert!(e.discard_download());
    assert!(
        e.to_string().contains("does not match the signed release"),
        "{e}"
    );
    // Appended, not fetched again: the prefix is ours, the rest the server's.
    assert_eq!(file[20_000..], fw[20_000..]);
}

#[test]
fn a_server_ignoring_the_range_restarts_the_file() {
    let (_, mut server, update, fw) = setup(30_000);
    server.serve = Serve::IgnoreRange;
    let mut file = fw[..10_000].to_vec();
    download(&server, &update, &mut file, 1000).unwrap();
    assert_eq!(file, fw);
}

#[test]
fn more_than_the_signed_size_is_refused() {
    let (_, mut server, update, _) = setup(50_000);
    server.serve = Serve::Extra(1);
    let mut file = Vec::new();
    let e = download(&server, &update, &mut file, 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(
        e.to_string().contains("more than the signed 50000 bytes"),
        "{e}"
    );
    assert!(
        file.len() <= 50_000,
        "no byte past the signed size was handed to the app"
    );
    assert!(e.discard_download());

    // An announced length past the signed size is refused before any byte.
    let mut dl = Download::new(&update);
    dl.next_request().unwrap();
    let e = dl
        .receive_head(200, &[("Content-Length".into(), "50001".into())])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    // A partial file longer than the release is not resumed.
    let mut dl = Download::new(&update);
    assert_eq!(
        dl.resume(&vec![0; 50_001]).unwrap_err().kind(),
        ErrorKind::TooLarge
    );
}

#[test]
fn a_tampered_artifact_fails_the_digest() {
    let (_, mut server, update, fw) = setup(20_000);
    server.releases.get_mut(P).unwrap().fw[12_345] ^= 0x01;
    let mut file = Vec::new();
    let e = download(&server, &update, &mut file, 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DigestMismatch);
    let report = Report::new(&update, Outcome::for_download_error(&e).unwrap());
    assert_eq!(
        report.outcome,
        Outcome::Failed {
            stage: Stage::Verify,
            code: "digest_mismatch".into()
        }
    );
    assert_ne!(file, fw);
}

#[test]
fn redirects_are_followed_and_range_answers_checked() {
    let (_, mut server, update, fw) = setup(10_000);
    server.serve = Serve::Redirect;
    let mut file = Vec::new();
    download(&server, &update, &mut file, 999).unwrap();
    assert_eq!(file, fw);
    assert_eq!(
        paths(&server)[2..],
        [format!("/v1/artifacts/{P}/2.2.0"), format!("/blob/{P}")]
    );

    // A 206 starting elsewhere, or for another total, is refused.
    for range in ["bytes 5-9999/10000", "bytes 10-19/20"] {
        let mut dl = Download::new(&update);
        dl.resume(&fw[..10]).unwrap();
        dl.next_request().unwrap();
        let e = dl
            .receive_head(206, &[("Content-Range".into(), range.into())])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Mismatch, "{range}: {e}");
    }
    let mut dl = Download::new(&update);
    dl.next_request().unwrap();
    let e = dl.receive_head(503, &[]).unwrap_err();
    assert!(matches!(e, Error::Server { status: 503, .. }), "{e}");
    assert_eq!(
        Outcome::for_download_error(&e),
        None,
        "not the release's failure"
    );
}

#[test]
fn reports_are_sent_and_accepted() {
    let (keys, server, update, _) = setup(100);
    let req = Report::new(&update, Outcome::Installed)
        .request(&client(&keys))
        .unwrap();
    assert_eq!(req.url, format!("{BASE}/v1/reports"));
    Report::receive(&server.answer(&req)).unwrap();
}

#[test]
fn the_session_refuses_calls_out_of_order() {
    let (_, _, update, _) = setup(100);
    let mut dl = Download::new(&update);
    assert_eq!(dl.receive_chunk(b"x").unwrap_err().kind(), ErrorKind::Usage);
    assert_eq!(
        dl.receive_head(200, &[]).unwrap_err().kind(),
        ErrorKind::Usage
    );
    dl.next_request().unwrap();
    assert_eq!(dl.resume(b"x").unwrap_err().kind(), ErrorKind::Usage);
}
