"""A local feed farm for benchmarks: N feeds × M items on 127.0.0.1, half RSS 2.0, half Atom.

Items carry realistic ~300-character HTML summaries in Hindi and English, unique guids and
dates spread over the two weeks before the farm starts. `churn` gives a fraction of the
feeds K new items, dated the moment of the churn: like a publisher's new items, they land on
today, where the fixed date of 2025 the farm used to have put them on a past, archived day,
which each publish then rendered again (work a deployment does not have). The server
(bench/farmserver.py, its own process) answers ETag/If-Modified-Since with 304 and gzips when
asked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.farmserver import FarmServer
from tests.feedfactory import Item, atom, rss2

HINDI = (
    "देश के वरिष्ठ और चर्चित विशेष लोक अभियोजक को राष्ट्रपति ने राज्यसभा के लिए नामित किया है। "
    "बिहार में साल के अंत में होने वाले विधानसभा चुनाव से पहले विपक्षी दलों और चुनाव आयोग के बीच "
    "आरोप-प्रत्यारोप का दौर जारी है, और मानसून ने कई राज्यों में जनजीवन प्रभावित किया है।"
)
ENGLISH = (
    "Negotiators from nearly 200 countries left Bonn without a draft text on how much money "
    "wealthier nations should provide to help developing countries adapt to a warming climate. "
    "Delegates said talks would resume ahead of the annual summit in November, officials said."
)


@dataclass
class Farm:
    feeds: int
    items: int
    server: FarmServer = field(default_factory=FarmServer)
    _items: dict[int, list[Item]] = field(default_factory=dict)
    _serial: int = 0
    _now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def start(self) -> Farm:
        self.server.start()
        rng = random.Random(42)
        self._now = datetime.now(UTC)
        for n in range(self.feeds):
            self._items[n] = [self._item(n, rng.uniform(0, 14 * 86400)) for _ in range(self.items)]
            self._publish(n)
        return self

    def stop(self) -> None:
        self.server.stop()

    def urls(self) -> list[str]:
        return [self.server.url(f"/feed/{n}") for n in range(self.feeds)]

    def feeds_toml(self) -> list[str]:
        """feeds.toml lines: one `[[feeds]]` table per feed, named f0, f1, …"""
        lines = []
        for n, url in enumerate(self.urls()):
            lines += ["[[feeds]]", f'name = "f{n}"', f'url = "{url}"']
        return lines

    def churn(self, fraction: float, new_items: int) -> int:
        """Give `fraction` of the feeds `new_items` new items each; returns feeds changed."""
        changed = range(0, self.feeds, max(1, round(1 / fraction))) if fraction else range(0)
        self._now = datetime.now(UTC)
        for n in changed:
            fresh = [self._item(n, 60.0 * k) for k in range(new_items)]
            self._items[n] = (fresh + self._items[n])[: self.items]
            self._publish(n)
        return len(changed)

    def counters(self) -> tuple[int, int, int]:
        """(requests, 304 answers, connections accepted) since the last `reset`."""
        return self.server.counters()

    def reset(self) -> None:
        self.server.reset()

    def _item(self, n: int, age_seconds: float) -> Item:
        self._serial += 1
        hindi = n % 2 == 0
        text = HINDI if hindi else ENGLISH
        title = f"{'ख़बर' if hindi else 'Story'} {self._serial}: {text[:60]}"
        return Item(
            title=title,
            link=f"https://site{n}.example.org/story/{self._serial}",
            guid=f"tag:site{n}.example.org,2025:{self._serial}",
            date=(self._now - timedelta(seconds=age_seconds)).replace(microsecond=0),
            summary_html=f"<p>{text}</p>",
            author="संवाददाता" if hindi else "Staff",
        )

    def _publish(self, n: int) -> None:
        items = self._items[n]
        site = f"https://site{n}.example.org/"
        if n % 2 == 0:
            body = rss2(f"Feed {n}", site, items)
        else:
            body = atom(f"Feed {n}", site, f"tag:site{n}.example.org,2025:feed", items)
        self.server.publish(f"/feed/{n}", body, self._now.timestamp() + self._serial)
