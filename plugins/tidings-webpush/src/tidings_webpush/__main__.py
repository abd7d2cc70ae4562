"""``python -m tidings_webpush``: the same as ``tidings-webpush-keys``."""

from __future__ import annotations

from tidings_webpush.keys import main

main()
