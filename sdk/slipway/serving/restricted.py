"""Restricted endpoint groups, Triton's `--http-restricted-api` / `--grpc-restricted-protocol`, for both servers.

A flag value `GROUP[,GROUP...]:KEY=VALUE` restricts those groups: a request to one of them must carry header
KEY with exactly VALUE (over gRPC the metadata key is `triton-grpc-protocol-KEY`, as in Triton), or it is
refused (HTTP 403; gRPC UNAVAILABLE, Triton's codes). Groups never named stay open, Triton's default. The flag
repeats for groups with other keys; a group may appear in one flag only. Values are compared in constant time
and never appear in an error message, a log line or a repr.

Which routes and methods form each group is the servers' business (`http_app`, `grpc_app`, the monitor);
this module parses the setting and answers "does this request carry the key?".
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from slipway.core.errors import ConfigError

# Triton's groups (docs/customization_guide/inference_protocols.md, "Limit endpoint access"), in its order.
SERVE_GROUPS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
MONITOR_GROUPS = ("ingest", "feedback", "admin", "health", "metrics")
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton prefixes the key of --grpc-restricted-protocol
HTTP_FLAG = "--http-restricted-api"
GRPC_FLAG = "--grpc-restricted-protocol"
MONITOR_FLAG = "--restricted-api"
# The same settings from the environment (click's envvar; several values separated by spaces): keeps the values
# out of the process list, e.g. when a Kubernetes secret is mounted as an environment variable.
HTTP_RESTRICTED_ENV = "SLIPWAY_HTTP_RESTRICTED_API"
GRPC_RESTRICTED_ENV = "SLIPWAY_GRPC_RESTRICTED_PROTOCOL"
MONITOR_RESTRICTED_ENV = "SLIPWAY_MONITOR_RESTRICTED_API"
FORM = "GROUP[,GROUP...]:KEY=VALUE"

# A key valid both as an HTTP header name and, lowercased, as a gRPC metadata key.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Visible ASCII without spaces: valid in an HTTP header and in gRPC ASCII metadata, never trimmed by a parser,
# and splittable from an environment variable that holds several flag values.
_VALUE_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Restriction:
    """One KEY=VALUE: `header` is the lowercase name looked up in a request (with the gRPC prefix if any)."""

    key: str
    header: str
    value: str = field(repr=False)

    def admits(self, sent: str | None) -> bool:
        """True when the request sent this header with exactly the value (constant-time comparison)."""
        if sent is None:
            return False
        return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), self.value.encode())

    @property
    def http_message(self) -> str:
        """Triton's HTTP refusal message (the 403 body's `error`)."""
        return f"This API is restricted, expecting header '{self.header}'"

    @property
    def grpc_message(self) -> str:
        """Triton's gRPC refusal message (with status UNAVAILABLE)."""
        return f"This protocol is restricted, expecting header '{self.header}'"


@dataclass(frozen=True)
class RestrictedGroups:
    """The parsed flags of one server endpoint: group name -> its Restriction; empty means all open."""

    groups: Mapping[str, Restriction] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def restriction(self, group: str) -> Restriction | None:
        return self.groups.get(group)

    def headers(self, group: str) -> dict[str, str]:
        """The header that admits a request to `group` (empty when the group is open): for our own clients."""
        restriction = self.groups.get(group)
        return {} if restriction is None else {restriction.header: restriction.value}

    def flag_values(self) -> list[str]:
        """The flag values that parse back to this setting (to start the same server in a subprocess)."""
        by_restriction: dict[Restriction, list[str]] = {}
        for group, restriction in self.groups.items():
            by_restriction.setdefault(restriction, []).append(group)
        return [f"{','.join(groups)}:{r.key}={r.value}" for r, groups in by_restriction.items()]

    def summary(self) -> str:
        """What is restricted, for logs: groups and header names, never the values."""
        if not self.groups:
            return "none"
        by_header: dict[str, list[str]] = {}
        for group, restriction in self.groups.items():
            by_header.setdefault(restriction.header, []).append(group)
        return "; ".join(f"{','.join(groups)} need header {header}" for header, groups in by_header.items())


def parse_restricted(
    values: Iterable[str], flag: str, known_groups: Sequence[str], header_prefix: str = ""
) -> RestrictedGroups:
    """Parse repeated `flag` values of the form GROUP[,GROUP...]:KEY=VALUE (Triton's syntax).

    Like Triton, the groups end at the first ':' and the key at the next '='; the value is the rest (it may
    hold ':' or '='). Refused with a ConfigError naming the flag and the expected form: a missing part, an
    unknown group, a group named in two flags, a key that is no header name, a value with spaces or non-ASCII.
    The value itself is never repeated in a message.
    """
    groups: dict[str, Restriction] = {}
    for raw in values:
        names, key, value = _split(raw, flag)
        if not _KEY_RE.fullmatch(key):
            raise ConfigError(
                f"{flag}: header key {key!r} must be letters, digits, '-', '_' or '.' (starting with a letter or "
                f"digit); expected {FORM}"
            )
        if header_prefix and key.lower().endswith("-bin"):
            raise ConfigError(f"{flag}: header key {key!r} must not end in '-bin' (gRPC binary metadata)")
        if not _VALUE_RE.fullmatch(value):
            raise ConfigError(
                f"{flag}: the VALUE of {FORM} must be visible ASCII characters without spaces (it travels in a "
                f"header); the one given for key {key!r} is not"
            )
        restriction = Restriction(key, (header_prefix + key).lower(), value)
        for name in names:
            if name not in known_groups:
                raise ConfigError(
                    f"{flag}: unknown group {name!r}; expected one of {', '.join(known_groups)}"
                )
            if name in groups:
                raise ConfigError(
                    f"{flag}: group {name!r} is named in more than one {flag}; each group takes one KEY=VALUE"
                )
            groups[name] = restriction
    return RestrictedGroups(groups)


def _split(raw: str, flag: str) -> tuple[list[str], str, str]:
    """GROUPS:KEY=VALUE -> ([groups], key, value); says which part is missing without echoing the value."""
    names_part, colon, rest = raw.partition(":")
    key, equals, value = rest.partition("=")
    missing = ""
    if not colon:
        missing = "no ':' after the groups"
    elif not equals:
        missing = "no '=' between KEY and VALUE"
    elif not names_part:
        missing = "no group before ':'"
    elif not key:
        missing = "an empty KEY"
    elif not value:
        missing = "an empty VALUE"
    if missing:
        raise ConfigError(
            f"{flag}: expected {FORM} (for example {flag} model-repository,statistics:admin-key=SECRET); "
            f"the value given has {missing}"
        )
    names = names_part.split(",")
    if "" in names:
        raise ConfigError(f"{flag}: an empty group name in {names_part!r}; expected {FORM}")
    return names, key, value
