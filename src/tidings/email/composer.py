"""Turns a notification into a finished message: rendered, built, unsubscribable, signed."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidings import catalog
from tidings.email import addresses, mime, unsubscribe_tokens
from tidings.email.dkim import DkimSigner
from tidings.email.message import OutgoingEmail, RenderedEmail


@dataclass(frozen=True)
class Sender:
    address: str
    name: str | None
    domain: str


class EmailComposer:
    """Everything between a template and bytes a provider can send."""

    def __init__(
        self,
        *,
        sender: Sender,
        signer: DkimSigner | None,
        unsubscribe_secret: str,
        base_url: str,
        unsubscribe_mailto: str,
    ) -> None:
        self._sender = sender
        self._signer = signer
        self._unsubscribe_secret = unsubscribe_secret
        self._base_url = base_url.rstrip("/")
        self._unsubscribe_mailto = unsubscribe_mailto

    def compose(
        self,
        *,
        delivery_id: str,
        ntype: catalog.NotificationType,
        category: catalog.Category,
        context: Mapping[str, Any],
        to_address: str,
        to_name: str | None,
        user_id: str,
        locale: str | None,
        now: dt.datetime,
    ) -> OutgoingEmail:
        """The signed message for one email delivery.

        Raises:
            catalog.RenderError: a template failed on this payload.
            ValueError: the recipient's address cannot be put in a header.
        """
        unsubscribe = (
            None
            if category.mandatory
            else self.unsubscribe_for(user_id, category.name, to_address, locale)
        )
        rendered = ntype.render_email(with_links(context, unsubscribe), locale)
        return self._build(delivery_id, rendered, to_address, to_name, now, unsubscribe)

    def compose_rendered(
        self,
        *,
        delivery_id: str,
        rendered: RenderedEmail,
        category: catalog.Category,
        to_address: str,
        to_name: str | None,
        user_id: str,
        now: dt.datetime,
        locale: str | None = None,
    ) -> OutgoingEmail:
        """The signed message for an email rendered elsewhere (a digest, say).

        Raises:
            ValueError: the recipient's address cannot be put in a header.
        """
        unsubscribe = (
            None
            if category.mandatory
            else self.unsubscribe_for(user_id, category.name, to_address, locale)
        )
        return self._build(delivery_id, rendered, to_address, to_name, now, unsubscribe)

    def _build(
        self,
        delivery_id: str,
        rendered: RenderedEmail,
        to_address: str,
        to_name: str | None,
        now: dt.datetime,
        unsubscribe: mime.Unsubscribe | None,
    ) -> OutgoingEmail:
        message_id = mime.message_id_for(delivery_id, self._sender.domain)
        raw = mime.build_message(
            sender=self._sender.address,
            sender_name=self._sender.name,
            recipient=to_address,
            recipient_name=to_name,
            rendered=rendered,
            message_id=message_id,
            date=now,
            unsubscribe=unsubscribe,
        )
        if self._signer is not None:
            raw = self._signer.sign(raw)
        return OutgoingEmail(
            delivery_id=delivery_id,
            message_id=message_id,
            # The envelope as the headers have it: an internationalised domain in ASCII.
            sender=addresses.for_sending(self._sender.address),
            recipient=addresses.for_sending(to_address),
            raw=raw,
            subject=rendered.subject,
        )

    def unsubscribe_for(
        self, user_id: str, category: str, address: str, locale: str | None = None
    ) -> mime.Unsubscribe:
        """The List-Unsubscribe targets for one user and category (RFC 8058 one-click);
        ``locale``, the email's, is the language the page the link opens speaks."""
        token = unsubscribe_tokens.issue(
            self._unsubscribe_secret,
            user_id=user_id,
            category=category,
            email=address,
            locale=locale,
        )
        subject = urllib.parse.quote(f"unsubscribe {token}")
        return mime.Unsubscribe(
            url=f"{self._base_url}/v1/unsubscribe/{token}",
            mailto=f"mailto:{self._unsubscribe_mailto}?subject={subject}",
        )

    def preview(
        self, ntype: catalog.NotificationType, context: Mapping[str, Any], locale: str | None
    ) -> RenderedEmail:
        """The rendered subject, HTML and text, without building or sending anything.

        ``unsubscribe_url`` is a stand-in that unsubscribes nobody, so that a footer
        that shows it can be previewed."""
        example = mime.Unsubscribe(url=f"{self._base_url}{PREVIEW_UNSUBSCRIBE_PATH}", mailto="")
        return ntype.render_email(with_links(context, example), locale)


PREVIEW_UNSUBSCRIBE_PATH = "/v1/unsubscribe/example"
"""Where a previewed email's unsubscribe link points: a page that explains it is an example."""


def with_links(context: Mapping[str, Any], unsubscribe: mime.Unsubscribe | None) -> dict[str, Any]:
    """``context`` with the links every email template may show: ``unsubscribe_url``, the
    same page as the List-Unsubscribe header's (None for a mandatory category)."""
    return {**context, "unsubscribe_url": None if unsubscribe is None else unsubscribe.url}
