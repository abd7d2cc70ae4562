"""``tidings-webpush-keys``: make a VAPID key pair and print the settings that use it."""

from __future__ import annotations

import base64
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate() -> tuple[str, str]:
    """A new VAPID key pair: the raw private key and the public key, both base64url."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(private), b64url(public)


def main() -> None:
    """Print a fresh key pair as environment settings."""
    private, public = generate()
    subject = sys.argv[1] if len(sys.argv) > 1 else "mailto:push@example.com"
    print(f"TIDINGS_WEBPUSH_VAPID_PRIVATE_KEY={private}")
    print(f"TIDINGS_WEBPUSH_VAPID_SUBJECT={subject}")
    print(f"# the public key (also served at GET /v1/me/push/key): {public}")


if __name__ == "__main__":
    main()
