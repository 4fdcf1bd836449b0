"""HTTP(S) client of the ramdisk agent's command API (ironic-python-agent protocol).

``POST {agent_url}/v1/commands/?wait=true|false&agent_token=T`` runs one command,
``GET {agent_url}/v1/commands/?agent_token=T`` lists them. TLS is verified against
the certificate the agent sent in its heartbeat (``agent_verify_ca``), written once
per process to ``DATA_DIR/agent-ca/<sha256>.pem``. Every ``requests`` failure and
every error answer becomes ``AgentConnectionFailed`` or ``AgentCommandError`` here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from conductor import errors
from conductor.drivers.internal_info import AgentBoot

# The command statuses are defined once, in the wire format both sides share.
from ramdisk_agent.wire.statuses import FAILED, RUNNING, SUCCEEDED

if TYPE_CHECKING:
    from conductor.secrets import Cipher

LOG = logging.getLogger(__name__)

__all__ = ["AgentClient", "CommandResult", "FAILED", "RUNNING", "SUCCEEDED", "ca_file"]
CA_DIR = "agent-ca"
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


def ca_file(data_path: Path, pem: str | None) -> str | None:
    """The path of a file holding ``pem`` (written once, content-addressed)."""
    if not pem:
        return None
    folder = Path(data_path) / CA_DIR
    path = folder / f"{hashlib.sha256(pem.encode()).hexdigest()}.pem"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return str(path)


class AgentClient:
    """Talks to the agent of one node, with its URL, token and CA."""

    def __init__(self, node, settings, session: requests.Session | None = None,
                 cipher: Cipher | None = None):
        url, self.token, verify_ca = self._endpoint(node, cipher)
        self.node_uuid = node.uuid
        self.url = url.rstrip("/") + "/v1/commands/"
        self.settings = settings
        self.session = session or requests.Session()
        self.verify = ca_file(settings.data_path, verify_ca) or True

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
        LOG.info("Node %s: agent command %s (wait=%s)", self.node_uuid, name, wait)
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
        params = dict(query, agent_token=self.token)
        attempts = max(1, self.settings.agent.max_command_attempts)
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(
                    method, self.url, params=params, json=body, verify=self.verify,
                    timeout=self.settings.agent.command_timeout)
                break
            except requests.exceptions.SSLError as exc:
                raise errors.AgentConnectionFailed(
                    reason=f"TLS to the agent of node {self.node_uuid} at {self.url} "
                           f"failed (certificate from its heartbeat does not match?): "
                           f"{_short(exc)}") from None
            except requests.exceptions.Timeout:
                raise errors.AgentConnectionFailed(
                    reason=f"the agent of node {self.node_uuid} at {self.url} did not "
                           f"answer within {self.settings.agent.command_timeout} s") from None
            except requests.exceptions.RequestException as exc:
                if attempt == attempts:
                    raise errors.AgentConnectionFailed(
                        reason=f"cannot reach the agent of node {self.node_uuid} at "
                               f"{self.url} after {attempts} attempt(s): {_short(exc)}"
                    ) from None
                time.sleep(min(2.0, self.settings.agent.command_wait_interval))
        return self._decode(response)

    def _decode(self, response: requests.Response):
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            why = HTTP_REASONS.get(response.status_code, f"HTTP {response.status_code}")
            detail = data.get("faultstring") if isinstance(data, dict) else None
            detail = detail or response.text[:200]
            raise errors.AgentCommandError(
                reason=f"the agent of node {self.node_uuid} refused the request: {why}: "
                       f"{detail}")
        if data is None:
            raise errors.AgentCommandError(
                reason=f"the agent of node {self.node_uuid} sent a non-JSON answer")
        return data


def _short(exc: Exception) -> str:
    """The innermost reason of a requests error, without the pool's long preamble."""
    text = str(exc)
    return text[text.rfind("(Caused by ") + 11:].rstrip(")") if "(Caused by " in text \
        else text[:300]
