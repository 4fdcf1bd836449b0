"""Typed views of the agent bookkeeping a node keeps in ``driver_internal_info``.

``driver_internal_info`` is the node's JSON column for what drivers remember
between heartbeats (Ironic's name and place). The agent-driven flows read and write
two records in it: the agent of the current boot (its one-time token, command URL,
certificate, version) and the running cleaning (the steps still to run). Every
reader and writer goes through this module, so the key names live in one place
and a record is read whole, typed, or not at all.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: The keys of :class:`AgentBoot`: they belong to one boot of the agent and are
#: wiped together (power off, reboot, end of deploy or clean).
AGENT_KEYS = ("agent_secret_token", "agent_url", "agent_version", "agent_last_heartbeat",
              "agent_verify_ca")
#: The keys of :class:`CleanRun`: one cleaning run.
CLEAN_KEYS = ("agent_clean_steps", "agent_clean_request", "agent_clean_manual",
              "agent_clean_version")


def _info(node: Any) -> Mapping[str, Any]:
    return getattr(node, "driver_internal_info", None) or {}


@dataclasses.dataclass(frozen=True)
class AgentBoot:
    """The agent of the node's current boot, as lookup and heartbeats recorded it."""

    token: str | None = None          #: one-time token issued at lookup (agent_secret_token)
    url: str | None = None            #: the agent's command API (callback_url)
    version: str | None = None        #: agent_version from its heartbeat
    last_heartbeat: str | None = None  #: ISO time of the last accepted heartbeat
    verify_ca: str | None = None      #: PEM certificate the agent's TLS must present

    @classmethod
    def of(cls, node: Any) -> AgentBoot:
        info = _info(node)
        return cls(*(info.get(key) for key in AGENT_KEYS))

    @property
    def reachable(self) -> bool:
        """True once a heartbeat gave a URL for the token issued at lookup."""
        return bool(self.url and self.token)


def has_agent(node: Any) -> bool:
    """True when the node remembers any part of an agent boot."""
    info = _info(node)
    return any(key in info for key in AGENT_KEYS)


def without_agent(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``info`` less the agent of the last boot: its token is never valid again."""
    return {k: v for k, v in (info or {}).items() if k not in AGENT_KEYS}


def with_token(info: Mapping[str, Any] | None, token: str) -> dict[str, Any]:
    """``info`` with a new agent boot that holds only its lookup token."""
    return dict(without_agent(info), agent_secret_token=token)


def with_heartbeat(info: Mapping[str, Any] | None, url: str, version: str | None, when: str,
                   verify_ca: str | None) -> dict[str, Any]:
    """``info`` with what an accepted heartbeat tells about the agent."""
    result = dict(info or {}, agent_url=url, agent_version=version,
                  agent_last_heartbeat=when)
    if verify_ca:
        result["agent_verify_ca"] = verify_ca
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
