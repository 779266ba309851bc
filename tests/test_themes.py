"""Themes: `[publish] templates`, the operator's templates over the shipped ones, sandboxed.

Shows: an operator's file replaces the shipped one of its name and a missing one falls back;
a template that cannot load or render is one line naming its file and line, at `check`, at
`once` (the previous page stays) and at publish; the sandbox refuses internals and bounds
what a template can make; every name the README's contract table documents is in the context.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

import aggregator.render.theme as theme_module
from aggregator import publish
from aggregator.config import load_config
from aggregator.daemon import Daemon, publishing
from aggregator.errors import ConfigError, ThemeError
from aggregator.publish import PublishReport
from aggregator.render.context import ChannelInfo
from aggregator.render.deadline import Deadline
from aggregator.render.page import DayPage, render_day_page, render_html
from aggregator.render.theme import BASE_OUTPUT, MAX_RANGE
from aggregator.settings import Theme
from aggregator.theme_files import MAX_TEMPLATE_BYTES, read_theme
from aggregator.types import Timeline
from tests.conftest import ROOT, run_cli
from tests.feedfactory import rss2
from tests.test_daemon import _items
from tests.test_daemon_inprocess import FAST, _run_until
from tests.test_page import JAGRAN, SITE_EN, SITE_HI, hindi_two_days, parse, texts

EXAMPLE_THEME = ROOT / "examples" / "themes" / "briefs"
OPERATOR_INDEX = """{% extends "_base.html.j2" %}
{% block main %}
<main class="operator">
{% for day in days %}
<h2 class="operator-day">{{ day.label }}</h2>
{% for item in day.items %}
<p class="operator-item">{{ item.title }}</p>
{% endfor %}
{% endfor %}
</main>
{% endblock %}
"""


def theme(**files: str) -> Theme:
    """A theme of `files` (name → source; `index` for index.html.j2), as the loader makes."""
    named = {f"{name.replace('_html', '.html')}.j2": text for name, text in files.items()}
    return Theme("templates", tuple(sorted(named.items())))


def failure(page: Theme, *, day: bool = False) -> str:
    """The one line a theme's failure gives, rendering the Hindi sample with it."""
    with pytest.raises(ThemeError) as caught:
        if day:
            render_day_page(hindi_two_days(), SITE_HI, DayPage("2025-07-13"), theme=page)
        else:
            render_html(hindi_two_days(), SITE_HI, theme=page)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- choosing the templates -------------------------------------------------------------------


def test_an_operators_index_replaces_the_shipped_one_and_the_rest_falls_back():
    page = render_html(hindi_two_days(), SITE_HI, theme=theme(index_html=OPERATOR_INDEX))
    root = parse(page)
    assert texts(root, "//h2[@class='operator-day']") == ["13 जुलाई 2025", "12 जुलाई 2025"]
    assert len(root.xpath("//p[@class='operator-item']")) == 4
    assert root.xpath("//article") == []  # not the shipped item
    # `_base.html.j2`, which the operator's page extends, is the shipped one.
    assert root.get("lang") == "hi" and '"Noto Sans Devanagari"' in texts(root, "//style")[0]
    assert "सदस्यता लें:" in texts(root, "//footer/p")[0]


def test_an_operators_partial_is_shared_by_the_main_and_the_day_pages():
    item = '<li class="mine">{{ item.published_label }} {{ item.title }}</li>\n'
    mine = theme(_item_html=item)
    for page in (
        render_html(hindi_two_days(), SITE_HI, theme=mine),
        render_day_page(hindi_two_days(), SITE_HI, DayPage("2025-07-13"), theme=mine),
    ):
        root = parse(page)
        assert len(root.xpath("//li[@class='mine']")) == 4
        assert root.xpath("//article") == []
        assert texts(root, "//main//h2")[0] == "13 जुलाई 2025"  # the shipped _day.html.j2


def test_the_shipped_theme_is_the_default():
    shipped = render_html(hindi_two_days(), SITE_HI)
    assert render_html(hindi_two_days(), SITE_HI, theme=Theme()) == shipped
    # A theme with a file of its own runs every template in the sandbox, the shipped ones
    # too (alone they run without it): the same bytes.
    unrelated = theme(_unused_html="{{ nothing_at_all }}")
    assert render_html(hindi_two_days(), SITE_HI, theme=unrelated) == shipped
    day = DayPage("2025-07-13", prev="2025-07-12", next="2025-07-14")
    assert render_day_page(hindi_two_days(), SITE_HI, day, theme=unrelated) == render_day_page(
        hindi_two_days(), SITE_HI, day
    )


# --- one line naming the file and line ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>\n</p>\n{{ x }\n", "templates/index.html.j2:3: unexpected '}'"),
        ("{% for d in days %}\n", "templates/index.html.j2:1: Unexpected end of template."),
        ("<p>\n{{ day.titel }}\n", "templates/index.html.j2:2: 'day' is undefined"),
        ("\n\n{{ days[0].titel }}", "templates/index.html.j2:3: "),
        ("{{ site.title|no_such_filter }}", "templates/index.html.j2:1: No filter named"),
        ("{% include '_mine.html.j2' %}", "templates/index.html.j2:1: no template '_mine"),
        ("{{ 1 // 0 }}", "templates/index.html.j2:1: ZeroDivisionError: integer division"),
    ],
)
def test_a_broken_template_is_one_line_naming_its_file_and_line(source: str, expected: str):
    assert failure(theme(index_html=source)).startswith(expected)


def test_an_error_in_an_included_partial_names_the_partial():
    broken = theme(_item_html="<li>\n{{ item.headline }}</li>\n")  # the field is `title`
    message = failure(broken)
    assert message.startswith("templates/_item.html.j2:2: ")
    assert "has no attribute 'headline'" in message
    assert failure(broken, day=True) == message


def test_an_error_in_a_shipped_template_names_it_by_its_place_in_the_source_tree():
    # An operator's _base that forgets the `site` the shipped _day needs … is fine; an
    # operator's page that gives the shipped partial no `day` is the shipped file's line.
    message = failure(theme(index_html='{% include "_day.html.j2" %}'))
    assert message.startswith("aggregator/render/templates/_day.html.j2:2: 'day' is undefined")


# --- the sandbox and its bounds -------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ site.__class__ }}",
        "{{ days.__len__() }}",
        "{{ range.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ site.__dict__ }}",
        "{{ days[0].items.__iter__ }}",
    ],
)
def test_the_sandbox_refuses_internals(source: str):
    message = failure(theme(index_html=f"<p>\n{source}\n"))
    assert message.startswith("templates/index.html.j2:2: ")
    assert "unsafe" in message or "is undefined" in message, message


def test_the_sandbox_refuses_to_change_the_context():
    message = failure(theme(index_html="{% set _ = days[0].items|list %}{{ _.append(1) }}"))
    assert message.startswith("templates/index.html.j2:1: ") and "unsafe" in message


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (f"{{% for i in range({MAX_RANGE + 1}) %}}{{% endfor %}}", "range() of 10,001 items"),
        ("{{ 'x' * 100000000 }}", "'*' would make 100,000,000 items"),
        ("{{ [1] * 100000000 }}", "'*' would make 100,000,000 items"),
        ("{{ 10 ** 100000 }}", "'**' would make"),
    ],
)
def test_what_a_template_makes_is_bounded(source: str, words: str):
    message = failure(theme(index_html=source))
    assert message.startswith("templates/index.html.j2:1: ") and words in message


def test_a_runaway_page_stops_at_the_output_budget_quickly():
    runaway = (
        "{% for i in range(10000) %}{% for j in range(10000) %}"
        "<p>{{ i }} {{ j }}</p>{% endfor %}{% endfor %}"
    )  # 100 million paragraphs: gigabytes, unbounded
    started = time.monotonic()
    message = failure(theme(index_html=runaway))
    assert time.monotonic() - started < 30
    assert message.startswith("templates/index.html.j2: the page is over ")
    assert f"{BASE_OUTPUT:,}" not in message  # the budget grows with the items: 4 here
    assert "characters" in message


def test_loops_that_write_nothing_stop_at_the_time_budget(monkeypatch: pytest.MonkeyPatch):
    """Three nested loops with an empty body: 10¹² iterations, hours, no output for any cap
    to catch. The render's clock stops them, with the file and line."""
    monkeypatch.setattr(theme_module, "RENDER_SECONDS", 0.5)
    silent = (
        "<p>start</p>\n{% for i in range(10000) %}{% for j in range(10000) %}"
        "{% for k in range(10000) %}{% endfor %}{% endfor %}{% endfor %}"
    )
    started = time.monotonic()
    message = failure(theme(index_html=silent))
    assert time.monotonic() - started < 10
    assert message.startswith("templates/index.html.j2:2: rendering took longer than 0.5 s")
    # The thread that rendered goes on unharmed: the shipped theme renders in it as before
    # (with the usual budget: a first render of it, compiling, took over 0.5 s under load).
    monkeypatch.undo()
    assert b"</html>" in render_html(hindi_two_days(), SITE_HI)


def test_a_render_within_its_budget_is_not_interrupted_afterwards():
    """The timer of a finished render never fires into what the thread does next."""
    with Deadline(0.05):
        pass
    time.sleep(0.2)  # past the budget: nothing is raised here


# --- the contract the README documents --------------------------------------------------------


def _contract_names() -> list[str]:
    """The names of the README's context table: `site.title`, `days[].items[].also[].link`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The template context", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_.\[\]]+)` \|", section, flags=re.MULTILINE)


def _probe(name: str) -> str:
    """A template that fails unless `name` exists (None counts) wherever it reaches:
    `days[].items[].title` is looked up on every item of every day."""
    head, _, rest = name.partition("[].")
    if not rest:
        variable = re.sub(r"\W", "_", name)
        return f"{{% if {name} is undefined %}}{{{{ missing_{variable} }}}}{{% endif %}}"
    return f"{{% for x in {head} %}}{_probe('x.' + rest)}{{% endfor %}}"


def test_every_name_of_the_readme_contract_is_in_the_context():
    names = _contract_names()
    assert len(names) > 40, names  # the table was found
    for name in ("site.direction", "days[].items[].published_label", "archive.prev"):
        assert name in names
    timeline = hindi_two_days()
    news = ChannelInfo("news", "News", "The news")

    def root(page: Theme) -> bytes:
        return render_html(timeline, SITE_HI, (JAGRAN,), theme=page, channels=(news,),
                           earlier="2025-07-11")  # fmt: skip

    def on_channel(page: Theme) -> bytes:
        return render_html(timeline, SITE_HI, theme=page, channel=news)

    def day(page: Theme) -> bytes:
        neighbours = DayPage("2025-07-13", prev="2025-07-12", next="2025-07-14")
        return render_day_page(timeline, SITE_HI, neighbours, theme=page)

    for name in names:
        if name.startswith("channel."):
            render = on_channel
        elif name.split(".")[0] == "archive" and name != "archive.latest":
            render = day
        else:
            render = root
        render(theme(index_html=_probe(name), day_html=_probe(name)))
    # The probe does catch a name that is not there.
    with pytest.raises(ThemeError, match="missing_site_titel"):
        root(theme(index_html=_probe("site.titel")))
    with pytest.raises(ThemeError, match="missing_x_titel"):
        root(theme(index_html=_probe("days[].items[].also[].titel")))


# --- at load: check, once, the previous page stays ------------------------------------------


def _site(tmp_path: Path, templates: str | None = "templates") -> Path:
    (tmp_path / "a.xml").write_bytes(rss2("A", "https://a.example.org/", _items("a", 3)))
    setting = f'templates = "{templates}"\n' if templates else ""
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[aggregator]\nlanguage = "hi"\ntimezone = "Asia/Kolkata"\n'
        f'[publish]\nmax_age = "3650d"\n{setting}'
        '[[feeds]]\nname = "a"\nurl = "a.xml"\n',
        encoding="utf-8",
    )
    (tmp_path / "templates").mkdir(exist_ok=True)
    return config


def _once(tmp_path: Path) -> tuple[int, str, str]:
    result = run_cli("once", "--config", "feeds.toml", cwd=tmp_path, timeout=120)
    return result.returncode, result.stdout, result.stderr


def test_once_publishes_with_the_operators_index(tmp_path: Path):
    _site(tmp_path)
    (tmp_path / "templates" / "index.html.j2").write_text(OPERATOR_INDEX, encoding="utf-8")
    check = run_cli("check", "--config", "feeds.toml", cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "templates from templates: index.html.j2 (the others shipped)" in check.stdout
    status, _, stderr = _once(tmp_path)
    assert status == 0, stderr
    root = parse((tmp_path / "output" / "index.html").read_bytes())
    assert len(root.xpath("//p[@class='operator-item']")) == 3
    assert root.xpath("//article") == []


def test_a_template_saved_with_a_byte_order_mark_publishes_without_it(tmp_path: Path):
    """Windows Notepad starts a UTF-8 file with U+FEFF: feeds.toml's was dropped, a
    template's was copied into the page, once for each template included."""
    _site(tmp_path)
    (tmp_path / "templates" / "index.html.j2").write_text(
        "\ufeff" + OPERATOR_INDEX, encoding="utf-8"
    )
    status, _, stderr = _once(tmp_path)
    assert status == 0, stderr
    page = (tmp_path / "output" / "index.html").read_text(encoding="utf-8")
    assert "\ufeff" not in page
    assert len(parse(page.encode()).xpath("//p[@class='operator-item']")) == 3


def test_a_syntax_error_is_one_line_at_check_and_once_and_the_previous_page_stays(
    tmp_path: Path,
):
    config = _site(tmp_path)
    index = tmp_path / "templates" / "index.html.j2"
    index.write_text(OPERATOR_INDEX, encoding="utf-8")
    assert _once(tmp_path)[0] == 0
    output = tmp_path / "output"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in output.iterdir()}

    index.write_text(OPERATOR_INDEX.replace("{{ item.title }}", "{{ item.title }"), "utf-8")
    line = OPERATOR_INDEX.splitlines().index('<p class="operator-item">{{ item.title }}</p>') + 1
    expected = f"error: templates/index.html.j2:{line}: unexpected '}}'\n"
    for command in ("check", "once", "run"):
        result = run_cli(command, "--config", "feeds.toml", cwd=tmp_path, timeout=60)
        assert (result.returncode, result.stderr) == (2, expected), command
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in output.iterdir()} == before
    with pytest.raises(ConfigError) as caught:
        load_config(config, display_name="feeds.toml")
    assert (caught.value.file, caught.value.line) == ("templates/index.html.j2", line)


def test_a_misspelt_name_is_caught_at_load_against_the_sample(tmp_path: Path):
    _site(tmp_path)
    (tmp_path / "templates" / "_item.html.j2").write_text(
        "<li>\n{{ item.title }}\n{{ item.publshed_label }}\n</li>\n", encoding="utf-8"
    )
    result = run_cli("check", "--config", "feeds.toml", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: templates/_item.html.j2:3: ")
    assert "publshed_label" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_sandbox_violation_at_load_is_one_line_without_a_traceback(tmp_path: Path):
    _site(tmp_path)
    (tmp_path / "templates" / "index.html.j2").write_text(
        "<!DOCTYPE html>\n<title>{{ ''.__class__.__mro__ }}</title>\n", encoding="utf-8"
    )
    status, _, stderr = _once(tmp_path)
    assert status == 2
    assert stderr == (
        "error: templates/index.html.j2:2: access to attribute '__class__' of 'str' object "
        "is unsafe.\n"
    )
    assert not (tmp_path / "output").exists()


def test_a_template_failing_only_on_real_data_fails_the_publish_and_keeps_the_files(
    tmp_path: Path,
):
    """The sample has two days and three items; a template that breaks past them passes
    the check, and fails at publish: one line, exit 1, every file as it was."""
    _site(tmp_path, templates=None)
    assert _once(tmp_path)[0] == 0
    output = tmp_path / "output"
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    _site(tmp_path)  # now with templates/
    (tmp_path / "a.xml").write_bytes(rss2("A", "https://a.example.org/", _items("a", 4)))
    (tmp_path / "templates" / "index.html.j2").write_text(
        "{% set briefs = days|map(attribute='items')|map('length')|sum %}\n"
        "{% if briefs > 3 %}{{ no_such }}{% endif %}\n",
        encoding="utf-8",
    )
    check = run_cli("check", "--config", "feeds.toml", cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stderr
    status, _, stderr = _once(tmp_path)
    assert status == 1
    assert stderr.startswith("error: templates/index.html.j2:2: ")
    assert "no_such" in stderr and len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before


def test_a_missing_file_falls_back_to_the_shipped_one_through_once(tmp_path: Path):
    _site(tmp_path)  # an empty templates/: every page the shipped one
    assert _once(tmp_path)[0] == 0
    shipped = (tmp_path / "output" / "index.html").read_bytes()
    assert b"<article>" in shipped
    (tmp_path / "templates" / "_item.html.j2").write_text(
        '<li class="mine">{{ item.title }}</li>\n', encoding="utf-8"
    )
    assert _once(tmp_path)[0] == 0  # an edited template renders again, with no new item
    root = parse((tmp_path / "output" / "index.html").read_bytes())
    assert len(root.xpath("//li[@class='mine']")) == 3
    assert texts(root, "//footer/p")[0].startswith("सदस्यता लें:")  # the shipped _base


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "feeds.toml:6: publish.templates: no such directory "),
        ("file", "feeds.toml:6: publish.templates: no such directory "),
        ("huge", f"templates/index.html.j2 is larger than {MAX_TEMPLATE_BYTES // 1024} KB"),
        ("latin1", "publish.templates: templates/index.html.j2: line 2 is not UTF-8"),
    ],
)
def test_a_templates_directory_that_cannot_be_read_is_one_line(
    tmp_path: Path, setup: str, expected: str
):
    config = _site(tmp_path)
    templates = tmp_path / "templates"
    if setup == "missing":
        templates.rmdir()
    elif setup == "file":
        templates.rmdir()
        templates.write_text("not a directory", encoding="utf-8")
    elif setup == "huge":
        (templates / "index.html.j2").write_text("x" * (MAX_TEMPLATE_BYTES + 1), "utf-8")
    else:
        (templates / "index.html.j2").write_bytes(b"<p>\n\xe9t\xe9</p>\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, display_name="feeds.toml")
    assert expected in str(caught.value), str(caught.value)
    assert caught.value.others == ()


def test_files_that_are_not_templates_are_ignored(tmp_path: Path):
    config = _site(tmp_path)
    templates = tmp_path / "templates"
    (templates / "README.md").write_text("{{ broken", encoding="utf-8")
    (templates / ".index.html.j2.swp").write_text("{{ broken", encoding="utf-8")
    (templates / "nested.j2").mkdir()
    (templates / "index.html.j2").write_text(OPERATOR_INDEX, encoding="utf-8")
    loaded = load_config(config, display_name="feeds.toml").publish.theme
    assert loaded.names == ("index.html.j2",)
    assert loaded.directory == "templates" and loaded.path == templates.resolve()


def test_an_absolute_templates_path_is_named_as_written(tmp_path: Path):
    config = _site(tmp_path, templates=str(tmp_path / "templates"))
    (tmp_path / "templates" / "index.html.j2").write_text("{{ x }", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config, display_name="feeds.toml")
    assert str(caught.value) == f"{tmp_path}/templates/index.html.j2:1: unexpected '}}'"


# --- the example theme ----------------------------------------------------------------------


def test_the_example_theme_checks_renders_and_is_used(tmp_path: Path):
    _site(tmp_path, templates=str(EXAMPLE_THEME))
    check = run_cli("check", "--config", "feeds.toml", cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stderr
    status, _, stderr = _once(tmp_path)
    assert status == 0, stderr
    page = (tmp_path / "output" / "index.html").read_bytes()
    root = parse(page)
    assert root.get("class") == "briefs"
    assert len(root.xpath("//li[@class='brief']")) == 3
    assert root.xpath("//p[@class='teaser'] | //article") == []  # one line a story
    # The shipped day page, with the example's document and item.
    example = load_config(tmp_path / "feeds.toml").publish.theme
    day = render_day_page(
        hindi_two_days(), SITE_HI, DayPage("2025-07-13", prev="2025-07-12"), theme=example
    )
    day_root = parse(day)
    assert day_root.get("class") == "briefs"
    assert texts(day_root, "//title") == ["13 जुलाई 2025 · हिंदी समाचार"]
    assert day_root.xpath("//a[@rel='prev']/@href") == ["../../../archive/2025/07/12.html"]


def test_the_example_theme_speaks_english_too():
    example = read_theme(str(EXAMPLE_THEME), ROOT, "feeds.toml")
    root = parse(render_html(Timeline(), SITE_EN, theme=example))
    assert "Subscribe:" in root.text_content()


# --- at publish, in the daemon ----------------------------------------------------------------


def test_a_daemon_whose_publish_fails_on_a_template_logs_one_line_and_keeps_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """Publishing retries; the failure is logged once, without a traceback, and the files
    of the last good publish stay."""
    config = _site(tmp_path, templates=None)
    daemon = Daemon(config, load_config(config), options=FAST)
    page = tmp_path / "output" / "index.html"

    def published() -> bool:
        return page.exists() and "a ख़बर 2" in page.read_text(encoding="utf-8")

    asyncio.run(_run_until(daemon, published, 30))
    before = {p.name: p.read_bytes() for p in (tmp_path / "output").iterdir()}
    _site(tmp_path)
    (tmp_path / "templates" / "index.html.j2").write_text(  # the sample's sources pass
        '<p>\n{% for s in sources if s.title == "A" %}{{ no_such }}{% endfor %}\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(publishing, "PUBLISH_RETRY_SECONDS", 0.1)
    attempts = []
    real = publish.publish_timeline

    def counted(*args: Any) -> PublishReport:
        attempts.append(1)
        return real(*args)

    monkeypatch.setattr(publishing, "publish_timeline", counted)
    daemon = Daemon(config, load_config(config), options=FAST)
    with caplog.at_level(logging.INFO):
        asyncio.run(_run_until(daemon, lambda: len(attempts) >= 4, 30))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        f"publishing failed: {tmp_path}/templates/index.html.j2:2: 'no_such' is undefined"
    ]
    assert failures[0].exc_info is None
    assert {p.name: p.read_bytes() for p in (tmp_path / "output").iterdir()} == before
