"""The Python bindings end to end, as an app uses them: a live firmcast
server, the app's own HTTP calls with `requests`, state persisted in a file,
downloads streamed in chunks through the core; and the refusals an app must
see when a mirror serves a rolled-back, frozen or tampered answer."""
import datetime
import hashlib
import json

import pytest
import requests

from conftest import send

APP, HP, BUDS = "FirmcastApp", "WH-1000XM5", "WF-1000XM4"


def run_check(fc, client, items, state):
    check = client.check([fc.CheckItem(product=p, version=v) for p, v in items], state)
    asked = []
    while (req := check.next_request()) is not None:
        asked.append(req)
        check.receive(send(fc, req))
    return check.finish(), asked


def download(fc, client, update, path, stop_after=None):
    """Streams `update` into `path` (resuming what is there) through the core;
    `stop_after` bytes simulates a dropped connection."""
    dl = client.download(update)
    if path.exists():
        dl.resume(path.read_bytes())
    while (req := dl.next_request()) is not None:
        with requests.get(req.url, headers=req.headers, stream=True, timeout=10) as r:
            action = dl.receive_head(r.status_code, dict(r.headers))
            if action == fc.BodyAction.SKIP:
                continue
            with open(path, "wb" if action == fc.BodyAction.RESTART else "ab") as f:
                for chunk in r.iter_content(chunk_size=16384):
                    dl.receive_chunk(chunk)  # before writing: refused bytes never land
                    f.write(chunk)
                    if stop_after is not None and dl.received() >= stop_after:
                        break
        dl.receive_end()
    return dl, dl.finish()


def publish_three(server):
    return {
        APP: server.publish(APP, "1.1.0", 1, 30_000, 1),
        HP: server.publish(HP, "2.2.0", 1, 200_000, 2),
        BUDS: server.publish(BUDS, "3.1.0", 1, 1000, 3),
    }


def test_app_and_two_devices_in_one_call_download_verify_persist(fc, server, tmp_path):
    fws = publish_three(server)
    client = fc.FirmcastClient(server.url, server.root_pem)
    state_file = tmp_path / "state.json"

    items = [(APP, "1.0.0"), (HP, "2.0.0"), (BUDS, "3.1.0")]
    result, asked = run_check(fc, client, items, "")
    assert [r.url[len(server.url):] for r in asked] == ["/v1/keys", "/v1/updates"]
    app, hp, buds = result.items
    assert app.outcome.is_UPDATE_AVAILABLE() and app.outcome.update.version == "1.1.0"
    assert hp.outcome.is_UPDATE_AVAILABLE()
    update = hp.outcome.update
    assert (update.product, update.version, update.installed, update.seq) == (HP, "2.2.0", "2.0.0", 1)
    assert update.size == 200_000 and update.sha256 == hashlib.sha256(fws[HP]).hexdigest()
    assert buds.outcome.is_UP_TO_DATE() and buds.latest_seq == 1
    state_file.write_text(result.state)
    saved = json.loads(state_file.read_text())
    assert saved["seq"] == {APP: 1, HP: 1}
    assert saved["keyset"]["payloadType"] == "application/vnd.firmcast.keyset+json"

    # The download breaks off, then resumes with Range where it stopped.
    part = tmp_path / "hp.part"
    with pytest.raises(fc.ClientError.Interrupted) as e:
        download(fc, client, update, part, stop_after=50_000)
    assert "keep the file and resume later" in e.value.message
    kept = part.stat().st_size
    assert 50_000 <= kept < 200_000
    dl, verified = download(fc, client, update, part)
    assert verified.sha256 == update.sha256 and verified.size == 200_000
    assert part.read_bytes() == fws[HP]
    assert dl.failure_report() is None

    # The persisted state carries over: the held keyset, no second update.
    result, _ = run_check(fc, client, [(HP, "2.2.0")], state_file.read_text())
    assert result.items[0].outcome.is_UP_TO_DATE()


def days_since_epoch():
    return (datetime.datetime.now(datetime.timezone.utc).date() - datetime.date(1970, 1, 1)).days


def test_the_server_day_is_kept_and_echoed_as_last_day(fc, server):
    """Needs the server's `day` in check answers (DESIGN.md, Rollout intelligence)."""
    publish_three(server)
    client = fc.FirmcastClient(server.url, server.root_pem)
    before = days_since_epoch()
    result, _ = run_check(fc, client, [(APP, "1.0.0"), (HP, "2.0.0")], "")
    assert before <= (result.day or 0) <= days_since_epoch(), result.day
    assert json.loads(result.state)["last_day"] == {APP: result.day, HP: result.day}
    _, asked = run_check(fc, client, [(APP, "1.0.0"), (HP, "2.0.0")], result.state)
    sent = json.loads(bytes(asked[-1].body))
    assert [i["last_day"] for i in sent["items"]] == [result.day, result.day]


def test_outcome_reports_are_accepted(fc, server, tmp_path):
    """Needs the server's POST /v1/reports (DESIGN.md, Rollout intelligence)."""
    publish_three(server)
    client = fc.FirmcastClient(server.url, server.root_pem)
    result, _ = run_check(fc, client, [(HP, "2.0.0")], "")
    update = result.items[0].outcome.update
    download(fc, client, update, tmp_path / "fw.bin")
    for report in [fc.report_installed(update),
                   fc.report_failed(update, fc.Stage.BOOT, "E42")]:
        req = client.report_request(report)
        assert json.loads(bytes(req.body))["to"] == "2.2.0"
        fc.report_receive(send(fc, req))
    unknown = fc.Report(product=HP, from_version="2.0.0", to_version="9.9.9", outcome=fc.ReportOutcome.INSTALLED())
    with pytest.raises(fc.ClientError.Refused) as e:
        fc.report_receive(send(fc, client.report_request(unknown)))
    assert e.value.status == 404


def record(server, product, version):
    """What the server answers now, as a mirror would store it."""
    keys = requests.get(f"{server.url}/v1/keys", timeout=10).content
    body = {"items": [{"product": product, "version": version, "channel": "stable"}]}
    updates = requests.post(f"{server.url}/v1/updates", json=body, timeout=10).json()
    return keys, updates


def test_a_rolled_back_answer_is_refused(fc, server, replay):
    server.publish(HP, "2.1.0", 1, 1000, 1)
    old_keys, old_updates = record(server, HP, "2.0.0")
    server.publish(HP, "2.2.0", 2, 1000, 2)
    client = fc.FirmcastClient(server.url, server.root_pem)
    result, _ = run_check(fc, client, [(HP, "2.0.0")], "")
    assert result.items[0].outcome.update.seq == 2
    state = result.state

    # Yesterday's answer, every signature valid, replayed by a mirror.
    mirror = replay({"/v1/keys": old_keys, "/v1/updates": json.dumps(old_updates).encode()})
    mirrored = fc.FirmcastClient(mirror, server.root_pem)
    result, _ = run_check(fc, mirrored, [(HP, "2.0.0")], state)
    outcome = result.items[0].outcome
    assert outcome.is_FAILED() and outcome.kind == fc.ErrorKind.ROLLBACK, outcome
    assert "seq 1" in outcome.message and "seq 2" in outcome.message
    assert json.loads(result.state)["seq"][HP] == 2


def test_a_frozen_answer_is_stale_not_up_to_date(fc, server, replay):
    server.publish(HP, "2.2.0", 1, 1000, 1)
    keys, updates = record(server, HP, "2.2.0")
    expired = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1))
    updates["results"][0]["freshness"] = server.sign_freshness({
        "product": HP, "channel": "stable", "latest_seq": 1, "keyset_version": 1,
        "expires": expired.strftime("%Y-%m-%dT%H:%M:%SZ")})
    mirror = replay({"/v1/keys": keys, "/v1/updates": json.dumps(updates).encode()})
    result, _ = run_check(fc, fc.FirmcastClient(mirror, server.root_pem), [(HP, "2.2.0")], "")
    outcome = result.items[0].outcome
    assert outcome.is_FAILED() and outcome.kind == fc.ErrorKind.STALE, outcome


def test_tampered_releases_and_artifacts_are_refused(fc, server, replay, tmp_path):
    fw = server.publish(HP, "2.2.0", 1, 5000, 1)
    keys, updates = record(server, HP, "2.0.0")
    artifact = f"/v1/artifacts/{HP}/2.2.0"

    # A flipped signature byte: the release no longer verifies.
    forged = json.loads(json.dumps(updates))
    sig = forged["results"][0]["update"]["release"]["signatures"][0]
    sig["sig"] = ("B" if sig["sig"][0] == "A" else "A") + sig["sig"][1:]
    mirror = replay({"/v1/keys": keys, "/v1/updates": json.dumps(forged).encode()})
    result, _ = run_check(fc, fc.FirmcastClient(mirror, server.root_pem), [(HP, "2.0.0")], "")
    assert result.items[0].outcome.kind == fc.ErrorKind.BAD_SIGNATURE

    # Genuine answers, flipped artifact bytes: refused after the last chunk.
    flipped = bytes([fw[0] ^ 0x01]) + fw[1:]
    mirror = replay({"/v1/keys": keys, "/v1/updates": json.dumps(updates).encode(), artifact: flipped})
    client = fc.FirmcastClient(mirror, server.root_pem)
    result, _ = run_check(fc, client, [(HP, "2.0.0")], "")
    update = result.items[0].outcome.update
    with pytest.raises(fc.ClientError.DigestMismatch):
        download(fc, client, update, tmp_path / "fw.part")
    session = client.download(update)
    # The failure's report names the stage and code an app sends.
    with pytest.raises(fc.ClientError.DigestMismatch):
        session.resume(flipped)
        session.finish()
    report = session.failure_report()
    assert report.outcome == fc.ReportOutcome.FAILED(stage=fc.Stage.VERIFY, code="digest_mismatch")

    # More bytes than signed: refused before they are written.
    mirror = replay({"/v1/keys": keys, "/v1/updates": json.dumps(updates).encode(), artifact: fw + b"x"})
    client = fc.FirmcastClient(mirror, server.root_pem)
    with pytest.raises(fc.ClientError.TooLarge):
        download(fc, client, update_for(fc, client), tmp_path / "big.part")
    big = tmp_path / "big.part"
    assert not big.exists() or big.stat().st_size <= 5000


def update_for(fc, client):
    result, _ = run_check(fc, client, [(HP, "2.0.0")], "")
    return result.items[0].outcome.update
