#!/usr/bin/env python3
"""Independent DSSE verifier: proves firmcast's envelopes are standard.

Written from the DSSE spec alone, using the `cryptography` package, sharing no
code with firmcast.

usage: dsse_verify.py ENVELOPE.json PUBLIC.pem PAYLOAD_TYPE
exit 0 when a signature by PUBLIC.pem verifies; prints the payload.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def pae(payload_type: bytes, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def main() -> int:
    env_path, key_path, expected_type = sys.argv[1:4]
    env = json.load(open(env_path))
    key = serialization.load_pem_public_key(open(key_path, "rb").read())
    assert isinstance(key, Ed25519PublicKey), "not an Ed25519 key"
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keyid = hashlib.sha256(raw).hexdigest()
    if env["payloadType"] != expected_type:
        print(f"payloadType {env['payloadType']!r}", file=sys.stderr)
        return 1
    payload = base64.b64decode(env["payload"], validate=True)
    message = pae(env["payloadType"].encode(), payload)
    for sig in env["signatures"]:
        if sig.get("keyid") != keyid:
            continue
        try:
            key.verify(base64.b64decode(sig["sig"], validate=True), message)
        except InvalidSignature:
            print("bad signature", file=sys.stderr)
            return 1
        sys.stdout.write(payload.decode())
        return 0
    print(f"no signature by keyid {keyid}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
