"""The page templates as a Jinja2 environment: the operator's over the shipped, sandboxed.

A theme (`settings.Theme`: the files of `[publish] templates`, read when feeds.toml was
loaded) replaces the shipped template of the same name; every other name falls back to the
shipped one (a `ChoiceLoader`). An operator's theme runs in Jinja2's
`ImmutableSandboxedEnvironment` (the shipped templates alone, the package's own code, do not):
no attribute that starts with `_`, no method that mutates, no call the sandbox does not
know to be safe. Autoescape is on and names must exist (`StrictUndefined`), so a typo fails
loudly instead of publishing an empty string.

What a template can cost is bounded where Jinja2 lets us: `range()` (`MAX_RANGE` items),
`*` on strings and sequences and `**` on numbers (results of at most `MAX_REPEAT` items or
`MAX_POWER_BITS` bits), the page itself (`output_budget`), and the time a render takes
(`RENDER_SECONDS`, `render.deadline`): loops that write nothing escape every size cap. Left
unbounded: the memory one filter call spends building its result (`center`, `format`),
checked only once it is built: the sandbox has no hook inside a filter. The templates are the
operator's own files, as trusted as feeds.toml, validated when it is loaded; nothing from a
feed is ever compiled as a template. The bounds catch a runaway loop, not an adversary.

Every failure, loading or rendering, is a `ThemeError`: one line naming the template file
and line (`templates/index.html.j2:12: unexpected '}'`), never a traceback.

Pure: the only files read are the shipped templates and message catalogues.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from babel import Locale
from babel.support import Translations
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aggregator.errors import ThemeError
from aggregator.render.deadline import Deadline, RenderTimeout
from aggregator.settings import Theme

SHIPPED_DIR = Path(__file__).parent / "templates"
LOCALE_DIR = Path(__file__).parent / "locale"
MESSAGE_DOMAIN = "messages"
# How a shipped template is named in messages: by its place in the source tree.
_SHIPPED_SHOWN = "aggregator/render/templates"

MAX_RANGE = 10_000  # items of one range() (Jinja2's sandbox allows 100,000)
MAX_REPEAT = 1_000_000  # characters or items that `*` may make
MAX_POWER_BITS = 4_096  # bits of an integer that `**` may make
# The time one page may take to render (the shipped theme: milliseconds). Loops that write
# nothing escape every size cap; the clock catches them (`render.deadline`).
RENDER_SECONDS = 20.0
# The most characters a page may have: generous for the shipped theme (about 1 KB a brief),
# small enough that a runaway loop stops long before memory does.
BASE_OUTPUT = 4 * 1024 * 1024
OUTPUT_PER_ITEM = 64 * 1024
_MESSAGE_LENGTH = 300


def output_budget(items: int) -> int:
    """The most characters a page of `items` briefs may have."""
    return BASE_OUTPUT + OUTPUT_PER_ITEM * items


def bounded_range(*args: int) -> range:
    """`range()` for templates: at most `MAX_RANGE` items."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range() of {len(numbers):,} items; at most {MAX_RANGE:,}")
    return numbers


def _check_repeat(left: object, right: object) -> None:
    for sequence, times in ((left, right), (right, left)):
        if not (isinstance(sequence, str | list | tuple) and isinstance(times, int)):
            continue
        size = len(sequence) * times
        if size > MAX_REPEAT:
            raise SecurityError(f"'*' would make {size:,} items; at most {MAX_REPEAT:,}")


def _check_power(left: object, right: object) -> None:
    if not (isinstance(left, int) and isinstance(right, int) and abs(left) > 1):
        return
    bits = left.bit_length() * right
    if bits > MAX_POWER_BITS:
        raise SecurityError(f"'**' would make {bits:,} bits; at most {MAX_POWER_BITS:,}")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` bounded."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        (_check_repeat if operator == "*" else _check_power)(left, right)
        return super().call_binop(context, operator, left, right)


class _ThemeFiles(jinja2.BaseLoader):
    """The operator's templates, from the theme's values; each named as the operator knows
    it (`templates/index.html.j2`), so errors and tracebacks point at their file."""

    def __init__(self, theme: Theme) -> None:
        self._theme = theme
        self._files = dict(theme.files)

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        try:
            source = self._files[template]
        except KeyError:
            raise jinja2.TemplateNotFound(template) from None
        return source, self._theme.shown(template), _always_current

    def list_templates(self) -> list[str]:
        return sorted(self._files)


def _always_current() -> bool:
    return True


def translations(locale: Locale) -> Translations:
    """The compiled catalogue for `locale` ("hi_IN" falls back to "hi"); none: the English
    words of the template itself, as gettext's null translations return them."""
    found = Translations.load(str(LOCALE_DIR), [str(locale)], MESSAGE_DOMAIN)
    return found if isinstance(found, Translations) else Translations()


class _Shipped(jinja2.Environment):
    """The shipped templates alone: the package's own code, run without the sandbox's check
    of every attribute and call, which doubles the time a page takes (6 ms → 12 ms for
    200 briefs). `range()` is bounded all the same."""


@lru_cache(maxsize=16)
def environment(theme: Theme, locale: Locale) -> jinja2.Environment:
    """The environment for `theme`, speaking `locale`'s catalogue; one per theme and
    language, kept (a reload with edited templates is a new theme, so it gets a new one).

    A sandbox as soon as the theme has one file of the operator's: then every template runs
    in it, the shipped ones it falls back to included."""
    loader = jinja2.ChoiceLoader([_ThemeFiles(theme), jinja2.FileSystemLoader(SHIPPED_DIR)])
    kind: type[jinja2.Environment] = _Sandbox if theme.files else _Shipped
    env = kind(
        loader=loader,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    env.globals["range"] = bounded_range
    env.install_gettext_translations(  # type: ignore[attr-defined]
        translations(locale), newstyle=True
    )
    return env


def compile_template(theme: Theme, locale: Locale, name: str) -> jinja2.Template:
    """`name` compiled (the operator's file if the theme has one); a `ThemeError` naming
    the file and line of a syntax error."""
    try:
        return environment(theme, locale).get_template(name)
    except jinja2.TemplateSyntaxError as e:
        raise ThemeError(_shown(e.filename or name), e.lineno, _one_line(e.message or "")) from e
    except jinja2.TemplateNotFound as e:
        raise ThemeError(theme.shown(name), 0, f"no template {e.name!r}") from e


def render_template(
    theme: Theme, locale: Locale, name: str, context: Mapping[str, object], budget: int
) -> str:
    """`name` rendered with `context`, at most `budget` characters; a `ThemeError` naming
    the template file and line of whatever went wrong (a template an `include` or `extends`
    named may be the one at fault)."""
    template = compile_template(theme, locale, name)
    where = _shown(template.filename or name)
    parts: list[str] = []
    size = 0
    try:
        with Deadline(RENDER_SECONDS):
            for part in template.generate(context):
                size += len(part)
                if size > budget:
                    too_long = f"the page is over {budget:,} characters; a runaway loop?"
                    raise ThemeError(where, 0, too_long)
                parts.append(part)
    except ThemeError:
        raise
    except RenderTimeout as e:
        file, line = _template_frame(e.__traceback__, where)
        slow = f"rendering took longer than {RENDER_SECONDS:g} s; a runaway loop?"
        raise ThemeError(file, line, slow) from None
    except jinja2.TemplateSyntaxError as e:  # an included or extended file
        raise ThemeError(_shown(e.filename or name), e.lineno, _one_line(e.message or "")) from e
    except Exception as e:  # an undefined name, a sandbox refusal, a bug in the template
        file, line = _template_frame(e.__traceback__, where)
        raise ThemeError(file, line, _message(e)) from e
    return "".join(parts)


def _shown(filename: str) -> str:
    """A template's file name as messages give it: the operator's as written, a shipped one
    by its place in the source tree."""
    path = Path(filename)
    if path.is_absolute() and path.parent == SHIPPED_DIR:
        return f"{_SHIPPED_SHOWN}/{path.name}"
    return filename


def _template_frame(trace: TracebackType | None, default: str) -> tuple[str, int]:
    """The innermost template line of a traceback: Jinja2 rewrites the frames of template
    code to carry the template's file name and line."""
    found = (default, 0)
    while trace is not None:
        filename = trace.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = (_shown(filename), trace.tb_lineno)
        trace = trace.tb_next
    return found


def _message(error: Exception) -> str:
    if isinstance(error, jinja2.TemplateNotFound):
        return f"no template {error.name!r}"
    if isinstance(error, jinja2.TemplateError):
        return _one_line(error.message or type(error).__name__)
    return _one_line(f"{type(error).__name__}: {error}")


def _one_line(text: str) -> str:
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= _MESSAGE_LENGTH else line[: _MESSAGE_LENGTH - 1] + "…"
