"""Bearer tokens: ``LRKEEPER_TOKENS`` parsed once, and a presented token looked up in it.

Only sha256 digests are kept, whether an entry gave the token in plaintext or as
``sha256:<hex>``, so the plaintext is never held beyond parsing and never reaches
a log or an error message. A lookup hashes the presented token and compares it
with *every* configured digest through ``hmac.compare_digest`` (no early exit), so
the time taken says neither which token matched nor how much of one did.
"""

import enum
import hashlib
import hmac
from dataclasses import dataclass

SHA256_PREFIX = "sha256:"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class Role(enum.IntEnum):
    """What a token may do; ordered, so ``role >= Role.READ`` reads "may read"."""

    READ = 1
    WRITE = 2


class InvalidTokens(ValueError):
    """``LRKEEPER_TOKENS`` cannot be used; the message names the entry, never its token."""


@dataclass(frozen=True)
class Tokens:
    """The configured tokens as (sha256 digest, role) pairs."""

    entries: tuple[tuple[bytes, Role], ...]

    @classmethod
    def parse(cls, configured: str) -> "Tokens":
        """Read ``ROLE:TOKEN,...``; an empty setting is no tokens (protected mode)."""
        if not configured.strip():
            return cls(())
        entries: list[tuple[bytes, Role]] = []
        positions: dict[bytes, int] = {}
        for position, entry in enumerate(configured.split(","), start=1):
            digest, role = _parse_entry(entry.strip(), position)
            if digest in positions:
                raise InvalidTokens(
                    f"LRKEEPER_TOKENS entry {position}: the same token as entry "
                    f"{positions[digest]}; give each token one role"
                )
            positions[digest] = position
            entries.append((digest, role))
        return cls(tuple(entries))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def role_of(self, presented: bytes) -> Role | None:
        """The role of a presented token, or None; constant time in the token's content."""
        digest = hashlib.sha256(presented).digest()
        matched: Role | None = None
        for configured, role in self.entries:
            if hmac.compare_digest(configured, digest):
                matched = role
        return matched

    def count(self, role: Role) -> int:
        return sum(1 for _, configured in self.entries if configured is role)


def _parse_entry(entry: str, position: int) -> tuple[bytes, Role]:
    where = f"LRKEEPER_TOKENS entry {position}"
    if not entry:
        raise InvalidTokens(f"{where}: empty (a stray comma?); expected ROLE:TOKEN")
    role_name, separator, token = entry.partition(":")
    if not separator:
        raise InvalidTokens(f"{where}: expected ROLE:TOKEN with ROLE read or write")
    try:
        role = Role[role_name.strip().upper()]
    except KeyError:
        raise InvalidTokens(f"{where}: role must be read or write") from None
    if token.startswith(SHA256_PREFIX):
        return _digest_from_hex(token.removeprefix(SHA256_PREFIX), where), role
    if not token or token != token.strip():
        raise InvalidTokens(f"{where}: the token is empty or has spaces around it")
    return hashlib.sha256(token.encode()).digest(), role


def _digest_from_hex(hex_digest: str, where: str) -> bytes:
    if len(hex_digest) != 64 or not _HEX_DIGITS.issuperset(hex_digest):
        raise InvalidTokens(f"{where}: sha256: must be followed by 64 hex digits")
    return bytes.fromhex(hex_digest)


def describe(tokens: Tokens) -> str:
    """``2 tokens (1 read, 1 write)``: what the startup line says about the tokens."""
    counts = ", ".join(f"{tokens.count(role)} {role.name.lower()}" for role in Role)
    total = len(tokens.entries)
    return f"{total} token{'s' if total != 1 else ''} ({counts})"
