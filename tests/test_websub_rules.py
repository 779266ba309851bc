"""The subscriber's pure parts: discovery, X-Hub-Signature, the subscription's next step,
verification of intent, the safety-net schedule; and where a hub may be."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.policy import Push, next_poll
from aggregator.store.records import PushState, Subscription
from aggregator.types import ParsedFeed
from aggregator.websub import rules
from aggregator.websub.discovery import Discovery, discover, feed_links, link_header_links
from aggregator.websub.hubs import is_special, resolves_to_special
from aggregator.websub.signature import sign, signature_problem

NOW = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
HUB = "https://hub.example/"
TOPIC = "https://news.example/feed.xml"
SOURCE_URL = "https://news.example/feed.xml"


def _sub(state: PushState = PushState.ACTIVE, **changes: object) -> Subscription:
    base = Subscription(
        source="news",
        source_url=SOURCE_URL,
        hub=HUB,
        topic=TOPIC,
        token="t" * 43,
        secret="s" * 43,
        state=state,
        requested=NOW - timedelta(days=1),
        lease_seconds=864000,
        lease_expires=NOW + timedelta(days=9),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- discovery ---------------------------------------------------------------------------


def test_link_header_links_with_commas_and_semicolons_inside() -> None:
    value = '<https://h.example/a,b>; rel="hub", <https://x.example/f;v=1>; rel="self alternate"'
    assert link_header_links(value) == [
        ("https://h.example/a,b", frozenset({"hub"})),
        ("https://x.example/f;v=1", frozenset({"self", "alternate"})),
    ]


def test_the_link_header_wins_over_the_document() -> None:
    feed = ParsedFeed(None, None, None, (), hub="https://other.example/", self_url=TOPIC)
    headers = {"link": f'<{HUB}>; rel="hub", <{TOPIC}>; rel="self"'}
    assert discover(headers, feed, TOPIC) == Discovery(HUB, TOPIC)
    assert discover({}, feed, TOPIC) == Discovery("https://other.example/", TOPIC)


def test_nothing_learned_without_a_header_hub_or_a_parse() -> None:
    assert discover({}, None, TOPIC) is None
    assert discover({}, ParsedFeed(None, None, None, ()), TOPIC) == Discovery(None)


def test_feed_links_resolve_relative_and_refuse_other_schemes() -> None:
    links = [
        {"rel": "hub", "href": "javascript:alert(1)"},
        {"rel": "hub", "href": "/hub"},
        {"rel": "self", "href": "feed.xml"},
    ]
    assert feed_links(links, "https://news.example/dir/x") == (
        "https://news.example/hub",
        "https://news.example/dir/feed.xml",
    )
    assert feed_links([{"rel": "hub", "href": "https://h/" + "a" * 5000}], TOPIC) == (None, None)


@given(st.text(max_size=300))
def test_any_link_header_is_read_without_error(value: str) -> None:
    for target, rels in link_header_links(value):
        assert isinstance(target, str)
        assert all(isinstance(r, str) for r in rels)


def test_a_huge_link_header_is_read_in_linear_time() -> None:
    link_header_links('<a,"' * 200_000)  # quotes and brackets never closed: returns at once


# -- signatures --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sha256", "sha384", "sha512"])
def test_strong_signatures_authenticate(method: str) -> None:
    body = "ताज़ा ख़बर".encode()
    assert signature_problem(sign(method, "k", body), "k", (body,)) is None
    assert signature_problem(sign(method, "k", body).upper(), "k", (body,)) is None


def test_sha1_only_where_allowed() -> None:
    body = b"<feed/>"
    assert signature_problem(sign("sha1", "k", body), "k", (body,)) is not None
    assert signature_problem(sign("sha1", "k", body), "k", (body,), allow_sha1=True) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256",
        "sha256=",
        "md5=" + "0" * 32,
        "sha256=zz" + "0" * 62,
        "sha256=" + "0" * 64,
    ],
)
def test_missing_malformed_or_wrong_signatures_are_refused(header: str | None) -> None:
    assert signature_problem(header, "k", (b"body",)) is not None


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_a_signature_authenticates_its_own_body_only(body: bytes, other: bytes) -> None:
    header = sign("sha256", "secret", body)
    assert signature_problem(header, "secret", (body,)) is None
    assert (signature_problem(header, "secret", (other,)) is None) == (other == body)
    assert signature_problem(header, "another", (body,)) is not None


# -- the next step -----------------------------------------------------------------------


def test_a_hub_found_is_subscribed_to() -> None:
    assert rules.next_step(None, Discovery(HUB, TOPIC), SOURCE_URL, NOW) == rules.Subscribe(
        HUB, TOPIC
    )
    assert rules.next_step(None, Discovery(None), SOURCE_URL, NOW) is None
    assert rules.next_step(None, None, SOURCE_URL, NOW) is None


def test_another_hub_or_topic_is_a_new_subscription() -> None:
    moved = Discovery("https://new-hub.example/", TOPIC)
    assert rules.next_step(_sub(), moved, SOURCE_URL, NOW) == rules.Subscribe(moved.hub, TOPIC)  # type: ignore[arg-type]


def test_a_feed_that_drops_its_hub_or_a_changed_url_unsubscribes() -> None:
    assert rules.next_step(_sub(), Discovery(None), SOURCE_URL, NOW) == rules.Unsubscribe()
    assert rules.next_step(_sub(), None, "https://elsewhere.example/", NOW) == rules.Unsubscribe()


def test_renewal_lapse_and_retry_in_time() -> None:
    sub = _sub(lease_seconds=1000, lease_expires=NOW + timedelta(seconds=1000))
    renew = rules.renew_at(sub)
    assert renew == NOW + timedelta(seconds=850)
    assert rules.next_step(sub, None, SOURCE_URL, NOW) is None
    assert rules.next_step(sub, None, SOURCE_URL, renew) == rules.Renew()
    renewing = replace(sub, state=PushState.RENEWING)
    assert rules.next_step(renewing, None, SOURCE_URL, renew) is None
    end = NOW + timedelta(seconds=1000)
    assert rules.next_step(renewing, None, SOURCE_URL, end) == rules.Expire()
    expired = replace(sub, state=PushState.EXPIRED, requested=end)
    assert rules.next_step(expired, None, SOURCE_URL, end + timedelta(minutes=59)) is None
    later = end + rules.RETRY_AFTER
    assert rules.next_step(expired, None, SOURCE_URL, later) == rules.Subscribe(HUB, TOPIC)


@given(
    st.sampled_from(list(PushState)),
    st.integers(60, 10**7),
    st.integers(-(10**7), 10**7),
    st.one_of(st.none(), st.just(Discovery(None)), st.just(Discovery(HUB, TOPIC))),
)
def test_the_next_step_is_one_the_state_allows(
    state: PushState, lease: int, offset: int, found: Discovery | None
) -> None:
    sub = _sub(state, lease_seconds=lease, lease_expires=NOW + timedelta(seconds=lease))
    now = NOW + timedelta(seconds=offset)
    step = rules.next_step(sub, found, SOURCE_URL, now)
    if state is PushState.UNSUBSCRIBING:
        assert step in (None, rules.Subscribe(HUB, TOPIC))  # it is as good as gone
    if isinstance(step, rules.Renew):
        assert state is PushState.ACTIVE and now < sub.lease_expires  # type: ignore[operator]
    if isinstance(step, rules.Expire):
        assert state in (PushState.ACTIVE, PushState.RENEWING)
        assert now >= sub.lease_expires  # type: ignore[operator]
    # Pushed to, the next poll always comes by the renewal or the lease's end.
    push = rules.push_schedule(sub, timedelta(hours=6), now)
    if push is not None:
        assert rules.is_pushed(sub, now)
        assert push.due_by <= sub.lease_expires  # type: ignore[operator]
        interval = timedelta(minutes=15)
        assert next_poll("news", interval, now, push=push) <= max(push.due_by, now + interval)


def test_the_safety_net_interval_lengthens_never_shortens() -> None:
    far = Push(timedelta(hours=6), NOW + timedelta(days=9))
    assert next_poll("n", timedelta(minutes=15), NOW, push=far) >= NOW + timedelta(hours=6)
    assert next_poll("n", timedelta(days=1), NOW, push=far) >= NOW + timedelta(days=1)
    soon = Push(timedelta(hours=6), NOW + timedelta(minutes=20))
    assert next_poll("n", timedelta(minutes=15), NOW, push=soon) == NOW + timedelta(minutes=20)
    # A renewal due sooner than the source's own interval waits for it (the lease may lapse).
    sooner = Push(timedelta(hours=6), NOW + timedelta(minutes=5))
    assert next_poll("n", timedelta(minutes=15), NOW, push=sooner) == NOW + timedelta(minutes=15)


@pytest.mark.parametrize("granted", ["0", "1", "60", "600"])
def test_a_hub_granting_tiny_leases_cannot_make_the_source_polled_more_often(
    granted: str,
) -> None:
    """A day of polls, each followed by the step it calls for, with a hub that verifies
    every request at once and grants `granted` seconds: the source is polled no more often
    than its own interval (15 min) asks, however short the lease (a lease of 1 s had it
    polled, and the hub asked, every second)."""
    interval, asked = timedelta(minutes=15), timedelta(days=10)
    now, polls = NOW, 0
    sub = _sub(PushState.PENDING, lease_seconds=None, lease_expires=None, requested=NOW)
    while now < NOW + timedelta(days=1) and polls < 1_000:
        if sub.state in (PushState.PENDING, PushState.RENEWING):  # the hub verifies at once
            query = _ask("subscribe", **{"hub.lease_seconds": granted})
            sub = rules.verify_intent(sub, query, now, asked).update or sub
        push = rules.push_schedule(sub, timedelta(hours=6), now)
        later = next_poll("news", interval, now, push=push)
        assert later >= now + interval
        now, polls = later, polls + 1
        step = rules.next_step(sub, Discovery(HUB, TOPIC), SOURCE_URL, now)
        if isinstance(step, rules.Renew):
            sub = replace(sub, state=PushState.RENEWING, requested=now)
        elif isinstance(step, rules.Expire):
            sub = replace(sub, state=PushState.EXPIRED)
        elif isinstance(step, rules.Subscribe):
            sub = replace(sub, state=PushState.PENDING, requested=now)
    assert polls <= 24 * 4


# -- verification of intent --------------------------------------------------------------


def _ask(mode: str, topic: str = TOPIC, **more: str) -> dict[str, str]:
    return {"hub.mode": mode, "hub.topic": topic, "hub.challenge": "ch4llenge", **more}


def test_verification_answers_only_what_was_asked() -> None:
    asked = timedelta(days=10)
    pending = _sub(PushState.PENDING, lease_seconds=None, lease_expires=None)
    verdict = rules.verify_intent(pending, _ask("subscribe", **{"hub.lease_seconds": "3600"}),
                                  NOW, asked)  # fmt: skip
    assert verdict.body == "ch4llenge"
    assert verdict.update is not None
    assert verdict.update.state is PushState.ACTIVE
    assert verdict.update.lease_expires == NOW + timedelta(hours=1)
    for sub, query in [
        (None, _ask("subscribe")),
        (pending, _ask("subscribe", "https://other.example/")),
        (pending, _ask("unsubscribe")),
        (_sub(PushState.ACTIVE), _ask("subscribe")),
        (_sub(PushState.EXPIRED), _ask("subscribe")),
        (pending, {**_ask("subscribe"), "hub.challenge": ""}),
        (pending, {**_ask("subscribe"), "hub.challenge": "x" * 2000}),
        (pending, {**_ask("subscribe"), "hub.challenge": "<script>alert(1)</script> x"}),
        (pending, _ask("publish")),
    ]:
        assert rules.verify_intent(sub, query, NOW, asked).status == 404, (sub, query)
    ending = _sub(PushState.UNSUBSCRIBING)
    assert rules.verify_intent(ending, _ask("unsubscribe"), NOW, asked).delete


def test_a_denial_is_recorded_and_sends_the_source_back_to_polling() -> None:
    verdict = rules.verify_intent(
        _sub(PushState.PENDING), {"hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "no"},
        NOW, timedelta(days=1),
    )  # fmt: skip
    assert verdict.update is not None and verdict.update.state is PushState.DENIED
    assert verdict.poll_now
    assert "no" in (verdict.update.last_error or "")


def test_pushes_for_another_topic_or_an_ended_subscription_are_refused() -> None:
    assert rules.push_refusal(_sub(), f'<{TOPIC}>; rel="self"') is None
    assert rules.push_refusal(_sub(), "") is None
    assert rules.push_refusal(_sub(), '<https://x.example/>; rel="self"') is not None
    assert rules.push_refusal(_sub(PushState.UNSUBSCRIBING), "") is not None


# -- where a hub may be ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "special"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("::ffff:127.0.0.1", True),
        ("224.0.0.1", True),
        ("0.0.0.0", True),
        ("2002:7f00:1::1", True),  # 6to4, carrying 127.0.0.1
        ("2002:a9fe:a9fe::1", True),  # 6to4, carrying 169.254.169.254
        ("2002:5db8:d822::1", False),  # 6to4, carrying 93.184.216.34
        ("93.184.216.34", False),
        ("2606:2800:220:1:248:1893:25c8:1946", False),
    ],
)
def test_special_addresses(address: str, special: bool) -> None:
    assert is_special(address) is special


def test_a_literal_address_needs_no_lookup() -> None:
    assert asyncio.run(resolves_to_special("http://127.0.0.1:9/hub"))
    assert not asyncio.run(resolves_to_special("http://93.184.216.34/hub"))
    assert asyncio.run(resolves_to_special("http://localhost:9/hub"))  # resolved: loopback
