"""A running daemon (`aggregator run`, a subprocess) and its theme: an edited template is
picked up by itself (the daemon watches the directory), a broken one is one log line naming
the file and line while the running templates and the last good page stay, at the watcher's
reload and at SIGHUP's alike."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.feedfactory import rss2
from tests.test_daemon import Daemon, _free_port, _items, wait_for

PAGE = """{% extends "_base.html.j2" %}
{% block main %}
<main class="VERSION">
{% for day in days %}{% for item in day.items %}
<p>{{ item.title }}</p>
{% endfor %}{% endfor %}
</main>
{% endblock %}
"""


def _write(path: Path, text: str) -> None:
    """Write-and-rename, as editors do."""
    new = path.with_name(path.name + ".new")
    new.write_text(text, encoding="utf-8")
    new.replace(path)


@pytest.mark.slow
def test_a_running_daemon_reloads_its_templates_and_keeps_the_last_good_ones(tmp_path: Path):
    (tmp_path / "a.xml").write_bytes(rss2("A", "https://a.example.org/", _items("a", 2)))
    templates = tmp_path / "templates"
    templates.mkdir()
    index = templates / "index.html.j2"
    _write(index, PAGE.replace("VERSION", "theme-one"))
    port = _free_port()
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[aggregator]\nbase_url = "http://127.0.0.1:{port}/"\n'
        f'[publish]\nmax_age = "3650d"\ntemplates = "templates"\n'
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
        '[poll]\ninterval = "1h"\n[[feeds]]\nname = "a"\nurl = "a.xml"\n',
        encoding="utf-8",
    )
    daemon = Daemon(config, port).start()
    try:

        def page() -> str:
            return daemon.get("/").text

        wait_for(lambda: 'class="theme-one"' in page() and "a ख़बर 1" in page(), 30, "theme one")

        _write(index, PAGE.replace("VERSION", "theme-two"))  # the watcher alone reloads
        wait_for(lambda: 'class="theme-two"' in page(), 30, "the edited template")
        good = page()

        _write(index, PAGE.replace("VERSION", "theme-three").replace("{{ item.title }}", "{{ x }"))
        line = PAGE.splitlines().index("<p>{{ item.title }}</p>") + 1
        refused = f"configuration not reloaded: {templates}/index.html.j2:{line}: unexpected '}}'"
        wait_for(lambda: refused in daemon.log_text(), 30, "the broken template's line")
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log_text().count(refused) == 2, 30, "SIGHUP's reload")
        assert page() == good  # the last good page stays, from the running templates
        assert daemon.get("/healthz").status_code == 200
        assert "Traceback" not in daemon.log_text()

        _write(index, PAGE.replace("VERSION", "theme-four"))
        wait_for(lambda: 'class="theme-four"' in page(), 30, "the fixed template")
        assert "configuration OK again" in daemon.log_text()
        assert daemon.stop() == 0
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=15)
