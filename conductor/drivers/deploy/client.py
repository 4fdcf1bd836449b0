"""HTTP(S) client of the ramdisk agent's command API (ironic-python-agent protocol).

``POST {agent_url}/v1/commands/?wait=true|false&agent_token=T`` runs one command,
``GET {agent_url}/v1/commands/?agent_token=T`` lists them. TLS is verified against
the certificate the agent sent in its heartbeat (``agent_verify_ca``); the
connection is kept for the next request (conductor/drivers/deploy/connections.py).
Every connection failure and every error answer becomes ``AgentConnectionFailed``
or ``AgentCommandError`` here.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from conductor import errors
from conductor.drivers.deploy.connections import AgentConnections, AnswerTooLarge
from conductor.drivers.internal_info import AgentBoot

# The command statuses are defined once, in the wire format both sides share.
from ramdisk_agent.wire.statuses import FAILED, RUNNING, SUCCEEDED

if TYPE_CHECKING:
    from conductor.secrets import Cipher

LOG = logging.getLogger(__name__)

__all__ = ["AgentClient", "CommandResult", "FAILED", "RUNNING", "SUCCEEDED"]
#: HTTP status from the agent -> why, for the error message.
HTTP_REASONS = {400: "the agent refused the command's parameters (400)",
                401: "the agent rejected the agent token (401)",
                409: "the agent is busy with another command (409)"}


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """One command as the agent reports it (the POST answer or a GET entry)."""

    name: str                 #: command name without the extension, e.g. "execute_deploy_step"
    status: str               #: RUNNING, SUCCEEDED or FAILED
    error: object = None      #: command_error: a string or IPA's serialised exception dict
    result: dict | None = None
    id: str | None = None

    @classmethod
    def from_json(cls, data) -> CommandResult:
        if not isinstance(data, dict) or not isinstance(data.get("command_status"), str):
            raise errors.AgentCommandError(
                reason=f"the agent answered with something that is not a command result: "
                       f"{str(data)[:200]!r}")
        result = data.get("command_result")
        return cls(name=str(data.get("command_name", "")), status=data["command_status"],
                   error=data.get("command_error"),
                   result=result if isinstance(result, dict) else None, id=data.get("id"))

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def error_text(self) -> str:
        """command_error as one line an operator can read: ``details`` first, as
        Ironic's ``get_command_error`` does.

        IPA's RESTError puts a fixed title in ``message`` ("Error verifying image
        checksum") and the facts in ``details`` (URL, expected and computed digests);
        metalcast-agent leaves ``details`` empty and says everything in ``message``.
        """
        error = self.error
        if isinstance(error, dict):
            error = error.get("details") or error.get("message") or error.get("type")
        return str(error or f"status {self.status}")


class AgentClient:
    """Talks to the agent of one node, with its URL, token and certificate.

    ``connections`` are the process's kept connections to agents (DriverContext);
    without them, each request has a connection of its own.
    """

    def __init__(self, node, settings, connections: AgentConnections | None = None,
                 cipher: Cipher | None = None):
        url, self.token, self.verify_ca = self._endpoint(node, cipher)
        self.node_uuid = node.uuid
        self.url = url.rstrip("/") + "/v1/commands/"
        self.settings = settings
        self.connections = connections or AgentConnections(keep=False)

    @staticmethod
    def _endpoint(node, cipher: Cipher | None) -> tuple[str, str, str | None]:
        """(command API URL, token to send, pinned certificate) of the node's agent."""
        agent = AgentBoot.of(node)
        if not agent.reachable or agent.url is None:
            raise errors.AgentConnectionFailed(
                reason=f"node {node.uuid} has no agent URL or token yet (no heartbeat)")
        # The stock IPA checks every command's agent_token against its lookup token:
        # the conductor keeps it encrypted (conductor/drivers/internal_info.py).
        return agent.url, agent.command_token(cipher), agent.verify_ca

    def command(self, name: str, params: dict, wait: bool = False) -> CommandResult:
        """Start ``name`` ("<extension>.<command>"); FAILED raises AgentCommandError."""
        # Debug, as Ironic's agent client: the state changes and the steps are the
        # operator's INFO lines (five commands per deploy, a fleet's worth of lines).
        LOG.debug("Node %s: agent command %s (wait=%s)", self.node_uuid, name, wait)
        data = self._request("POST", {"wait": str(wait).lower()},
                             {"name": name, "params": params})
        result = CommandResult.from_json(data)
        if result.status == FAILED:
            raise errors.AgentCommandError(
                reason=f"{name} failed on the agent of node {self.node_uuid}: "
                       f"{result.error_text()}")
        return result

    def commands(self) -> list[CommandResult]:
        data = self._request("GET", {}, None)
        items = data.get("commands") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise errors.AgentCommandError(
                reason=f"GET /v1/commands/ of node {self.node_uuid} has no command list")
        return [CommandResult.from_json(item) for item in items]

    def last_command(self) -> CommandResult | None:
        found = self.commands()
        return found[-1] if found else None

    def wait_done(self, name: str) -> CommandResult:
        """Poll until the last command ``name`` has finished; its final result."""
        short = name.split(".", 1)[-1]
        for _ in range(max(1, self.settings.agent.command_wait_attempts)):
            last = self.last_command()
            if last is not None and last.name == short and not last.running:
                if last.status == FAILED:
                    raise errors.AgentCommandError(
                        reason=f"{name} failed on the agent of node {self.node_uuid}: "
                               f"{last.error_text()}")
                return last
            time.sleep(self.settings.agent.command_wait_interval)
        raise errors.AgentCommandError(
            reason=f"{name} on node {self.node_uuid} did not finish after "
                   f"{self.settings.agent.command_wait_attempts} polls")

    def _request(self, method: str, query: dict, body: dict | None):
        target = f"{self.url}?{urlencode(dict(query, agent_token=self.token))}"
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        timeout = self.settings.agent.command_timeout
        attempts = max(1, self.settings.agent.max_command_attempts)
        for attempt in range(1, attempts + 1):
            try:
                status, data = self.connections.request(
                    method, target, payload, self.verify_ca, timeout,
                    who=f"the agent of node {self.node_uuid}")
                break
            except ssl.SSLError as exc:
                raise errors.AgentConnectionFailed(
                    reason=f"TLS to the agent of node {self.node_uuid} at {self.url} "
                           f"failed (certificate from its heartbeat does not match?): "
                           f"{_short(exc)}") from None
            except TimeoutError:
                raise errors.AgentConnectionFailed(
                    reason=f"the agent of node {self.node_uuid} at {self.url} did not "
                           f"answer within {timeout} s") from None
            except http.client.InvalidURL as exc:
                raise errors.AgentConnectionFailed(
                    reason=f"the agent of node {self.node_uuid}: {exc}") from None
            except AnswerTooLarge as exc:
                raise errors.AgentCommandError(
                    reason=f"the agent of node {self.node_uuid} at {self.url} sent too "
                           f"much: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                if attempt == attempts:
                    raise errors.AgentConnectionFailed(
                        reason=f"cannot reach the agent of node {self.node_uuid} at "
                               f"{self.url} after {attempts} attempt(s): {_short(exc)}"
                    ) from None
                time.sleep(min(2.0, self.settings.agent.command_wait_interval))
        return self._decode(status, data)

    def _decode(self, status: int, body: bytes):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if status >= 400:
            why = HTTP_REASONS.get(status, f"HTTP {status}")
            detail = data.get("faultstring") if isinstance(data, dict) else None
            detail = detail or body[:200].decode("utf-8", "replace")
            raise errors.AgentCommandError(
                reason=f"the agent of node {self.node_uuid} refused the request: {why}: "
                       f"{detail}")
        if data is None:
            raise errors.AgentCommandError(
                reason=f"the agent of node {self.node_uuid} sent a non-JSON answer")
        return data


def _short(exc: Exception) -> str:
    """One line naming the failure (an empty OSError message names its type)."""
    return (str(exc) or type(exc).__name__)[:300]
