"""The pages an unsubscribe link opens, in the recipient's language.

A recipient reaches them from an email, in a browser: they are written for a person, in
the language of the email when Tidings has words for it (English, French, German), and
name the category by the title the catalog gives it. A link that does not work gets a
page too, not an API error body; API clients still get the JSON error (see
``wants_html``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

from tidings import catalog
from tidings.catalog import locales

DEFAULT_LANGUAGE = "en"
_MAX_HEADER = 1024
"""Only this much of an Accept or Accept-Language header is read: no browser sends more."""
_MAX_RANGES = 32


@dataclass(frozen=True)
class Words:
    """Everything the pages say, in one language; ``{category}`` and ``{email}`` are
    filled in (escaped)."""

    confirm_title: str
    confirm: str
    confirm_to: str
    button: str
    done_title: str
    done: str
    broken_title: str
    broken: str
    mandatory_title: str
    mandatory: str
    example_title: str
    example: str


WORDS: dict[str, Words] = {
    "en": Words(
        confirm_title="Unsubscribe",
        confirm="Stop emails about <strong>{category}</strong>?",
        confirm_to="Stop emails about <strong>{category}</strong> to {email}?",
        button="Unsubscribe",
        done_title="Unsubscribed",
        done="You will no longer get emails about <strong>{category}</strong>.",
        broken_title="This link does not work",
        broken=(
            "The unsubscribe link is incomplete or has been changed. Open it again from "
            "the email, or copy the whole link into the address bar."
        ),
        mandatory_title="These emails cannot be turned off",
        mandatory=(
            "Emails about <strong>{category}</strong> concern your account itself, so "
            "they cannot be turned off."
        ),
        example_title="An example link",
        example="This link comes from a preview of an email: it unsubscribes nobody.",
    ),
    "fr": Words(
        confirm_title="Se désabonner",
        confirm="Ne plus recevoir d'e-mails concernant <strong>{category}</strong> ?",
        confirm_to=(
            "Ne plus recevoir d'e-mails concernant <strong>{category}</strong> à l'adresse "
            "{email} ?"
        ),
        button="Se désabonner",
        done_title="Désabonnement effectué",
        done="Vous ne recevrez plus d'e-mails concernant <strong>{category}</strong>.",
        broken_title="Ce lien ne fonctionne pas",
        broken=(
            "Le lien de désabonnement est incomplet ou a été modifié. Ouvrez-le de nouveau "
            "depuis l'e-mail, ou copiez le lien entier dans la barre d'adresse."
        ),
        mandatory_title="Ces e-mails ne peuvent pas être désactivés",
        mandatory=(
            "Les e-mails concernant <strong>{category}</strong> portent sur votre compte "
            "lui-même : ils ne peuvent pas être désactivés."
        ),
        example_title="Un lien d'exemple",
        example="Ce lien vient de l'aperçu d'un e-mail : il ne désabonne personne.",
    ),
    "de": Words(
        confirm_title="Abmelden",
        confirm="Keine E-Mails mehr zu <strong>{category}</strong> erhalten?",
        confirm_to="Keine E-Mails mehr zu <strong>{category}</strong> an {email} erhalten?",
        button="Abmelden",
        done_title="Abgemeldet",
        done="Sie erhalten keine E-Mails mehr zu <strong>{category}</strong>.",
        broken_title="Dieser Link funktioniert nicht",
        broken=(
            "Der Abmeldelink ist unvollständig oder wurde verändert. Öffnen Sie ihn erneut "
            "aus der E-Mail oder kopieren Sie den ganzen Link in die Adresszeile."
        ),
        mandatory_title="Diese E-Mails lassen sich nicht abbestellen",
        mandatory=(
            "E-Mails zu <strong>{category}</strong> betreffen Ihr Konto selbst und lassen "
            "sich daher nicht abbestellen."
        ),
        example_title="Ein Beispiel-Link",
        example="Dieser Link stammt aus der Vorschau einer E-Mail: Er meldet niemanden ab.",
    ),
}


@dataclass(frozen=True)
class Language:
    """The page's language and the tag it was chosen for (``fr-CA`` speaks ``fr``)."""

    code: str
    tag: str

    @property
    def words(self) -> Words:
        return WORDS[self.code]


def choose(candidates: Iterable[str | None]) -> Language:
    """The first candidate tag whose language the pages speak, else English.

    Candidates come most wanted first: the recipient's stored locale, the email's, then
    the browser's languages.
    """
    for candidate in candidates:
        normal = locales.normalise(candidate)
        if normal is not None and locales.language(normal) in WORDS:
            return Language(locales.language(normal), normal)
    return Language(DEFAULT_LANGUAGE, DEFAULT_LANGUAGE)


def accepted_languages(header: str | None) -> list[str]:
    """The tags of an Accept-Language header, most wanted first (``*`` and q=0 left out)."""
    ranked = [(q, tag) for tag, q in _ranges(header) if tag != "*" and q > 0]
    return [tag for _q, tag in sorted(ranked, key=lambda pair: -pair[0])]


def wants_html(accept: str | None) -> bool:
    """Whether the client asked for a page by name (``text/html``) over JSON.

    Browsers do; an API client (``application/json``, ``*/*`` or no header, as mailbox
    providers' one-click POSTs are) keeps the JSON error body.
    """
    ranges = dict(_ranges(accept))
    page = max(ranges.get("text/html", 0.0), ranges.get("application/xhtml+xml", 0.0))
    return page > 0 and page > ranges.get("application/json", 0.0)


def _ranges(header: str | None) -> list[tuple[str, float]]:
    """``(value, q)`` of each element of an Accept-style header, lower-cased, in order."""
    found: list[tuple[str, float]] = []
    for element in (header or "")[:_MAX_HEADER].split(",")[:_MAX_RANGES]:
        value, *parameters = (part.strip() for part in element.split(";"))
        if not value:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, number = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(number)))
                except ValueError:
                    q = 0.0
        found.append((value.lower(), q))
    return found


def confirm(language: Language, category: catalog.Category, email: str | None, action: str) -> str:
    """The confirmation page: one button, posting to ``action``."""
    words = language.words
    sentence = words.confirm_to if email else words.confirm
    body = (
        f"<p>{_fill(sentence, category, language, email)}</p>"
        f'<form method="post" action="{html.escape(action)}">'
        '<button type="submit" name="List-Unsubscribe" value="One-Click">'
        f"{html.escape(words.button)}</button></form>"
    )
    return _page(language, words.confirm_title, body)


def done(language: Language, category: catalog.Category) -> str:
    """The page after unsubscribing."""
    words = language.words
    return _page(language, words.done_title, f"<p>{_fill(words.done, category, language)}</p>")


def broken(language: Language) -> str:
    """The page of a link that is not a valid unsubscribe link."""
    words = language.words
    return _page(language, words.broken_title, f"<p>{html.escape(words.broken)}</p>")


def mandatory(language: Language, category: catalog.Category) -> str:
    """The page of a link to a category recipients cannot turn off."""
    words = language.words
    body = f"<p>{_fill(words.mandatory, category, language)}</p>"
    return _page(language, words.mandatory_title, body)


def example(language: Language) -> str:
    """The page of the stand-in link of a previewed email."""
    words = language.words
    return _page(language, words.example_title, f"<p>{html.escape(words.example)}</p>")


def _fill(
    sentence: str, category: catalog.Category, language: Language, email: str | None = None
) -> str:
    # The sentences are ours and hold markup; only what is filled in comes from outside.
    return sentence.format(
        category=html.escape(category.title_for(language.tag)), email=html.escape(email or "")
    )


def _page(language: Language, title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang={language.code}><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
        "padding:0 1rem;color:#222}button{font:inherit;padding:.5rem 1.25rem;border:0;"
        "border-radius:.375rem;background:#2f54eb;color:#fff;cursor:pointer}</style>"
        f"<h1>{html.escape(title)}</h1>{body}</html>"
    )
