"""`python -m bench partial`: the parse alone, whole vs partial, for K new items of N.

The farm's documents (bench/farm.py: ~300-character HTML summaries in Hindi and English,
RSS 2.0 and Atom 1.0) with N items, then with K new ones at the top and the K oldest gone.
Each round times, in one process, `parse_feed` of the new document (what a poll did before)
and `parse_changed` of it with the memory of the old one (what it does now), in turns whose
order alternates, plus the cut alone (`split_document`). CPU time per parse, the median over
the rounds; the ratio is of the medians.

    python -m bench partial [--items 50] [--new 3] [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from aggregator.parse.feed import parse_feed
from aggregator.parse.fields import ENTRY_LIMIT
from aggregator.parse.partial import parse_changed
from aggregator.parse.split import split_document
from bench.farm import Farm
from tests.feedfactory import Item, atom, rss2

URL = "https://site.example.org/feed"
HEADERS = {"content-type": "application/xml; charset=utf-8"}


def documents(n: int, items: int, new: int) -> tuple[bytes, bytes]:
    """Feed `n` of a farm (even: RSS in Hindi, odd: Atom in English) before and after `new`
    items arrived."""
    farm = Farm(n + 1, items)  # never started: only its items are made
    old = [farm._item(n, 3600.0 * (k + 1)) for k in range(items)]
    fresh = [farm._item(n, 60.0 * (k + 1)) for k in range(new)]
    site = f"https://site{n}.example.org/"

    def build(chosen: list[Item]) -> bytes:
        if n % 2 == 0:
            return rss2(f"Feed {n}", site, chosen)
        return atom(f"Feed {n}", site, f"tag:site{n}.example.org,2025:feed", chosen)

    return build(old), build((fresh + old)[:items])


def _cpu(call: Callable[[], object]) -> float:
    start = time.process_time()
    call()
    return time.process_time() - start


def measure(n: int, items: int, new: int, rounds: int) -> dict[str, float]:
    before, after = documents(n, items, new)
    memory = parse_changed(before, HEADERS, URL).memory
    assert memory is not None, "the farm's document was not cut"
    partly = parse_changed(after, HEADERS, URL, memory=memory)
    assert partly.items_parsed == new, partly.items_parsed
    timings: dict[str, list[float]] = {"whole": [], "partial": [], "cut": []}
    calls = {
        "whole": lambda: parse_feed(after, HEADERS, URL),
        "partial": lambda: parse_changed(after, HEADERS, URL, memory=memory),
        "cut": lambda: split_document(after, max_items=ENTRY_LIMIT),
    }
    for round_ in range(rounds):
        order = ["whole", "partial", "cut"] if round_ % 2 == 0 else ["cut", "partial", "whole"]
        for name in order:
            timings[name].append(_cpu(calls[name]))
    return {name: statistics.median(values) * 1000 for name, values in timings.items()}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench partial", description=__doc__)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--new", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    print(f"parse of a changed document, {args.new} new of {args.items} items, median CPU ms")
    print()
    print("| document | bytes | whole ms | partial ms | cut ms | whole / partial |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, kind in ((0, "RSS 2.0, Hindi"), (1, "Atom 1.0, English")):
        result = measure(n, args.items, args.new, args.rounds)
        size = len(documents(n, args.items, args.new)[1])
        print(
            f"| {kind} | {size} | {result['whole']:.2f} | {result['partial']:.2f} | "
            f"{result['cut']:.2f} | {result['whole'] / result['partial']:.1f}x |"
        )
