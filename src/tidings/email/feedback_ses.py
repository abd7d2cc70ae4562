"""Amazon SES events: the bounces, complaints and deliveries an SES notification or
event-publishing record (an SNS ``Message``) reports, as ``Feedback`` (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.email.feedback import Feedback, FeedbackKind
from tidings.email.feedback_checks import (
    address_at,
    clipped_detail,
    json_object,
    list_at,
    normal_message_id,
    object_at,
    string_at,
    time_at,
)


def parse_ses_event(message: str) -> list[Feedback]:
    """Feedback from an SES notification or event-publishing record (an SNS ``Message``).

    Events that are not bounces, complaints or deliveries (sends, opens, the topic's
    setup notice) give no feedback.

    Raises:
        errors.Invalid: not JSON, or a bounce, complaint or delivery of the wrong shape.
    """
    event = json_object(message.encode(), "Message", "The SNS Message must be an SES event.")
    kind_name = event.get("notificationType") or event.get("eventType")
    if kind_name not in ("Bounce", "Complaint", "Delivery"):
        return []
    mail = object_at(event.get("mail"), "Message.mail")
    section_name = kind_name.lower()
    section = object_at(event.get(section_name), f"Message.{section_name}")
    path = f"Message.{section_name}"
    common: dict[str, Any] = {
        "provider": "ses",
        "message_id": _ses_message_id(mail),
        "provider_message_id": string_at(mail.get("messageId"), "Message.mail.messageId"),
    }
    stamp = section.get("timestamp") or mail.get("timestamp")
    common["occurred_at"] = None if stamp is None else time_at(stamp, f"{path}.timestamp")

    if kind_name == "Delivery":
        recipients = list_at(section.get("recipients"), f"{path}.recipients")
        detail = clipped_detail(string_at(section.get("smtpResponse"), f"{path}.smtpResponse"))
        return [
            Feedback(
                FeedbackKind.DELIVERED,
                address_at(
                    string_at(r, f"{path}.recipients.{i}", required=True), f"{path}.recipients.{i}"
                ),
                detail=detail,
                **common,
            )
            for i, r in enumerate(recipients)
        ]
    if kind_name == "Complaint":
        listed = list_at(section.get("complainedRecipients"), f"{path}.complainedRecipients")
        reason = section.get("complaintFeedbackType") or section.get("complaintSubType")
        return [
            Feedback(
                FeedbackKind.COMPLAINT,
                _recipient(r, f"{path}.complainedRecipients.{i}"),
                detail=clipped_detail(string_at(reason, f"{path}.complaintFeedbackType")),
                **common,
            )
            for i, r in enumerate(listed)
        ]
    bounce_type = string_at(section.get("bounceType"), f"{path}.bounceType", required=True)
    subtype = string_at(section.get("bounceSubType"), f"{path}.bounceSubType")
    # Only a permanent bounce is certain enough to stop mailing an address for good.
    kind = FeedbackKind.HARD_BOUNCE if bounce_type == "Permanent" else FeedbackKind.SOFT_BOUNCE
    listed = list_at(section.get("bouncedRecipients"), f"{path}.bouncedRecipients")
    found: list[Feedback] = []
    for i, entry in enumerate(listed):
        at = f"{path}.bouncedRecipients.{i}"
        address = _recipient(entry, at)
        diagnostic = string_at(entry.get("diagnosticCode"), f"{at}.diagnosticCode")
        label = "/".join(x for x in (bounce_type, subtype) if x)
        detail = f"{label}: {diagnostic}" if diagnostic else label
        found.append(Feedback(kind, address, detail=clipped_detail(detail), **common))
    return found


def _recipient(entry: Any, path: str) -> str:
    entry = object_at(entry, path)
    email = string_at(entry.get("emailAddress"), f"{path}.emailAddress", required=True)
    return address_at(email, f"{path}.emailAddress")


def _ses_message_id(mail: Mapping[str, Any]) -> str | None:
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if (
                isinstance(header, dict)
                and str(header.get("name", "")).lower() == "message-id"
                and isinstance(header.get("value"), str)
            ):
                return normal_message_id(header["value"])
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        return normal_message_id(common["messageId"])
    return None
