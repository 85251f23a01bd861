"""Fixtures for the Python end-to-end tests of the firmcast client bindings.

The generated module (client/bindings/python) is loaded beside the built
cdylib, as an app would ship them; the server is the real `firmcast serve`
binary on a free port, with keys from `firmcast keys init` and releases
signed and published with the CLI. HTTP is the app's own: `requests`.

Environment: FIRMCAST_BIN (the firmcast binary) and FIRMCAST_FFI_LIB (the
built libfirmcast_client_ffi); both default to cargo's debug target dir.
"""
import base64
import hashlib
import http.server
import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINDINGS = ROOT / "client" / "bindings" / "python" / "firmcast_client_ffi.py"


def _target_dir() -> pathlib.Path:
    if os.environ.get("CARGO_TARGET_DIR"):
        return pathlib.Path(os.environ["CARGO_TARGET_DIR"])
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout
    return pathlib.Path(json.loads(out)["target_directory"])


def _built(env: str, name: str) -> pathlib.Path:
    path = pathlib.Path(os.environ.get(env) or _target_dir() / "debug" / name)
    if not path.exists():
        pytest.fail(f"{path} is missing: build it (client/scripts/ci.sh does) or set {env}")
    return path


@pytest.fixture(scope="session")
def fc(tmp_path_factory):
    """The generated bindings module, loaded beside the built library."""
    lib = _built("FIRMCAST_FFI_LIB", "libfirmcast_client_ffi.so")
    pkg = tmp_path_factory.mktemp("bindings")
    shutil.copy(BINDINGS, pkg / BINDINGS.name)
    shutil.copy(lib, pkg / lib.name)
    sys.path.insert(0, str(pkg))
    return importlib.import_module("firmcast_client_ffi")


class Firmcast:
    """A running `firmcast serve` in its own directory, and CLI helpers."""

    def __init__(self, binary: pathlib.Path, workdir: pathlib.Path):
        self.bin = binary
        self.dir = workdir
        self.cli("keys", "init", "--dir", "keys")
        out = self.cli("admin", "token", "--name", "py-test", "--role", "admin")
        self.token = next(l[len("token: "):] for l in out.splitlines() if l.startswith("token: "))
        entry = "[[admin.tokens]]" + out.split("[[admin.tokens]]", 1)[1]
        (workdir / "config.toml").write_text(
            '[server]\nlisten = "127.0.0.1:0"\ndata_dir = "data"\n\n'
            f"{entry}\n[limits]\nper_ip_rps = 0\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--config", "config.toml"],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        self.url = self._wait_for_address()
        self.root_pem = (workdir / "keys" / "root.pub.pem").read_text()

    def _wait_for_address(self) -> str:
        found = []
        reader = threading.Thread(target=self._drain, args=(found,), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"firmcast serve exited with {self.proc.returncode}")
            time.sleep(0.02)
        if not found:
            raise RuntimeError("firmcast serve printed no address within 30 s")
        return found[0]

    def _drain(self, found: list):
        # Keeps reading, so a chatty server never blocks on a full pipe.
        for line in self.proc.stdout:
            if not found and line.startswith("firmcast listening on "):
                found.append(line.strip()[len("firmcast listening on "):])

    def cli(self, *args: str) -> str:
        run = subprocess.run([str(self.bin), *args], cwd=self.dir, capture_output=True, text=True)
        assert run.returncode == 0, f"firmcast {' '.join(args)} failed:\n{run.stdout}{run.stderr}"
        return run.stdout

    def publish(self, product: str, version: str, seq: int, size: int, salt: int) -> bytes:
        """Signs with release-1 (from >=1.0.0) and publishes; returns the firmware."""
        fw = bytes(((i * 31) % 251) ^ salt for i in range(size))
        name = f"{product}-{version}"
        (self.dir / f"{name}.bin").write_bytes(fw)
        self.cli("release", "sign", "--key", "keys/release-1.pem", "--product", product,
                 "--version", version, "--seq", str(seq), "--file", f"{name}.bin",
                 "--from", ">=1.0.0", "--out", f"{name}.json")
        self.cli("release", "publish", "--server", self.url, "--token", self.token,
                 "--release", f"{name}.json", "--file", f"{name}.bin")
        return fw

    def sign_freshness(self, payload: dict) -> dict:
        """A freshness envelope signed with the server's own timestamp key,
        written from the DSSE spec with `cryptography`, as tests/support/dsse_verify.py."""
        from cryptography.hazmat.primitives import serialization
        key = serialization.load_pem_private_key((self.dir / "keys" / "timestamp.pem").read_bytes(), None)
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        body = json.dumps(payload).encode()
        ptype = b"application/vnd.firmcast.timestamp+json"
        pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(body), body)
        return {"payloadType": ptype.decode(), "payload": base64.b64encode(body).decode(),
                "signatures": [{"keyid": hashlib.sha256(raw).hexdigest(),
                                "sig": base64.b64encode(key.sign(pae)).decode()}]}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Firmcast(_built("FIRMCAST_BIN", "firmcast"), tmp_path)
    yield s
    s.stop()


class Replay:
    """A hostile mirror: fixed answers by path (query and method ignored)."""

    def __init__(self, routes: dict):
        routes = dict(routes)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = routes.get(self.path.split("?")[0])
                status = 200 if body is not None else 404
                body = body if body is not None else b'{"error":"not_found","message":"not here"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def replay():
    mirrors = []

    def start(routes):
        mirrors.append(Replay(routes))
        return mirrors[-1].url

    yield start
    for m in mirrors:
        m.close()


def send(fc, req):
    """The app's own HTTP call for a small request: requests, no redirects."""
    r = requests.request(req.method, req.url, headers=req.headers,
                         data=bytes(req.body) or None, timeout=10, allow_redirects=False)
    return fc.HttpResponse(status=r.status_code, headers=dict(r.headers), body=r.content)
