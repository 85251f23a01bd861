#!/usr/bin/env python3
"""Publish a synthetic but realistic catalog into a running firmcast through
its admin API, signing DSSE release envelopes here (Ed25519 via `cryptography`)
instead of one `firmcast release sign` process per release.

Every product gets RELEASES versions 1.0.0 .. 1.(R-1).0 with rising seq; the
newest is a partial rollout (25%) limited to `from: >=1.(R-3).0`, the one
before it is at 100%, older ones at 100% too. All releases share one artifact
(blobs are content-addressed), but every manifest names its sha256 and size.

usage: catalog.py --server URL --token T --key release-1.pem --products N
                  --releases R [--artifact FILE] [--prefix NAME] [--threads K]
"""
import argparse
import base64
import hashlib
import http.client
import json
import sys
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

RELEASE_TYPE = "application/vnd.firmcast.release+json"


def pae(payload_type: bytes, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


class Signer:
    def __init__(self, pem_path):
        key = serialization.load_pem_private_key(open(pem_path, "rb").read(), password=None)
        assert isinstance(key, Ed25519PrivateKey), "release key must be Ed25519"
        self.key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.keyid = hashlib.sha256(raw).hexdigest()

    def envelope(self, manifest: dict) -> dict:
        payload = json.dumps(manifest, indent=2).encode()
        sig = self.key.sign(pae(RELEASE_TYPE.encode(), payload))
        return {
            "payloadType": RELEASE_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": self.keyid, "sig": base64.b64encode(sig).decode()}],
        }


def plan(products, releases, prefix):
    """Yields (product, version, seq, from, rollout) in publish order (seq rising)."""
    for n in range(products):
        product = f"{prefix}{n:05d}"
        for i in range(releases):
            version = f"1.{i}.0"
            newest = i == releases - 1
            frm = f">=1.{max(0, i - 2)}.0" if newest and releases > 2 else None
            rollout = 25 if newest and releases > 1 else 100
            yield product, version, i + 1, frm, rollout


class Client:
    def __init__(self, server, token):
        u = urllib.parse.urlparse(server)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method, path, body, ctype):
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": ctype}
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (ConnectionError, http.client.HTTPException):
                if attempt == 2:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--products", type=int, required=True)
    ap.add_argument("--releases", type=int, required=True)
    ap.add_argument("--artifact", help="firmware file for every release (default: 4 KiB of pattern bytes)")
    ap.add_argument("--prefix", default="WH-")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    blob = open(args.artifact, "rb").read() if args.artifact else bytes(range(256)) * 16
    artifact = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    signer = Signer(args.key)
    items = list(plan(args.products, args.releases, args.prefix))
    # One product's releases must go in seq order, so shard by product.
    shards = [[] for _ in range(max(1, args.threads))]
    for it in items:
        shards[hash(it[0]) % len(shards)].append(it)
    errors = []
    uploaded = threading.Event()

    def upload_once(client, product, version):
        status, data = client.call(
            "PUT", f"/v1/admin/artifacts/{product}/{version}", blob, "application/octet-stream"
        )
        if status not in (200, 201):
            raise RuntimeError(f"upload {product} {version}: {status} {data[:300]!r}")

    def work(shard):
        client = Client(args.server, args.token)
        try:
            for product, version, seq, frm, rollout in shard:
                # Content-addressed: after the first upload every manifest can
                # name the same blob; still upload it once per release so the
                # benchmark exercises the real publish path (cheap: small blob).
                if args.artifact is None or not uploaded.is_set():
                    upload_once(client, product, version)
                    uploaded.set()
                manifest = {
                    "product": product,
                    "version": version,
                    "channel": "stable",
                    "seq": seq,
                    "artifact": artifact,
                    "critical": False,
                    "notes": {
                        "en": f"{product} {version}: improves call quality and battery life.",
                        "ja": f"{product} {version}: 通話品質とバッテリー持続時間を改善",
                        "de": f"{product} {version}: verbessert Gesprächsqualität und Akkulaufzeit.",
                    },
                    "released_at": "2026-11-01T10:00:00Z",
                }
                if frm:
                    manifest["from"] = frm
                body = json.dumps({"release": signer.envelope(manifest), "rollout": rollout}).encode()
                status, data = client.call("POST", "/v1/admin/releases", body, "application/json")
                if status not in (200, 201):
                    raise RuntimeError(f"publish {product} {version}: {status} {data[:300]!r}")
        except Exception as e:  # reported below, exit non-zero
            errors.append(e)

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(s,)) for s in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"catalog.py: {errors[0]}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"published {len(items)} releases ({args.products} products x {args.releases}) in {took:.1f}s "
          f"({len(items) / took:.0f}/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
