"""What the parser pool's fork server imports when it starts (`ParsePool` preloads it).

The parser, so every worker is forked with it loaded, and `die_with_parent`, so the fork
server dies with the process that started it instead of outliving a `kill -9` of it.

Then one small RSS and one Atom document are parsed (`warm_up`), so that what a first parse
loads or builds (feedparser's lazy imports, compiled patterns, time zone data) is in the
fork server already and every worker is born with it: workers are replaced every few
thousand feeds (`pool._TASKS_PER_WORKER`), and each new one warmed itself up again before.
"""

from aggregator import parse  # noqa: F401  (loaded once, inherited by every worker)
from aggregator.parse.partial import parse_changed
from aggregator.processes import die_with_parent

_SAMPLES = (
    b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
<title>Warm-up</title><link>https://example.org/</link><description>d</description><ttl>60</ttl>
<item><title>One &amp; two</title><link>/one</link><guid isPermaLink="false">one</guid>
<description>&lt;p&gt;A &lt;a href="/x"&gt;link&lt;/a&gt;
\xe0\xa4\xb8\xe0\xa4\xae\xe0\xa4\xbe</description>
<pubDate>Sun, 13 Jul 2025 10:00:00 +0530</pubDate><dc:creator>A</dc:creator><category>c</category>
</item></channel></rss>""",
    b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Warm-up</title><id>urn:w</id>
<updated>2025-07-13T10:00:00Z</updated><link rel="alternate" href="https://example.org/"/>
<entry><title type="html">One &lt;b&gt;two&lt;/b&gt;</title><id>urn:w:1</id>
<link href="https://example.org/1"/><updated>2025-07-13T10:00:00Z</updated>
<published>2025-07-12T10:00:00+05:30</published><author><name>A</name></author>
<content type="html">&lt;p&gt;text&lt;/p&gt;</content><summary>s</summary></entry></feed>""",
)


def warm_up() -> None:
    """Parse the samples once, as a worker would (their results are thrown away). Never
    fails: a fork server that did not start would leave every feed unparsed, and a cold
    worker is only slower."""
    for sample in _SAMPLES:
        try:
            parse_changed(sample, {}, "https://example.org/f", timezone="Asia/Kolkata", memory=None)
        except Exception:  # a sample the parser refuses: see above
            continue


die_with_parent()
warm_up()
