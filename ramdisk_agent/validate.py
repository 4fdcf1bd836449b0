"""Shape checks for command parameters, shared by the commands' validators.

A validator (``@async_command(validate=...)``, ramdisk_agent/commands.py) runs in the
request, before the command is recorded: it checks only what the command relies on,
with messages naming the parameter (``step.args.image_info.urls``) and what is
expected, and raises :class:`InvalidContent` (the runner answers 400).
"""
from __future__ import annotations

from ramdisk_agent.errors import InvalidContent

#: Words of the messages -> the JSON types they accept.
KINDS = {"an object": dict, "a list": list, "a string": str, "a boolean": bool,
         "an integer": int}


def show(value) -> str:
    """A short rendering of a wrong value for a message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def field(container: dict, key: str, what: str, where: str = "",
          required: bool = False):
    """``container[key]`` once it is ``what`` (a KINDS key); None when absent or null,
    which is refused when ``required``. ``where`` prefixes the name in messages."""
    value = container.get(key)
    name = f"{where}{key}"
    if value is None:
        if required:
            raise InvalidContent(f'"{name}" is required: {what}')
        return None
    kind = KINDS[what]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidContent(f'"{name}" must be {what}, not {show(value)}')
    return value


def choice(container: dict, key: str, allowed: tuple, where: str = "") -> None:
    """``container[key]`` is absent, null or one of ``allowed``."""
    value = container.get(key)
    if value is not None and value not in allowed:
        raise InvalidContent(f'"{where}{key}" must be one of {", ".join(allowed)}, '
                             f"not {show(value)}")


def node_and_ports(params: dict) -> None:
    """``node`` an object and ``ports`` a list, as Ironic sends them (both optional)."""
    node = field(params, "node", "an object")
    field(params, "ports", "a list")
    if node is not None:
        field(node, "properties", "an object", "node.")
