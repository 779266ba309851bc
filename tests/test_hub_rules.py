"""The hub's pure rules: a subscription request read, callback addresses judged, topics
named, deliveries signed, failures retried then dropped (WebSub §5, §7)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.hub.addresses import refusal
from aggregator.hub.requests import (
    Refusal,
    SubscriptionRequest,
    callback_problem,
    granted_lease,
    read_request,
)
from aggregator.hub.rules import (
    MAX_RETRY_DELAY,
    Drop,
    Retry,
    after_failure,
    challenge_echoed,
    retry_delay,
    signature,
)
from aggregator.hub.subscribe import RateWindow, with_query
from aggregator.hub.topics import changed_topics, is_feed_file, link_header, topic_file, topic_url
from aggregator.settings import WebsubSettings
from aggregator.urls import as_uri

BASE = "https://digest.example.org/"
HUB = WebsubSettings(hub_url=BASE + "websub")
NOW = datetime(2025, 7, 13, 12, tzinfo=UTC)


def _form(**fields: str) -> list[tuple[str, str]]:
    return [(f"hub.{k}", v) for k, v in fields.items()]


SUBSCRIBE = {"mode": "subscribe", "topic": BASE + "atom.xml", "callback": "https://r.example/cb"}


# -- a subscription request -------------------------------------------------------------


def test_a_subscribe_request_is_read_with_the_default_lease() -> None:
    request = read_request([*_form(**SUBSCRIBE), ("other", "ignored")], HUB)
    assert request == SubscriptionRequest(
        "subscribe", BASE + "atom.xml", "https://r.example/cb", HUB.default_lease, None
    )


def test_an_unsubscribe_request_is_read() -> None:
    request = read_request(_form(**{**SUBSCRIBE, "mode": "unsubscribe"}), HUB)
    assert isinstance(request, SubscriptionRequest) and request.mode == "unsubscribe"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"topic": BASE + "atom.xml", "callback": "https://r.example/cb"}, "hub.mode must be"),
        ({**SUBSCRIBE, "mode": "publish"}, "hub.mode=publish is not taken"),
        ({**SUBSCRIBE, "mode": "SUBSCRIBE"}, "hub.mode must be"),
        ({"mode": "subscribe", "callback": "https://r.example/cb"}, "hub.topic is missing"),
        ({**SUBSCRIBE, "topic": BASE + "x" * 2048}, "hub.topic is longer than 2048"),
        ({**SUBSCRIBE, "callback": ""}, "hub.callback is missing"),
        ({**SUBSCRIBE, "callback": "ftp://r.example/cb"}, "must be an http or https URL"),
        ({**SUBSCRIBE, "callback": "/relative"}, "must be an http or https URL"),
        ({**SUBSCRIBE, "callback": "https://u:p@r.example/"}, "user name or password"),
        ({**SUBSCRIBE, "callback": "https://r.example/#x"}, "fragment"),
        ({**SUBSCRIBE, "callback": "https://r.example:99999/"}, "not a valid URL"),
        ({**SUBSCRIBE, "callback": "https://r.example/a b"}, "spaces or control characters"),
        ({**SUBSCRIBE, "callback": "https://r.example/" + "c" * 2048}, "longer than 2048"),
        ({**SUBSCRIBE, "lease_seconds": "-5"}, "whole number of seconds"),
        ({**SUBSCRIBE, "lease_seconds": "1e9"}, "whole number of seconds"),
        ({**SUBSCRIBE, "lease_seconds": "١٢"}, "whole number of seconds"),  # Arabic-Indic digits
        ({**SUBSCRIBE, "secret": "s" * 200}, "shorter than 200 bytes"),
        ({**SUBSCRIBE, "secret": "स" * 67}, "shorter than 200 bytes"),  # 201 bytes in UTF-8
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(fields: dict[str, str], reason: str):
    refused = read_request(_form(**fields), HUB)
    assert isinstance(refused, Refusal) and refused.status == 400
    assert reason in refused.reason


def test_a_field_given_twice_is_refused() -> None:
    refused = read_request([*_form(**SUBSCRIBE), ("hub.secret", ""), ("hub.secret", "")], HUB)
    assert refused == Refusal(400, "hub.secret is given twice")


def test_a_secret_of_199_bytes_is_taken() -> None:
    request = read_request(_form(**SUBSCRIBE, secret="s" * 199), HUB)
    assert isinstance(request, SubscriptionRequest) and request.secret == "s" * 199


@given(st.integers(min_value=0, max_value=10**12 - 1))
def test_a_granted_lease_lies_within_the_bounds(seconds: int) -> None:
    lease = granted_lease(str(seconds), HUB)
    assert isinstance(lease, timedelta)
    assert HUB.min_lease <= lease <= HUB.max_lease
    if HUB.min_lease <= timedelta(seconds=seconds) <= HUB.max_lease:
        assert lease == timedelta(seconds=seconds)


@given(st.text(max_size=300))
def test_any_callback_text_is_judged_without_error(text: str) -> None:
    problem = callback_problem(text)
    assert problem is None or isinstance(problem, str)


# -- callback addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback"),
        ("127.8.9.10", "a loopback"),
        ("::1", "a loopback"),
        ("10.1.2.3", "a private"),
        ("172.16.0.1", "a private"),
        ("192.168.1.1", "a private"),
        ("fd12:3456::1", "a private"),
        ("169.254.169.254", "a link-local"),  # cloud metadata services live here
        ("fe80::1", "a link-local"),
        ("fe80::1%eth0", "a link-local"),
        ("224.0.0.251", "a multicast"),
        ("ff02::1", "a multicast"),
        ("0.0.0.0", "an unspecified"),
        ("::", "an unspecified"),
        ("240.0.0.1", "a private"),  # reserved, which Python counts as private
        ("100.64.0.1", "a non-public"),  # carrier-grade NAT
        ("::ffff:127.0.0.1", "carries 127.0.0.1, a loopback"),
        ("::ffff:10.0.0.1", "carries 10.0.0.1, a private"),
        ("64:ff9b::a00:1", "carries 10.0.0.1, a private"),  # NAT64
        ("2002:7f00:1::1", "carries 127.0.0.1, a loopback"),  # 6to4
    ],
)
def test_addresses_a_callback_may_not_lead_to(address: str, kind: str) -> None:
    reason = refusal(address)
    assert reason is not None and kind in reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


def test_text_that_is_no_address_is_refused() -> None:
    assert refusal("localhost") == "'localhost' is not an IP address"


# -- topics -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["atom.xml", "rss.xml", "feed.json", "hindi/atom.xml"])
def test_published_feeds_are_topics(name: str) -> None:
    assert is_feed_file(name)
    assert topic_file(BASE, topic_url(BASE, name)) == name


@pytest.mark.parametrize(
    "topic",
    [
        BASE + "index.html",
        BASE + "sources.opml",
        BASE + "../atom.xml",
        BASE + ".hidden/atom.xml",
        BASE + "/atom.xml",
        BASE + "atom.xml?x=1",
        BASE + "atom.xml#x",
        BASE + "a%2Fb/atom.xml",
        BASE + "a\\atom.xml",
        "https://other.example/atom.xml",
        "http://digest.example.org/atom.xml",  # another scheme: not what the feed names
    ],
)
def test_other_urls_name_no_topic(topic: str) -> None:
    assert topic_file(BASE, topic) is None


def test_the_topics_a_publish_changed() -> None:
    changed = ("rss.xml", "atom.xml", "index.html", "sources.opml", "tech/feed.json")
    assert changed_topics(BASE, changed) == (
        BASE + "rss.xml",
        BASE + "atom.xml",
        BASE + "tech/feed.json",
    )


def test_the_link_header_names_hubs_then_self() -> None:
    assert link_header([BASE + "websub", "https://hub.example/"], BASE + "atom.xml") == (
        f'<{BASE}websub>; rel="hub", <https://hub.example/>; rel="hub", '
        f'<{BASE}atom.xml>; rel="self"'
    )


# -- verification, signing, retries ------------------------------------------------------


def test_a_delivery_signature_is_the_sha256_hmac_of_the_body() -> None:
    body = "<feed>हिंदी</feed>".encode()
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret", body) == f"sha256={expected}"


def test_the_challenge_must_be_echoed_exactly() -> None:
    assert challenge_echoed(b"abc123\n", "abc123")
    assert not challenge_echoed(b"abc1234", "abc123")
    assert not challenge_echoed(b"", "abc123")
    assert not challenge_echoed(b"<html>abc123</html>", "abc123")


def test_verification_parameters_keep_the_callback_query() -> None:
    params = [("hub.mode", "subscribe"), ("hub.topic", BASE + "atom.xml")]
    assert with_query("https://r.example/cb?id=7", params) == (
        "https://r.example/cb?id=7&hub.mode=subscribe&hub.topic=https%3A%2F%2Fdigest.example.org"
        "%2Fatom.xml"
    )
    assert with_query("https://r.example/cb", params[:1]) == (
        "https://r.example/cb?hub.mode=subscribe"
    )


@given(st.integers(min_value=1, max_value=1000))
def test_retry_delays_double_and_stay_bounded(failures: int) -> None:
    base = timedelta(seconds=30)
    delay = retry_delay(failures, base)
    assert base <= delay <= MAX_RETRY_DELAY
    assert retry_delay(failures + 1, base) >= delay


def test_failures_are_retried_then_the_subscriber_dropped() -> None:
    websub = WebsubSettings(max_failures=3, retry_delay=timedelta(minutes=1))
    first = after_failure(0, websub, NOW)
    assert first == Retry(NOW + timedelta(minutes=1), 1)
    assert after_failure(1, websub, NOW) == Retry(NOW + timedelta(minutes=2), 2)
    dropped = after_failure(2, websub, NOW)
    assert isinstance(dropped, Drop) and "3 deliveries in a row failed" in dropped.reason


def test_a_gone_callback_is_dropped_at_once() -> None:
    assert after_failure(0, HUB, NOW, gone=True) == Drop("its callback answered 410 Gone")


def test_the_rate_window_counts_per_topic_and_slides() -> None:
    now = [0.0]
    window = RateWindow(60.0, clock=lambda: now[0])
    assert window.allow("a", 2) and window.allow("a", 2)
    assert not window.allow("a", 2)
    assert window.allow("b", 2)
    now[0] = 60.0
    assert window.allow("a", 2)


IRI_BASE = "https://समाचार.example/हिंदी/"
URI_BASE = "https://xn--61b3bh3a5ab.example/%E0%A4%B9%E0%A4%BF%E0%A4%82%E0%A4%A6%E0%A5%80/"


def test_an_iri_base_url_names_topics_as_the_feeds_self_link_does() -> None:
    """The feeds publish `base_url` as a URI (`as_uri`): topics, the `Link` header and
    deliveries follow it; a topic naming the IRI as written names the same feed."""
    assert topic_url(IRI_BASE, "hindi/atom.xml") == URI_BASE + "hindi/atom.xml"
    assert topic_url(IRI_BASE, "atom.xml") == as_uri(IRI_BASE + "atom.xml")
    assert topic_file(IRI_BASE, URI_BASE + "hindi/atom.xml") == "hindi/atom.xml"
    assert topic_file(IRI_BASE, IRI_BASE + "atom.xml") == "atom.xml"
    assert topic_file(IRI_BASE, URI_BASE + "index.html") is None
    assert changed_topics(IRI_BASE, ["atom.xml", "index.html"]) == (URI_BASE + "atom.xml",)
    header = link_header([IRI_BASE + "websub"], topic_url(IRI_BASE, "atom.xml"))
    assert header == f'<{URI_BASE}websub>; rel="hub", <{URI_BASE}atom.xml>; rel="self"'
    assert header.isascii()
