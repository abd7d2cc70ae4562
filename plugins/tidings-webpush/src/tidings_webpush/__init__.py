"""Web Push for Tidings: a channel plugin built only on ``tidings.channels``.

Types declare a ``webpush`` section (``title``, ``body``, optional ``url``, ``icon``,
``tag``, ``ttl``, ``urgency``); people's browsers register push subscriptions under
``/v1/me/push``; each notification is encrypted for and posted to every subscription of
its recipient, signed with the deployment's VAPID key.
"""

from __future__ import annotations

from tidings_webpush.channel import WebPushChannel, WebPushSection

__all__ = ["WebPushChannel", "WebPushSection"]
