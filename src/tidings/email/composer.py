"""Turns a notification into a finished message: rendered, built, unsubscribable, signed."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tidings.email import addresses, mime, unsubscribe_tokens
from tidings.email.dkim import DkimSigner
from tidings.email.message import OutgoingEmail, RenderedEmail

if TYPE_CHECKING:  # a compose process builds messages without the catalog's imports
    from tidings import catalog


@dataclass(frozen=True)
class Sender:
    address: str
    name: str | None
    domain: str


@dataclass(frozen=True)
class Draft:
    """One email rendered for its recipient but not built yet: plain data, so that the
    building and signing (``MessageBuilder``) can happen in another process."""

    delivery_id: str
    rendered: RenderedEmail
    to_address: str
    to_name: str | None
    now: dt.datetime
    unsubscribe: mime.Unsubscribe | None


class MessageBuilder:
    """The costly half of composing: the MIME source, then the DKIM signature.

    It pickles as its settings (the key as PEM), so worker processes can build too.
    """

    def __init__(self, sender: Sender, signer: DkimSigner | None) -> None:
        self.sender = sender
        self.signer = signer

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return MessageBuilder, (self.sender, self.signer)

    def build(self, draft: Draft) -> OutgoingEmail:
        """The signed message for ``draft``.

        Raises:
            ValueError: the recipient's address cannot be put in a header.
        """
        message_id = mime.message_id_for(draft.delivery_id, self.sender.domain)
        raw = mime.build_message(
            sender=self.sender.address,
            sender_name=self.sender.name,
            recipient=draft.to_address,
            recipient_name=draft.to_name,
            rendered=draft.rendered,
            message_id=message_id,
            date=draft.now,
            unsubscribe=draft.unsubscribe,
        )
        if self.signer is not None:
            raw = self.signer.sign(raw)
        return OutgoingEmail(
            delivery_id=draft.delivery_id,
            message_id=message_id,
            # The envelope as the headers have it: an internationalised domain in ASCII.
            sender=addresses.for_sending(self.sender.address),
            recipient=addresses.for_sending(draft.to_address),
            raw=raw,
            subject=draft.rendered.subject,
        )


class EmailComposer:
    """Everything between a template and bytes a provider can send.

    Composing is two steps: ``draft`` renders (cheap, needs the catalog), and
    ``builder.build`` makes and signs the message (most of the cost, plain data in and
    out, so it can run in a process pool). ``compose`` does both.
    """

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
        self.builder = MessageBuilder(sender, signer)
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
        return self.builder.build(
            self.draft(
                delivery_id=delivery_id,
                ntype=ntype,
                category=category,
                context=context,
                to_address=to_address,
                to_name=to_name,
                user_id=user_id,
                locale=locale,
                now=now,
            )
        )

    def draft(
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
    ) -> Draft:
        """One email delivery rendered, with its unsubscribe link, not built yet.

        Raises:
            catalog.RenderError: a template failed on this payload.
        """
        unsubscribe = (
            None
            if category.mandatory
            else self.unsubscribe_for(user_id, category.name, to_address, locale)
        )
        rendered = ntype.render_email(with_links(context, unsubscribe), locale)
        return Draft(delivery_id, rendered, to_address, to_name, now, unsubscribe)

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
        return self.builder.build(
            self.draft_rendered(
                delivery_id=delivery_id,
                rendered=rendered,
                category=category,
                to_address=to_address,
                to_name=to_name,
                user_id=user_id,
                now=now,
                locale=locale,
            )
        )

    def draft_rendered(
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
    ) -> Draft:
        """An email rendered elsewhere (a digest, say) with its unsubscribe link."""
        unsubscribe = (
            None
            if category.mandatory
            else self.unsubscribe_for(user_id, category.name, to_address, locale)
        )
        return Draft(delivery_id, rendered, to_address, to_name, now, unsubscribe)

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
