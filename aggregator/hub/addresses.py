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


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it carries."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refusal(text: str) -> str | None:
    """Why a callback may not connect to the address `text`, or None when it may.

    `fe80::1%eth0` (a zone) is read without its zone; text that is no address is refused.
    """
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return f"{text!r} is not an IP address"
    for candidate in _embedded(address):
        for kind, applies in _KINDS:
            if applies(candidate):
                inside = "" if candidate == address else f" (it carries {candidate})"
                return f"{address} is a {kind} address{inside}"
    return None
