"""Which addresses a callback may not lead to. Pure.

The hub connects wherever a subscriber asks; without this rule anyone could make it probe
the operator's network (a router's admin page, a database port, a cloud metadata service).
An address embedded in another (IPv4-mapped `::ffff:127.0.0.1`, 6to4, Teredo, NAT64) is
judged as well.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# What makes an address no callback's, in the order the reason names the first found.
_KINDS = (
    ("unspecified", lambda a: a.is_unspecified),
    ("loopback", lambda a: a.is_loopback),
    ("link-local", lambda a: a.is_link_local),
    ("multicast", lambda a: a.is_multicast),
    ("private", lambda a: a.is_private),
    ("reserved", lambda a: a.is_reserved),
    ("non-public", lambda a: not a.is_global),
)


def _judged(address: IPAddress) -> list[IPAddress]:
    """The addresses that decide for `address`: an IPv4-mapped or NAT64 address goes to its
    IPv4 address alone; 6to4 and Teredo addresses carry one (two) beside their own."""
    if not isinstance(address, ipaddress.IPv6Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    carried: list[IPAddress] = []
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    return [*carried, address]


def _kind(address: IPAddress) -> str | None:
    """What makes `address` refused, as an adjective with its article; None if nothing."""
    for kind, applies in _KINDS:
        if applies(address):
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    return None


def refusal(text: str) -> str | None:
    """Why a callback may not connect to the address `text`, or None when it may.

    An embedded IPv4 address is judged first (`::ffff:127.0.0.1` is loopback before it is
    anything else); `fe80::1%eth0` is read without its zone; text that is no address is
    refused.
    """
    shown = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(shown)
    except ValueError:
        return f"{text!r} is not an IP address"
    for candidate in _judged(address):
        kind = _kind(candidate)
        if kind is not None:
            if candidate == address:
                return f"{shown} is {kind} address"
            return f"{shown} carries {candidate}, {kind} address"
    return None
