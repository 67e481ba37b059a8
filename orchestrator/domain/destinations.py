"""Where completion callbacks may go (ORCH_CALLBACK_HOSTS), and which addresses are public.

Pure: it reads a URL and an address, never the network. The rule is checked twice, at
enqueue (a 422 while the caller is there to read it) and again at delivery, on the stored
URL and on the addresses actually connected to (workers/callback_net.py): the list may have
changed since, and a name may resolve elsewhere by then.

* An entry `host` or `host:port` (an IPv6 literal in brackets) is the operator's choice: it
  is called even when it is internal, since internal services are the usual receivers. A
  bare `host` means that host on its scheme's default port (80 for http, 443 for https).
* `*` admits any other host whose addresses are all public: a caller cannot aim the service
  at loopback, a private network or the cloud metadata address.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

ANY = "*"
DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: NAT64's well-known prefix: the last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Verdict(enum.Enum):
    #: On the operator's list: called whatever its addresses are.
    LISTED = "listed"
    #: Admitted by `*`: called only if every address it resolves to is public.
    PUBLIC_ONLY = "public_only"
    REFUSED = "refused"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    #: Why it was refused, for the caller (422) and the history; never an address.
    reason: str = ""
    #: The host and port the decision is about, as this module read the URL: the client
    #: checks the HTTP library reads the same (a parser differential would be a bypass).
    host: str = ""
    port: int | None = None


def _plain_public(address: IPAddress) -> bool:
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def _embedded(address: IPAddress) -> list[IPAddress]:
    """The IPv4 addresses an IPv6 address leads to: mapped, 6to4, Teredo, NAT64."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[IPAddress] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public(address: IPAddress) -> bool:
    """An address on the public internet: not loopback, private (RFC 1918, fc00::/7),
    link-local (169.254.0.0/16 with the metadata address, fe80::/10), unspecified,
    multicast or reserved, nor an IPv6 form that leads to one of those."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _plain_public(address.ipv4_mapped)  # ::ffff:a.b.c.d is a.b.c.d itself
    return _plain_public(address) and all(_plain_public(a) for a in _embedded(address))


def literal(host: str) -> IPAddress | None:
    """The address `host` is, if it is an IP literal (brackets already removed)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def normal_host(host: str) -> str:
    """One spelling per host: lower case, no trailing dot, IP literals in their short form."""
    host = host.strip().rstrip(".").lower()
    address = literal(host)
    return str(address) if address is not None else host


def _looks_numeric(host: str) -> bool:
    """`127.1`, `2130706433`, `0x7f.1`: forms a resolver reads as an IPv4 address."""
    parts = host.split(".")
    return all(p.isdigit() or (p.startswith("0x") and p != "0x") for p in parts if p)


@dataclass(frozen=True)
class CallbackHosts:
    #: (host, port) pairs; port None means the URL scheme's default port.
    listed: frozenset[tuple[str, int | None]] = frozenset()
    #: `*` is on the list.
    any_public: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> CallbackHosts:
        """The list from its entries; ValueError naming the first malformed one."""
        listed: set[tuple[str, int | None]] = set()
        any_public = False
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry == ANY:
                any_public = True
                continue
            listed.add(parse_entry(entry))
        return cls(frozenset(listed), any_public)

    def entries(self) -> tuple[str, ...]:
        """The list written back in its canonical form (sorted, `*` last)."""
        written = sorted(_write(host, port) for host, port in self.listed)
        return (*written, ANY) if self.any_public else tuple(written)

    def __bool__(self) -> bool:
        return self.any_public or bool(self.listed)

    def decide(self, url: str) -> Decision:
        """What the list says about `url` (already a valid http(s) URL with a host)."""
        parts = urlsplit(url)
        host = normal_host(parts.hostname or "")
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return Decision(Verdict.REFUSED, "the port is not a number")
        if (host, port) in self.listed or (
            (host, None) in self.listed and port == DEFAULT_PORTS.get(parts.scheme)
        ):
            return Decision(Verdict.LISTED, host=host, port=port)
        if not self.any_public:
            return Decision(
                Verdict.REFUSED, f"host {host!r} on port {port} is not an allowed callback host"
            )
        address = literal(host)
        if address is not None and not is_public(address):
            return Decision(Verdict.REFUSED, "the address is not public")
        if address is None and (
            host == "localhost" or host.endswith(".localhost") or _looks_numeric(host)
        ):
            return Decision(Verdict.REFUSED, "the address is not public")
        return Decision(Verdict.PUBLIC_ONLY, host=host, port=port)


def parse_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; ValueError saying what is wrong."""
    if "/" in entry or "@" in entry or " " in entry:
        raise ValueError(f"{entry!r} is not a host or host:port (no scheme or path)")
    port_text: str | None = None
    if entry.startswith("["):
        inside, bracket, rest = entry[1:].partition("]")
        if not bracket or literal(inside) is None or ":" not in inside:
            raise ValueError(f"{entry!r}: an IPv6 address goes in brackets, as [::1]:8080")
        host = inside
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r} is not a host or host:port")
            port_text = rest[1:]
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    elif ":" in entry:
        raise ValueError(f"{entry!r}: an IPv6 address goes in brackets, as [::1]:8080")
    else:
        host = entry
    if not host or any(c in host for c in "*?#[]"):
        raise ValueError(f"{entry!r} is not a host name")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return normal_host(host), port


def _write(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
