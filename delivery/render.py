"""Personalisation: subject, HTML and text rendered in a sandboxed Jinja2 environment.

Templates come from tenants, so they run in :class:`jinja2.sandbox.SandboxedEnvironment`
(no attribute access to internals, no imports) with :class:`jinja2.StrictUndefined`: a
variable the job does not supply is a :class:`~delivery.errors.RenderError` naming it,
never a silent blank ("Hi ,"). HTML is autoescaped (a variable cannot inject markup); the
subject and text are not. Compiled templates are cached by source (they are pure).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from delivery.errors import RenderError

MAX_CACHED = 512
MAX_OUTPUT_CHARS = 2_000_000


@dataclass(frozen=True)
class Rendered:
    """The personalised parts of one message (HTML and/or text; at least one)."""

    subject: str
    html: str | None
    text: str | None


class Renderer:
    """Renders templates with variables; compiled templates are kept (LRU)."""

    def __init__(self, max_cached: int = MAX_CACHED):
        common: dict[str, Any] = {
            "undefined": jinja2.StrictUndefined,
            "keep_trailing_newline": True,
        }
        self._plain = SandboxedEnvironment(autoescape=False, **common)
        self._html = SandboxedEnvironment(autoescape=True, **common)
        self._cache: OrderedDict[tuple[bool, str], jinja2.Template] = OrderedDict()
        self._max = max_cached

    def _template(self, source: str, html: bool, part: str) -> jinja2.Template:
        key = (html, source)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        try:
            compiled = (self._html if html else self._plain).from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(
                f"{part} template: syntax error at line {exc.lineno}: {exc.message}"
            ) from None
        self._cache[key] = compiled
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return compiled

    def check(self, subject: str, html: str | None, text: str | None) -> None:
        """Compile every part now: a syntax error is a :class:`RenderError` naming it."""
        self._template(subject, False, "subject")
        if html is not None:
            self._template(html, True, "html")
        if text is not None:
            self._template(text, False, "text")

    def render_one(
        self, source: str, variables: Mapping[str, Any], *, html: bool, part: str
    ) -> str:
        template = self._template(source, html, part)
        try:
            out = template.render(variables)
        except jinja2.UndefinedError as exc:
            raise RenderError(f"{part} template: missing variable: {exc.message}") from None
        except SecurityError as exc:
            raise RenderError(f"{part} template: not allowed: {exc}") from None
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise RenderError(f"{part} template: {type(exc).__name__}: {exc}") from None
        if len(out) > MAX_OUTPUT_CHARS:
            raise RenderError(f"{part} renders to more than {MAX_OUTPUT_CHARS} characters")
        return out

    def render(
        self, subject: str, html: str | None, text: str | None, variables: Mapping[str, Any]
    ) -> Rendered:
        """Render every part; a template with neither HTML nor text is an error."""
        if not (html or text):
            raise RenderError("template has neither an HTML nor a text body")
        return Rendered(
            subject=" ".join(
                self.render_one(subject, variables, html=False, part="subject").split()
            ),
            html=self.render_one(html, variables, html=True, part="html") if html else None,
            text=self.render_one(text, variables, html=False, part="text") if text else None,
        )
