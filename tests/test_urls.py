"""Source URLs shown without their secrets: user info and credential-like query parameters."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.config import derive_name
from aggregator.urls import (
    _clean,
    _public_short_url,
    as_uri,
    entry_link,
    is_secret_parameter,
    public_url,
    redact_url,
    redact_urls,
)
from tests.conftest import run_cli

SECRET_NAMES = [
    "token", "Token", "TOKEN", "api_key", "apiKey", "apikey", "API-KEY", "key", "X-Amz-Signature",
    "X-Amz-Security-Token", "X-Amz-Credential", "access_token", "accessToken", "authToken",
    "auth", "auth_key", "sessionid", "session_id", "JSESSIONID", "PHPSESSID", "sid.session",
    "password", "passwd", "pwd", "pass", "user_pass", "secret", "client_secret",
    "clientSecret", "sig", "signature", "Signature", "AWSAccessKeyId", "private_token",
    "feed_token", "feedtoken", "refresh-token", "jwt", "credentials", "secretKey", "passkey",
    # `key` after a qualifier, `session` as part of an id, key or token.
    "keys", "access_key", "secret_key", "private_key", "client_key", "app_key", "license_key",
    "user_key", "consumer_key", "master_key", "feed_key", "sign_key", "X-Api-Key",
    "session_key", "session_token", "sessionKey", "sessid", "sessionhash", "tokenid",
    "secretaccesskey",
]  # fmt: skip
PLAIN_NAMES = [
    "keyword", "keywords", "monkey", "design", "signal", "signup", "author", "authority",
    "page", "q", "id", "sort", "format", "lang", "hockey", "turkey", "bypass", "compass",
    "passage", "utm_source", "tag", "category", "limit", "offset", "kind",
    # A word that is a credential only beside a qualifier, or a longer word that merely
    # starts like one.
    "sort_key", "key_figures", "piano_keys", "key_stage", "primary_key", "sortKey", "keyId",
    "session", "sessions", "session_start", "tokenizer", "secretary",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_credential_names_are_recognised(name: str) -> None:
    assert is_secret_parameter(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_ordinary_names_are_not(name: str) -> None:
    assert not is_secret_parameter(name)


@pytest.mark.parametrize(
    ("url", "public", "redacted"),
    [
        ("http://user:pw@host/feed", "http://host/feed", "http://***@host/feed"),
        (
            "https://host/feed?token=abc&page=2",
            "https://host/feed?page=2",
            "https://host/feed?token=***&page=2",
        ),
        ("https://host/feed?token=abc", "https://host/feed", "https://host/feed?token=***"),
        ("https://u@h:8443/f?a=1#top", "https://h:8443/f?a=1#top", "https://***@h:8443/f?a=1#top"),
        # An "@" left unencoded in a password: the last "@" ends the user info, as in httpx.
        ("http://u:p@ss@h/x?apiKey=k", "http://h/x", "http://***@h/x?apiKey=***"),
        ("https://h/f?", "https://h/f?", "https://h/f?"),  # nothing to hide: byte for byte
        ("file:///srv/feeds/a.xml", "file:///srv/feeds/a.xml", "file:///srv/feeds/a.xml"),
    ],
)
def test_public_and_redacted_forms(url: str, public: str, redacted: str) -> None:
    assert public_url(url) == public
    assert redact_url(url) == redacted


def test_urls_inside_text_are_redacted() -> None:
    message = (
        "Client error '401 Unauthorized' for url 'http://reader:hunter2@127.0.0.1:8080/f?"
        "token=s3cr3t&page=2' (see https://h/x?sig=zz)"
    )
    redacted = redact_urls(message)
    assert "hunter2" not in redacted and "s3cr3t" not in redacted and "zz" not in redacted
    assert "http://***@127.0.0.1:8080/f?token=***&page=2" in redacted
    assert redact_urls("no address here") == "no address here"


def test_redacting_text_is_linear() -> None:
    # A long run of letters that looks like a scheme but never reaches "://".
    text = "a" * 200_000 + "://h/?token=x " + "b+" * 100_000
    assert redact_urls(text).startswith("a" * 1000)


def test_entry_links_are_the_publishers_unless_they_are_the_feed_url() -> None:
    feed = "http://u:pw@h/feed?token=t&page=1"
    assert entry_link(feed, feed) == "http://h/feed?page=1"
    assert entry_link("http://h/feed?page=1&token=other", feed) == "http://h/feed?page=1"
    article = "https://h/article?key=value"  # the publisher's business
    assert entry_link(article, feed) == article
    assert entry_link(None, feed) is None


def test_ordinary_parameters_are_published_as_they_are(tmp_path: Path) -> None:
    """Two unnamed sources told apart only by `?session=`: each keeps its own URL and name,
    and `check` (the real CLI) accepts them."""
    urls = ("https://congress.example/rss?session=117", "https://congress.example/rss?session=118")
    assert [public_url(url) for url in urls] == list(urls)
    assert derive_name(urls[0]) != derive_name(urls[1])
    config = tmp_path / "feeds.toml"
    config.write_text("".join(f'[[feeds]]\nurl = "{url}"\n\n' for url in urls), encoding="utf-8")
    result = run_cli("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "congress-example-rss-session-117" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("url", "public", "redacted"),
    [
        # An OAuth implicit grant's answer: the token in the fragment.
        (
            "https://host/feed#access_token=FRAGTOK&expires_in=3600",
            "https://host/feed#expires_in=3600",
            "https://host/feed#access_token=***&expires_in=3600",
        ),
        ("https://host/feed#access_token=FRAGTOK", "https://host/feed", "https://host/feed#access_token=***"),
        # A client-side route with a query of its own; a "?" inside a value stays in it.
        ("https://h/#/feed?token=FRAGTOK?x&a=1", "https://h/#/feed?a=1", "https://h/#/feed?token=***&a=1"),
        ("https://h/f?page=2#top", "https://h/f?page=2#top", "https://h/f?page=2#top"),
        ("https://h/f#a=1;b=2", "https://h/f#a=1;b=2", "https://h/f#a=1;b=2"),
    ],
)  # fmt: skip
def test_fragment_parameters_are_parameters(url: str, public: str, redacted: str) -> None:
    assert public_url(url) == public
    assert redact_url(url) == redacted
    assert "FRAGTOK" not in redact_urls(f"GET {url} failed; Location: /cb#access_token=FRAGTOK")
    assert "fragtok" not in derive_name(url)


def test_derived_names_carry_no_secret() -> None:
    name = derive_name("https://user:pw@example.org/feed?token=abc123&page=2")
    assert "abc123" not in name and "pw" not in name
    assert name == "example-org-feed-page-2"
    assert derive_name("https://example.org/feed?page=2") == name


_SAFE = "abcdefghijklmnopqrstuvwxyz0123456789"
# Secrets carry a "~", which nothing else in the generated URLs does, so finding one in the
# output means a secret leaked, not that a host happened to spell it.
_secret = st.text("ABCXYZ0189-._~!$'()*+,;", min_size=1, max_size=12).map(lambda s: "~" + s)
_plain = st.text(_SAFE, min_size=1, max_size=10)
_hosts = st.sampled_from(["example.org", "127.0.0.1:8080", "[::1]", "feeds.example.co.uk"])
_paths = st.lists(_plain, max_size=3).map(lambda parts: "/" + "/".join(parts))
_plain_names = st.one_of(st.sampled_from(PLAIN_NAMES), _plain).filter(
    lambda n: not is_secret_parameter(n)
)
_plain_params = st.lists(st.tuples(_plain_names, st.text(_SAFE, max_size=8)), max_size=4)
_secret_params = st.lists(st.tuples(st.sampled_from(SECRET_NAMES), _secret), max_size=3)


def _url(
    scheme: str,
    host: str,
    path: str,
    *,
    userinfo: str | None = None,
    params: list[tuple[str, str]],
    fragment: str | None,
) -> str:
    query = "&".join(f"{k}={v}" for k, v in params)
    return (
        f"{scheme}://{userinfo + '@' if userinfo else ''}{host}{path}"
        + (f"?{query}" if params else "")
        + (f"#{fragment}" if fragment is not None else "")
    )


@st.composite
def _secret_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A URL with secrets in it (or none), and the same URL without them."""
    scheme = draw(st.sampled_from(["http", "https", "HTTPS"]))
    userinfo = draw(st.one_of(st.none(), _secret, st.tuples(_plain, _secret).map(":".join)))
    host, path = draw(_hosts), draw(_paths)
    plain, secret = draw(_plain_params), draw(_secret_params)
    params = draw(st.permutations(plain + secret))
    fragment = draw(st.one_of(st.none(), _plain))
    kept_fragment = fragment
    if fragment is None and draw(st.booleans()):  # `#access_token=...` (OAuth implicit)
        plain_f, secret_f = draw(_plain_params), draw(_secret_params)
        fragment_params = draw(st.permutations(plain_f + secret_f))
        fragment = "&".join(f"{k}={v}" for k, v in fragment_params)
        kept_f = [p for p in fragment_params if p in plain_f]
        kept_fragment = "&".join(f"{k}={v}" for k, v in kept_f) if kept_f or not secret_f else None
    url = _url(scheme, host, path, userinfo=userinfo, params=params, fragment=fragment)
    kept = [p for p in params if p in plain]
    return url, _url(scheme, host, path, params=kept, fragment=kept_fragment)


@given(_secret_urls())
def test_no_secret_survives(case: tuple[str, str]) -> None:
    url, without_secrets = case
    for shown in (public_url(url), redact_url(url), redact_urls(f"failed: '{url}' (again)")):
        assert "~" not in shown, (url, shown)
    # What is not a secret is all still there, in order.
    assert public_url(url) == without_secrets


@given(
    st.sampled_from(["http", "https"]), _hosts, _paths, _plain_params, st.one_of(st.none(), _plain)
)
def test_urls_without_secrets_are_unchanged(
    scheme: str, host: str, path: str, params: list[tuple[str, str]], fragment: str | None
) -> None:
    url = _url(scheme, host, path, params=params, fragment=fragment)
    assert public_url(url) == url
    assert redact_url(url) == url
    assert redact_urls(f"moved to {url} today") == f"moved to {url} today"


@pytest.mark.parametrize(
    ("url", "public", "redacted"),
    [
        # ";" separates query parameters too (old servers take either).
        (
            "http://u:p@host/garbage?auth=X;tok=x&a=1;token=SEMIGGG",
            "http://host/garbage?tok=x&a=1",
            "http://***@host/garbage?auth=***;tok=x&a=1;token=***",
        ),
        ("https://h/f?token=a;b", "https://h/f", "https://h/f?token=***"),  # ";" in a value
        ("https://h/f?a=1;b=2", "https://h/f?a=1;b=2", "https://h/f?a=1;b=2"),
        # A path parameter is a parameter.
        ("http://h/x;jsessionid=JSESSKKK", "http://h/x", "http://h/x;jsessionid=***"),
        ("http://h/x;jsessionid=J;v=1/y?q=1", "http://h/x;v=1/y?q=1", "http://h/x;jsessionid=***;v=1/y?q=1"),
        ("http://h/x;v=1/y", "http://h/x;v=1/y", "http://h/x;v=1/y"),
    ],
)  # fmt: skip
def test_semicolon_parameters_are_parameters(url: str, public: str, redacted: str) -> None:
    assert public_url(url) == public
    assert redact_url(url) == redacted
    assert "SEMIGGG" not in derive_name(url) and "jsesskkk" not in derive_name(url)


def test_credential_parameters_outside_urls_are_masked() -> None:
    """A relative Location header in an HTTP library's debug line has no "://"."""
    line = (
        "receive_response_headers.complete return_value=(b'HTTP/1.1', 302, b'Found', "
        "[(b'Location', b'/path?access_token=TOKEN777&page=2'), (b'X', b'/y;sessionid=S1')])"
    )
    redacted = redact_urls(line)
    assert "TOKEN777" not in redacted and "S1" not in redacted
    assert "/path?access_token=***&page=2'" in redacted
    assert redact_urls("if a=1 then b=2 & c=3; x?q=1") == "if a=1 then b=2 & c=3; x?q=1"


def test_masking_parameters_in_text_is_linear() -> None:
    """The worst shapes for the pattern: long names that never reach "=", and separators
    that each start a match attempt. A megabyte of them answers within 2 s."""
    text = "?" + "a" * 300_000 + " " + "?token" * 50_000 + "&" * 100_000 + ";a" * 100_000 + "=x"
    started = time.monotonic()
    redacted = redact_urls(text + "&secret=s")
    assert time.monotonic() - started < 2
    assert redacted.endswith("&secret=***")


def test_public_urls_are_remembered_only_when_short() -> None:
    """`public_url`'s answers are kept for URLs of ordinary length (a publish asks for
    each source's twice per file); a megabyte-long one, which a feed may send, is not."""
    _public_short_url.cache_clear()
    url = "https://user:pw@example.org/feed?token=T&page=2"
    assert public_url(url) == public_url(url) == "https://example.org/feed?page=2"
    assert _public_short_url.cache_info().currsize == 1
    long = "https://example.org/" + "a" * 1_000_000 + "?token=T"
    assert public_url(long) == "https://example.org/" + "a" * 1_000_000
    assert _public_short_url.cache_info().currsize == 1


@given(
    st.text(alphabet="ab:/@?;#=&.%-_ਅक~", max_size=60),
    st.sampled_from(["https://", "http://u:p@", "//", ""]),
)
def test_public_url_shortcut_answers_as_the_whole_rule(rest: str, start: str) -> None:
    """A URL with no "@", "?", ";" or "#" is returned as it is, without the rule's walk:
    what the walk would have returned, for every URL, with those characters or without."""
    url = start + rest
    assert public_url(url) == _clean(url, mask=None)


def test_public_urls_without_a_place_for_secrets_are_not_remembered() -> None:
    """1,000 sources' site and feed URLs went round `_public_short_url`'s 2,048 places, and
    each publish missed it every time; the plain ones now never reach it."""
    _public_short_url.cache_clear()
    for n in range(3000):
        assert public_url(f"https://site{n}.example.org/feed/{n}") == (
            f"https://site{n}.example.org/feed/{n}"
        )
    assert _public_short_url.cache_info().currsize == 0


_URI = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_STRAY = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LINK_TEXT = st.text(
    alphabet=st.sampled_from([*"aZ09-._~:/?#[]@!$&'()*+,;=%|\"<>{}^`\\ ", "स", "्", "é", "\ud800"]),
    max_size=40,
)


@given(
    _LINK_TEXT,
    st.sampled_from(["https://example.org/", "http://उदाहरण.भारत/", "http://[::1]:8/", ""]),
)
def test_as_uri_writes_only_what_a_uri_may_hold(rest: str, start: str) -> None:
    """What a feed's link is written as: URI characters only, every "%" an escape, one "#"
    at most, and "[" "]" only around an IPv6 host: so a URI comes out as it went in."""
    uri = as_uri(start + rest)
    assert _URI.fullmatch(uri)
    assert not _STRAY.search(uri)
    assert uri.count("#") <= 1
    assert as_uri(uri) == uri


@given(st.text(alphabet=st.sampled_from([*"aZ09-._~:/?#@!$&'()*+,;=|\"<>{}^` ", "स", "्"])))
def test_as_uri_changes_only_how_characters_are_written(rest: str) -> None:
    """Decoded again, the path, query and fragment are the publisher's own, character for
    character: nothing is dropped or moved, only percent-encoded."""
    assert unquote(as_uri("https://example.org/" + rest)) == "https://example.org/" + rest


@pytest.mark.parametrize(
    ("link", "uri"),
    [
        ("https://example.org/feed?page=2#top", "https://example.org/feed?page=2#top"),
        ("http://u.test/search?q=a|b", "http://u.test/search?q=a%7Cb"),
        ("http://u.test/{id}/x^y", "http://u.test/%7Bid%7D/x%5Ey"),
        (
            "http://u.test/समाचार",
            "http://u.test/%E0%A4%B8%E0%A4%AE%E0%A4%BE%E0%A4%9A%E0%A4%BE%E0%A4%B0",
        ),
        ("https://उदाहरण.भारत/", "https://xn--p1b6ci4b4b3a.xn--h2brj9c/"),
        ("http://[::1]:8080/a[1]", "http://[::1]:8080/a%5B1%5D"),
        ("http://u.test/100%/x%41", "http://u.test/100%25/x%41"),
        ("http://u.test/a#b#c", "http://u.test/a#b%23c"),
        # Escapes already in the authority are kept (they were escaped again).
        ("http://[fe80::1%25eth0]/é", "http://[fe80::1%25eth0]/%C3%A9"),
        ("http://b%C3%BCcher.de/é", "http://b%C3%BCcher.de/%C3%A9"),
        ("http://u%40x.org@h/é", "http://u%40x.org@h/%C3%A9"),
        # IDNA as browsers write it (UTS 46 non-transitional), not Python's IDNA 2003.
        ("http://straße.de/", "http://xn--strae-oqa.de/"),
        ("http://ς.gr/", "http://xn--3xa.gr/"),
        # No authority: "[" and "]" are escaped whatever else the link holds.
        ("/a[1]", "/a%5B1%5D"),
        ("//host/a[b]", "//host/a%5Bb%5D"),
    ],
)
def test_as_uri_examples(link: str, uri: str) -> None:
    assert as_uri(link) == uri


def test_a_host_no_dns_name_can_be_is_percent_encoded_without_punycode() -> None:
    """Punycode's time is quadratic in a label: 8,000 distinct characters (a hostile feed's
    link) took ~2 s per publish. A label over 63 characters is no DNS name: it is
    percent-encoded, as IDNA is never asked."""
    host = "".join(chr(0x4E00 + i) for i in range(8000))
    uri = as_uri(f"http://{host}/")
    assert uri == "http://" + quote(host) + "/"
