"""Ironic API microversion negotiation: parse the request header, answer on every response.

No header means 1.1; ``latest`` means the maximum; above the maximum is 406 with
the min/max headers so ironicclient can retry at our maximum.
"""
from __future__ import annotations

import re

import flask

from conductor import errors

MIN_VERSION = (1, 1)
MAX_VERSION = (1, 115)
HEADER = "X-OpenStack-Ironic-API-Version"
MIN_HEADER = "X-OpenStack-Ironic-API-Minimum-Version"
MAX_HEADER = "X-OpenStack-Ironic-API-Maximum-Version"
#: Nine digits at most: int() of thousands of digits is refused (ValueError).
_VERSION_RE = re.compile(r"^(\d{1,9})\.(\d{1,9})$")


def text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def requested(headers) -> str | None:
    """The version the client asked for, from either header form."""
    value = headers.get(HEADER)
    if value is None:
        generic = headers.get("OpenStack-API-Version", "")
        parts = generic.split()
        if len(parts) == 2 and parts[0].lower() == "baremetal":
            value = parts[1]
    return value


def parse(value: str | None) -> tuple[int, int]:
    """The version in effect for a request, or Invalid (400) / NotAcceptable (406)."""
    if value is None:
        return MIN_VERSION
    value = value.strip()
    if value.lower() == "latest":
        return MAX_VERSION
    match = _VERSION_RE.match(value)
    if not match:
        raise errors.InvalidParameter(f"Invalid value for {HEADER} header: {value!r}; "
                                      "expected MAJOR.MINOR or 'latest'.")
    version = (int(match.group(1)), int(match.group(2)))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise errors.NotAcceptable(
            f"Version {value} was requested but the minor version is not supported by "
            f"this service. The supported version range is: [{text(MIN_VERSION)}, "
            f"{text(MAX_VERSION)}].")
    return version


def negotiate() -> None:
    """before_request: set ``flask.g.version`` (the root documents need none)."""
    flask.g.version = parse(requested(flask.request.headers))


def current() -> tuple[int, int]:
    return flask.g.get("version", MIN_VERSION)


def at_least(minor: int) -> bool:
    return current() >= (1, minor)


def add_headers(response: flask.Response) -> flask.Response:
    """after_request: the version headers every response carries, errors included."""
    response.headers[MIN_HEADER] = text(MIN_VERSION)
    response.headers[MAX_HEADER] = text(MAX_VERSION)
    version = flask.g.get("version")
    if version is not None:
        response.headers[HEADER] = text(version)
        response.headers["OpenStack-API-Version"] = f"baremetal {text(version)}"
    response.headers["Vary"] = f"{HEADER}, OpenStack-API-Version"
    return response


def version_document(base_url: str) -> dict:
    return {"id": "v1", "links": [{"href": f"{base_url}/v1/", "rel": "self"}],
            "status": "CURRENT", "min_version": text(MIN_VERSION),
            "version": text(MAX_VERSION)}
