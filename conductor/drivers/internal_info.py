"""Typed views of the agent bookkeeping a node keeps in ``driver_internal_info``.

``driver_internal_info`` is the node's JSON column for what drivers remember
between heartbeats (Ironic's name and place). The agent-driven flows read and write
three records in it: the ramdisk agent of the current boot (its lookup token,
command URL, certificate, version), the host agent of an active node (its token,
the callback host and certificate it is bound to) and the running cleaning (the
steps still to run). Every reader and writer goes through this module, so the key
names live in one place and a record is read whole, typed, or not at all.

No agent token is stored in plain text. The server keeps ``sha256`` of each token
(ramdisk_agent/wire/agent_tokens.py) and checks heartbeats against it. What the
conductor must present to an agent's command API is kept encrypted with the
appliance's Fernet key (conductor/secrets.py): for the ramdisk agent that is the
lookup token itself, because the stock ironic-python-agent compares the
``agent_token`` of every command with the one it got at lookup; for the host agent
(ours) it is a one-way derivation of its token, so even the key does not give
back a host agent's heartbeat token.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from conductor import errors
from conductor.secrets import is_encrypted
from ramdisk_agent.wire.agent_tokens import host_command_token, token_hash, token_matches

if TYPE_CHECKING:
    from conductor.secrets import Cipher

#: The keys of :class:`AgentBoot`: they belong to one boot of the agent and are
#: wiped together (power off, reboot, end of deploy or clean).
AGENT_KEYS = ("agent_token_hash", "agent_secret_token", "agent_url", "agent_version",
              "agent_last_heartbeat", "agent_verify_ca")
#: The keys of :class:`HostAgentRecord`: one host-agent token and what it is bound to.
HOST_AGENT_KEYS = ("host_agent_token_hash", "host_agent_command_token", "host_agent_since",
                   "host_agent_url", "host_agent_verify_ca", "host_agent_version")
#: The keys a host agent that can be asked has (:attr:`HostAgentRecord.reachable`): a
#: query may pick those nodes in the database (``list_nodes`` ``internal_info_keys``).
HOST_AGENT_REACHABLE_KEYS = ("host_agent_url", "host_agent_command_token")
#: Where older versions kept the host-agent token in plain text (see :func:`upgraded`).
LEGACY_HOST_TOKEN = "host_agent_token"
#: The keys of :class:`CleanRun`: one cleaning run.
CLEAN_KEYS = ("agent_clean_steps", "agent_clean_request", "agent_clean_manual",
              "agent_clean_version")


def _info(node: Any) -> Mapping[str, Any]:
    return getattr(node, "driver_internal_info", None) or {}


def _seal(cipher: Cipher | None, key: str, value: str) -> str:
    """``value`` encrypted with the appliance's key (``key`` is a secret-named key)."""
    if cipher is None:
        raise errors.ConfigError(reason="no secrets key: agent credentials cannot be "
                                        "stored encrypted")
    sealed = cipher.encrypt_dict({key: value}) or {}
    return str(sealed[key])


def _unseal(cipher: Cipher | None, key: str, value: str | None) -> str:
    if cipher is None or not value:
        raise errors.ConfigError(reason=f"cannot read driver_internal_info.{key}: no "
                                        "secrets key or no stored value")
    return str(cipher.decrypt_dict({key: value})[key])


@dataclasses.dataclass(frozen=True)
class AgentBoot:
    """The ramdisk agent of the node's current boot, as lookup and heartbeats recorded it."""

    token_hash: str | None = None     #: sha256 of the token issued at lookup
    sealed_token: str | None = None   #: the same token, Fernet-encrypted (agent_secret_token)
    url: str | None = None            #: the agent's command API (callback_url)
    version: str | None = None        #: agent_version from its heartbeat
    last_heartbeat: str | None = None  #: ISO time of the last accepted heartbeat
    verify_ca: str | None = None      #: PEM certificate the agent's TLS must present

    @classmethod
    def of(cls, node: Any) -> AgentBoot:
        info = _info(node)
        return cls(token_hash=info.get("agent_token_hash"),
                   sealed_token=info.get("agent_secret_token"), url=info.get("agent_url"),
                   version=info.get("agent_version"),
                   last_heartbeat=info.get("agent_last_heartbeat"),
                   verify_ca=info.get("agent_verify_ca"))

    @property
    def issued(self) -> bool:
        """True once lookup issued this boot's token (a repeat lookup gets "******")."""
        return bool(self.token_hash)

    def accepts(self, presented: object) -> bool:
        """True when ``presented`` is the token issued at lookup (constant time)."""
        return token_matches(self.token_hash, presented)

    @property
    def reachable(self) -> bool:
        """True once a heartbeat gave a URL for the token issued at lookup."""
        return bool(self.url and self.token_hash and self.sealed_token)

    def command_token(self, cipher: Cipher | None) -> str:
        """The token the conductor sends on commands (IPA wants the lookup token back)."""
        return _unseal(cipher, "agent_secret_token", self.sealed_token)


def has_agent(node: Any) -> bool:
    """True when the node remembers any part of an agent boot."""
    info = _info(node)
    return any(key in info for key in AGENT_KEYS)


def without_agent(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``info`` less the agent of the last boot: its token is never valid again."""
    return {k: v for k, v in (info or {}).items() if k not in AGENT_KEYS}


def with_token(info: Mapping[str, Any] | None, token: str,
               cipher: Cipher | None) -> dict[str, Any]:
    """``info`` with a new agent boot that holds only its lookup token (hashed, and
    encrypted for the command API)."""
    return dict(without_agent(info), agent_token_hash=token_hash(token),
                agent_secret_token=_seal(cipher, "agent_secret_token", token))


def with_heartbeat(info: Mapping[str, Any] | None, url: str, version: str | None, when: str,
                   verify_ca: str | None) -> dict[str, Any]:
    """``info`` with what an accepted heartbeat tells about the agent."""
    result = dict(info or {}, agent_url=url, agent_version=version,
                  agent_last_heartbeat=when)
    if verify_ca:
        result["agent_verify_ca"] = verify_ca
    return result


@dataclasses.dataclass(frozen=True)
class HostAgentRecord:
    """The host agent of an active node (``metalcast-agent host``): the token an
    operator issued for it and, after its first heartbeat, the callback host and TLS
    certificate that token is bound to."""

    token_hash: str | None = None     #: sha256 of the issued token
    command_token: str | None = None  #: Fernet-encrypted credential for its command API
    since: str | None = None          #: the node's provision_updated_at at issue
    url: str | None = None            #: the agent's command API (its last callback_url)
    verify_ca: str | None = None      #: the PEM certificate it is bound to (None: no pin)
    version: str | None = None        #: agent_version from its heartbeat

    @classmethod
    def of(cls, node: Any) -> HostAgentRecord:
        info = _info(node)
        return cls(*(info.get(key) for key in HOST_AGENT_KEYS))

    def current(self, node: Any) -> bool:
        """True when a token was issued during the node's current stay in active (an
        undeploy and a new deploy or adopt make it stale)."""
        since = str(getattr(node, "provision_updated_at", None))
        return bool(self.token_hash) and self.since == since

    def accepts(self, node: Any, presented: object) -> bool:
        """True when ``presented`` is the node's current host-agent token."""
        return self.current(node) and token_matches(self.token_hash, presented)

    @property
    def bound(self) -> bool:
        """True once the first heartbeat with this token pinned host and certificate."""
        return bool(self.url)

    @property
    def bound_host(self) -> str | None:
        return urlparse(self.url).hostname if self.url else None

    @property
    def reachable(self) -> bool:
        return bool(self.url and self.command_token)

    def command_credential(self, cipher: Cipher | None) -> str:
        """What the conductor sends to the host agent's command API (``agent_token``)."""
        return _unseal(cipher, "host_agent_command_token", self.command_token)


def without_host_agent(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``info`` with no host-agent token or binding: every token issued is revoked."""
    return {k: v for k, v in (info or {}).items()
            if k not in HOST_AGENT_KEYS and k != LEGACY_HOST_TOKEN}


def with_host_token(info: Mapping[str, Any] | None, token: str, since: str,
                    cipher: Cipher | None) -> dict[str, Any]:
    """``info`` with a newly issued host-agent token and no binding yet: the previous
    token, and the host and certificate it was bound to, are gone."""
    credential = _seal(cipher, "host_agent_command_token", host_command_token(token))
    return dict(without_host_agent(info), host_agent_token_hash=token_hash(token),
                host_agent_command_token=credential, host_agent_since=since)


def with_host_heartbeat(info: Mapping[str, Any] | None, url: str, verify_ca: str | None,
                        version: str | None) -> dict[str, Any]:
    """``info`` with the callback URL, certificate and version of an accepted host
    heartbeat (the first one binds the token to them)."""
    result = dict(info or {}, host_agent_url=url, host_agent_version=version)
    if verify_ca:
        result["host_agent_verify_ca"] = verify_ca
    else:
        result.pop("host_agent_verify_ca", None)
    return result


def upgraded(info: Mapping[str, Any] | None, cipher: Cipher | None) -> dict[str, Any] | None:
    """``info`` without the plain-text agent tokens older versions stored, or None when
    it has none. A ramdisk token becomes its hash and encrypted copy (the agent keeps
    working); a host-agent token is dropped with its binding: it may have come from
    the anonymous host-mode lookup this version removed, so an operator issues a new
    one (``metalcast host token NODE``)."""
    result = dict(info or {})
    plain = result.get("agent_secret_token")
    ramdisk = plain if isinstance(plain, str) and plain and not is_encrypted(plain) else None
    if ramdisk is None and LEGACY_HOST_TOKEN not in result:
        return None
    if LEGACY_HOST_TOKEN in result:
        result = without_host_agent(result)
    if ramdisk is not None:
        result.update(agent_token_hash=token_hash(ramdisk),
                      agent_secret_token=_seal(cipher, "agent_secret_token", ramdisk))
    return result


@dataclasses.dataclass(frozen=True)
class CleanRun:
    """One cleaning run: the steps the conductor still has to ask the agent for."""

    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    request: list[dict[str, Any]] | None = None  #: the manual clean steps asked for
    manual: bool = False                         #: manual cleaning ends in manageable
    version: str | None = None                   #: hardware_manager_version of the agent

    @classmethod
    def of(cls, node: Any) -> CleanRun:
        info = _info(node)
        return cls(steps=list(info.get("agent_clean_steps") or []),
                   request=info.get("agent_clean_request"),
                   manual=bool(info.get("agent_clean_manual")),
                   version=info.get("agent_clean_version"))

    def into(self, info: Mapping[str, Any] | None) -> dict[str, Any]:
        """``info`` with this run written in."""
        result = without_clean(info)
        values = {"agent_clean_steps": self.steps or None, "agent_clean_request": self.request,
                  "agent_clean_manual": self.manual or None,
                  "agent_clean_version": self.version}
        result.update({k: v for k, v in values.items() if v is not None})
        return result


def without_clean(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``info`` with no cleaning run."""
    return {k: v for k, v in (info or {}).items() if k not in CLEAN_KEYS}
