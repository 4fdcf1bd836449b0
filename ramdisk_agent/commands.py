"""Agent commands: decorated extension methods, one command at a time.

An extension is a class whose methods are marked ``@sync_command`` (run inside the
HTTP request) or ``@async_command`` (run in a thread; the request returns RUNNING
unless ``wait=true``). :class:`CommandRunner` keeps every result in order (the
conductor reads the last one), refuses a new command while one is RUNNING
(409, IPA's "agent is busy") and calls ``on_finished`` when an async command ends,
which the agent uses to heartbeat at once.

Parameters are checked in the request, as IPA's ``async_command(name, validator)``
does: the keyword names against the method's signature, then the command's
``validate(params)`` (given to the decorator; it raises InvalidContent). Bad
parameters answer 400 (InvalidCommandParams) and nothing is recorded or started,
so the agent stays idle for the next command.
"""
from __future__ import annotations

import inspect
import logging
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ramdisk_agent.errors import (
    AgentError,
    AgentIsBusy,
    InvalidCommand,
    InvalidCommandParams,
    InvalidContent,
    RequestedObjectNotFound,
)
from ramdisk_agent.wire.statuses import FAILED, RUNNING, SUCCEEDED

LOG = logging.getLogger(__name__)

Validator = Callable[[dict], None]


@dataclass(frozen=True)
class Command:
    """One registered command: the bound method, how it runs, its parameter check."""
    fn: Callable
    is_async: bool
    validate: Validator | None = None


def _marker(kind: str, fn: Callable | None, validate: Validator | None):
    def mark(method: Callable) -> Callable:
        method.agent_command = (kind, validate)  # type: ignore[attr-defined]
        return method
    return mark(fn) if fn is not None else mark


def sync_command(fn: Callable | None = None, *, validate: Validator | None = None):
    """Mark a command run inside the request; ``validate(params)`` runs first."""
    return _marker("sync", fn, validate)


def async_command(fn: Callable | None = None, *, validate: Validator | None = None):
    """Mark a command run in a thread; ``validate(params)`` runs in the request."""
    return _marker("async", fn, validate)


class Extension:
    """Base of the extensions; ``name`` is the prefix in ``<extension>.<command>``."""
    name = ""

    def __init__(self, agent):
        self.agent = agent

    def commands(self) -> dict[str, Command]:
        """command name -> Command."""
        found = {}
        for attr in dir(type(self)):
            marker = getattr(getattr(type(self), attr), "agent_command", None)
            if marker:
                kind, validate = marker
                found[attr] = Command(getattr(self, attr), kind == "async", validate)
        return found


@dataclass
class CommandResult:
    """One command as the API shows it (IPA's shape)."""
    command_name: str
    command_params: dict
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    command_status: str = RUNNING
    command_error: dict | None = None
    command_result: object = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def serialize(self) -> dict:
        return {"id": self.id, "command_name": self.command_name,
                "command_params": self.command_params,
                "command_status": self.command_status,
                "command_error": self.command_error,
                "command_result": self.command_result}


class CommandRunner:
    """Executes commands from the registry and keeps their results."""

    def __init__(self, extensions: list[Extension], on_finished: Callable[[], None] | None = None):
        self.registry: dict[str, Command] = {}
        for ext in extensions:
            for cmd, entry in ext.commands().items():
                self.registry[f"{ext.name}.{cmd}"] = entry
        self.results: list[CommandResult] = []
        self.on_finished = on_finished
        self._lock = threading.Lock()

    def list(self) -> list[CommandResult]:
        with self._lock:
            return list(self.results)

    def get(self, command_id: str) -> CommandResult:
        with self._lock:
            for result in self.results:
                if result.id == command_id:
                    return result
        raise RequestedObjectNotFound(f"Command {command_id} not found")

    def execute(self, name: str, params: dict) -> CommandResult:
        """Start ``name``; sync commands are finished when this returns.

        Unknown names and bad parameters raise (400) before anything is recorded; a
        command still running answers 409 first, as IPA's execute_command does."""
        if not isinstance(name, str) or name not in self.registry:
            raise InvalidCommand(f"Unknown command: {name!r}; known: "
                                 f"{', '.join(sorted(self.registry))}")
        if not isinstance(params, dict):
            raise InvalidContent("Command params must be a JSON object")
        command = self.registry[name]
        fn, is_async = command.fn, command.is_async
        result = CommandResult(command_name=name.split(".", 1)[1], command_params=params)
        with self._lock:    # as IPA: "busy" (409) before the parameters (400)
            running = next((r for r in self.results if r.command_status == RUNNING), None)
            if running is not None:
                raise AgentIsBusy(running.command_name)
            self._check_params(name, command, params)
            self.results.append(result)
        LOG.info("Command %s started (id %s)", name, result.id)
        if is_async:
            threading.Thread(target=self._run, args=(result, fn, params, True),
                             name=f"command-{name}", daemon=True).start()
        else:
            self._run(result, fn, params, False)
        return result

    @staticmethod
    def _check_params(name: str, command: Command, params: dict) -> None:
        """The names against the signature, then the command's own validator."""
        try:
            inspect.signature(command.fn).bind(**params)
        except TypeError as exc:
            raise InvalidCommandParams(f"Invalid parameters for {name}: {exc}") from None
        if command.validate is None:
            return
        try:
            command.validate(params)
        except InvalidContent as exc:
            LOG.warning("Command %s refused: %s", name, exc.message)
            raise InvalidCommandParams(f"Invalid parameters for {name}: {exc.message}",
                                       exc.details) from None

    def _run(self, result: CommandResult, fn: Callable, params: dict, is_async: bool) -> None:
        try:
            value = fn(**params)
        except AgentError as exc:
            LOG.error("Command %s failed: %s", result.command_name, exc.message)
            result.command_error, result.command_status = exc.serialize(), FAILED
        except Exception as exc:  # noqa: BLE001 - an agent bug must still end the command
            LOG.error("Command %s crashed: %s", result.command_name, traceback.format_exc())
            result.command_error = {"type": type(exc).__name__, "code": 500,
                                    "message": f"{type(exc).__name__}: {exc}", "details": ""}
            result.command_status = FAILED
        else:
            result.command_result, result.command_status = value, SUCCEEDED
            LOG.info("Command %s succeeded (id %s)", result.command_name, result.id)
        finally:
            result.done.set()
        if is_async and self.on_finished is not None:
            self.on_finished()
