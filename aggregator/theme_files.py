"""`[publish] templates`: the operator's template directory read into a `settings.Theme`.

The loader's part of a theme: the files are read once, when feeds.toml is loaded, bounded
in number and size, and checked (`render.theme_check`) before the configuration is used.
Rendering never reads them again: a publish renders the templates that were checked, and
an edit takes effect at the next reload (the daemon watches the directory).
"""

from __future__ import annotations

from pathlib import Path, PurePath

from aggregator.errors import ConfigError
from aggregator.settings import SiteSettings, Theme

TEMPLATE_SUFFIX = ".j2"
MAX_TEMPLATE_FILES = 100
MAX_TEMPLATE_BYTES = 512 * 1024


def shown_directory(written: str, config_shown: str) -> str:
    """How the directory is named in messages: as written, from where feeds.toml was named
    (`templates` beside `feeds.toml`; `/etc/agg/templates` for `/etc/agg/feeds.toml`)."""
    path = PurePath(written)
    if path.is_absolute() or written.startswith("~"):
        return str(path)
    return str(PurePath(config_shown).parent / path)


def read_theme(written: str, base_dir: Path, config_shown: str) -> Theme:
    """The `*.j2` files directly in the directory `written` (relative to `base_dir`, the
    directory of feeds.toml), by name; ValueError (one line) when it cannot be one."""
    directory = Path(written).expanduser()
    if not directory.is_absolute():
        directory = base_dir / directory
    if not directory.is_dir():
        raise ValueError(f"no such directory {directory.resolve()}")
    shown = shown_directory(written, config_shown)
    try:
        names = sorted(
            entry.name
            for entry in directory.iterdir()
            if entry.name.endswith(TEMPLATE_SUFFIX)
            and not entry.name.startswith(".")
            and entry.is_file()
        )
    except OSError as e:
        raise ValueError(f"cannot read {directory}: {e.strerror or e}") from e
    if len(names) > MAX_TEMPLATE_FILES:
        raise ValueError(f"{len(names)} templates in {shown}; at most {MAX_TEMPLATE_FILES}")
    files = tuple((name, _read_template(directory / name, f"{shown}/{name}")) for name in names)
    return Theme(directory=shown, files=files, path=directory.resolve())


def _read_template(path: Path, shown: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read {shown}: {e.strerror or e}") from e
    if len(data) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"{shown} is larger than {MAX_TEMPLATE_BYTES // 1024} KB")
    try:
        # "utf-8-sig": a byte-order mark (Windows Notepad writes one) is dropped, as
        # feeds.toml's is; it was copied into the page once per template included.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{shown}: line {line} is not UTF-8") from e


def theme_errors(theme: Theme, site: SiteSettings) -> list[ConfigError]:
    """What keeps `theme` from being used, as configuration errors naming the template file
    and line (`templates/index.html.j2:12: unexpected '}'`)."""
    # Imported here: only a configuration with a theme loads Jinja2 and Babel to check it.
    from aggregator.render.theme_check import theme_problems  # noqa: PLC0415

    return [ConfigError(e.file, e.line, "", e.message) for e in theme_problems(theme, site)]
