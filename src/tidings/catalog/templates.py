"""Channel templates: Jinja2 in a sandbox, compiled once at load and rendered per recipient.

The sandbox keeps templates away from Python internals (``__class__``, ``mro``…) and
from mutating the payload they render; it does not bound how long a deliberately slow
template runs, which is the catalog author's to avoid. Two environments share it: plain
text (in-app, email subject and text part) and HTML, where every value is escaped unless
the template itself marks it safe, so payload values can never inject markup.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

from tidings.catalog.formatting import FILTERS

TITLE_MAX = 500
ACTION_URL_MAX = 2000
"""The longest link an inbox item keeps (its column); a longer one cannot be cut, so the
item goes without it rather than fail to be stored."""
_ACTION_URL_SCHEMES = frozenset({"", "http", "https"})
# No loader exists, and templates must stand alone: one file, one type.
_UNSUPPORTED_TAGS: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from … import",
}


class RenderError(Exception):
    """A template failed to render for this context; ``field`` names the template.

    ``line`` is the line within that template's source when it is known.
    """

    def __init__(self, field: str, message: str, line: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.line = line


@dataclass(frozen=True)
class InAppContent:
    """What an inbox item shows: plain text (escaped by whatever displays it)."""

    title: str
    body: str
    action_url: str | None


class _Sandbox(ImmutableSandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # Payload keys win over dict methods: ``data.items`` is the payload's "items".
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        # The default returns an Undefined, which ChainableUndefined would render as "";
        # an attempt to reach internals should fail loudly instead (and fail `check`).
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


def _environment(*, html: bool) -> _Sandbox:
    environment = _Sandbox(
        autoescape=html,
        undefined=ChainableUndefined,
        finalize=_blank_none,
        keep_trailing_newline=False,
    )
    environment.filters.update(FILTERS)
    return environment


_TEXT_ENVIRONMENT = _environment(html=False)
_HTML_ENVIRONMENT = _environment(html=True)


def text_environment() -> ImmutableSandboxedEnvironment:
    """The sandbox of plain-text templates (conditions compile their expressions in it)."""
    return _TEXT_ENVIRONMENT


def compile_template(source: str, *, html: bool = False) -> Template:
    """Compile a template; raises ``TemplateSyntaxError`` (with ``lineno``) when it is bad.

    ``html`` turns autoescaping on: for templates whose output is HTML.
    """
    environment = _HTML_ENVIRONMENT if html else _TEXT_ENVIRONMENT
    tree = environment.parse(source)
    for tag, name in _UNSUPPORTED_TAGS.items():
        for node in tree.find_all(tag):
            raise TemplateSyntaxError(
                f"'{name}' is not supported in catalog templates", node.lineno
            )
    template = environment.from_string(tree)
    if _is_event_only(environment, tree):
        _EVENT_ONLY[template] = _LastRender()
    return template


def render(
    template: Template, context: Mapping[str, Any], field: str, *, strip: bool = True
) -> str:
    """Render ``template`` (stripped unless told); raises ``RenderError`` naming ``field``.

    A template that reads nothing but the event (see ``_is_event_only``) renders the
    same text for every recipient of an event: the last text is reused while the
    context holds the very same ``data`` and ``actor`` objects and an equal ``event``.
    """
    last = _EVENT_ONLY.get(template)
    if last is None:
        text = _render(template, context, field)
    else:
        key = (
            context.get("data", _ABSENT),
            context.get("actor", _ABSENT),
            context.get("event", _ABSENT),
        )
        known = last.text_for(key)
        if known is None:
            text = _render(template, context, field)
            last.keep(key, text)
        else:
            text = known
    return text.strip() if strip else text


def _render(template: Template, context: Mapping[str, Any], field: str) -> str:
    try:
        return template.render(dict(context))
    except Exception as exc:  # a template can fail in many ways; all are a RenderError
        message = f"{type(exc).__name__}: {exc}"
        raise RenderError(field, message, _template_line(exc.__traceback__)) from exc


_ABSENT = object()
# What a template may read and still be the same for every recipient of an event.
_EVENT_NAMES = frozenset({"data", "actor", "event"})
# Globals whose output is not a function of the template's input.
_UNSTABLE_GLOBALS = frozenset({"lipsum"})


class _LastRender:
    """The last text an event-only template rendered, and the input it rendered."""

    __slots__ = ("_key", "_text")

    def __init__(self) -> None:
        self._key: tuple[Any, Any, Any] | None = None
        self._text = ""

    def text_for(self, key: tuple[Any, Any, Any]) -> str | None:
        known = self._key
        # ``data`` and ``actor`` by identity: equal values of other types (1, 1.0, True)
        # render differently. Holding them keeps their ids from being reused meanwhile.
        if known is not None and known[0] is key[0] and known[1] is key[1] and known[2] == key[2]:
            return self._text
        return None

    def keep(self, key: tuple[Any, Any, Any], text: str) -> None:
        self._key, self._text = key, text


_EVENT_ONLY: weakref.WeakKeyDictionary[Template, _LastRender] = weakref.WeakKeyDictionary()


def _is_event_only(environment: _Sandbox, tree: nodes.Template) -> bool:
    """Whether a template reads nothing but ``data``, ``actor`` and ``event``.

    Not so when it names the recipient (or anything else a caller adds), uses a filter
    or test that reads the render's context (the date and number filters read the
    recipient's locale and timezone without the template naming them), draws at random,
    or calls ``lipsum``.
    """
    if not meta.find_undeclared_variables(tree) <= _EVENT_NAMES:
        return False
    if any(name.name in _UNSTABLE_GLOBALS for name in tree.find_all(nodes.Name)):
        return False
    for call in tree.find_all((nodes.Filter, nodes.Test)):
        known = environment.filters if isinstance(call, nodes.Filter) else environment.tests
        function = known.get(call.name)
        if function is None or call.name == "random":
            return False
        # The environment (``truncate``) and its eval context (``join``) are the same for
        # every render; the render's context is not. Jinja marks which one a filter takes.
        if _PassArg.from_obj(cast(Callable[..., Any], function)) is _PassArg.context:
            return False
    return True


def _template_line(traceback: TracebackType | None) -> int | None:
    # Jinja rewrites the traceback so that template code shows as "<template>" frames
    # whose line numbers are the template's own; the innermost one failed.
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


@dataclass(frozen=True)
class InAppTemplates:
    """The compiled ``channels.in_app`` templates of one notification type."""

    title: Template
    body: Template
    action_url: Template | None

    def render(self, context: Mapping[str, Any]) -> InAppContent:
        """Render the inbox item; raises ``RenderError`` when a template fails."""
        title = render(self.title, context, "channels.in_app.title")
        if len(title) > TITLE_MAX:
            title = title[: TITLE_MAX - 1] + "…"
        body = render(self.body, context, "channels.in_app.body")
        action_url = None
        if self.action_url is not None:
            action_url = render(self.action_url, context, "channels.in_app.action_url") or None
        if action_url is not None and len(action_url) > ACTION_URL_MAX:
            action_url = None
        if action_url is not None and not _is_safe_action_url(action_url):
            raise RenderError(
                "channels.in_app.action_url",
                f"{action_url[:100]!r} is not a relative or http(s) URL",
            )
        return InAppContent(title=title, body=body, action_url=action_url)


def _is_safe_action_url(url: str) -> bool:
    # Payload data lands in links: never let it turn into "javascript:" or the like.
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in url):
        return False
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return False
    return scheme.lower() in _ACTION_URL_SCHEMES
