"""Live per-node progress for ``metalcast demo``: one timestamped line whenever a
node's provision state, its deploy/clean step or its lab machine's phase changes,
plus the agent's own write result (from the machine's agent.log)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from cli.client import Client, ClientError

#: agent.log lines worth showing: the write result, a delta being applied.
AGENT_MARKS = ("Wrote ", "applying delta", "delta applied", "Delta applied")


def _step(node: dict) -> str:
    step = node.get("deploy_step") or node.get("clean_step") or {}
    return step.get("step") or ""


class Watcher:
    """Polls the API and the lab's status files in a thread while a phase runs."""

    def __init__(self, client: Client, lab, names: dict[str, str], out=None,
                 interval: float = 0.3):
        self.client, self.lab, self.names = client, lab, names    # uuid -> machine name
        self.out = out or sys.stdout
        self.interval = interval
        self.started = time.monotonic()
        self._seen: dict[str, tuple] = {}
        self.target: str | None = None
        self.reached: dict[str, float] = {}     #: uuid -> when it first showed ``target``
        self._log_offsets: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = max(len(n) for n in names.values())

    def expect(self, target: str) -> None:
        """Record when each node first shows provision state ``target`` (in ``reached``)."""
        self.target, self.reached = target, {}

    def __enter__(self) -> Watcher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="demo-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.poll()              # the final states, printed once

    def say(self, name: str, text: str) -> None:
        stamp = time.monotonic() - self.started
        print(f"  [{stamp:6.1f}s] {name:<{self._width}}  {text}", file=self.out, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except (ClientError, OSError, ValueError):
                pass             # a status file mid-replace or a busy API: next round

    def poll(self) -> None:
        nodes = {n["uuid"]: n for n in self.client.list_nodes(detail=True)}
        for uuid, name in self.names.items():
            node, machine = nodes.get(uuid), self.lab.status(name)
            if node is None:
                continue
            if node["provision_state"] == self.target and not node["reservation"]:
                self.reached.setdefault(uuid, time.monotonic())
            state = (node["provision_state"], _step(node), machine["phase"],
                     machine["power"])
            if state != self._seen.get(uuid):
                self._seen[uuid] = state
                self.say(name, self._describe(node, machine))
            for line in self._agent_lines(name):
                self.say(name, f"agent: {line}")

    @staticmethod
    def _describe(node: dict, machine: dict) -> str:
        step = _step(node)
        text = f"{node['provision_state']:<14}"
        text += f" step {step:<22}" if step else " " * 28
        text += f" machine: power {machine['power']}, {machine['phase']}"
        if machine.get("booted_os") and machine["phase"] == "booted-disk":
            text += f" ({machine['booted_os'].get('pretty_name')})"
        if node.get("last_error"):
            text += f"\n      last_error: {node['last_error']}"
        return text

    def _agent_lines(self, name: str) -> list[str]:
        path = Path(self.lab.machines[name]["status"]).with_suffix("") / "agent.log"
        try:
            with open(path, "rb") as f:
                f.seek(self._log_offsets.get(name, 0))
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._log_offsets[name] = self._log_offsets.get(name, 0) + end
        lines = data[:end].decode(errors="replace").splitlines()
        return [line.split(": ", 1)[-1][:200] for line in lines
                if any(mark in line for mark in AGENT_MARKS)]
