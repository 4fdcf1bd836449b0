"""How ``sw-manager`` reaches the orchestration API (``/api/orchestration/<type>/
strategy``) and what each call returns: the strategy document, or an :class:`ApiError`
with the server's message.

The endpoint is found like the other metalcast clients find theirs (``--url`` or
METALCAST_URL, HTTP basic user from METALCAST_USERNAME / METALCAST_PASSWORD), or,
when only an openrc is there (``--os-auth-url`` or OS_AUTH_URL), like StarlingX's
client: an Identity v3 login, then the catalog's ``vim`` (type ``nfv``) endpoint
with the token.
"""
from __future__ import annotations

import json
import os
import sys

import requests

from cli import identity
from cli.client import Client
from cli.errors import CliError

#: The VIM's own client waits 40 s (its server gives up after 30 s).
TIMEOUT = 40
VIM_SERVICE, VIM_TYPE = "vim", "nfv"


class ApiError(CliError):
    """A call the API answered with an error; ``str()`` is the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Unreachable(CliError):
    """No answer from the API (no connection, or a timeout)."""


def error_text(response: requests.Response) -> str:
    """The message of an error body: StarlingX's ``faultstring``, Ironic's
    ``error_message`` (JSON in a string), or the text itself."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(data, dict):
        inner = data.get("error_message")
        if isinstance(inner, str):
            try:
                inner = json.loads(inner)
            except ValueError:
                return inner
        for candidate in (data, inner):
            if isinstance(candidate, dict):
                text = candidate.get("faultstring") or candidate.get("description")
                if text:
                    return str(text)
    return response.text.strip()[:500] or response.reason


class OrchestrationApi:
    """The strategy calls, for one strategy type each (``sw-patch``, ``image-update``)."""

    def __init__(self, url: str, session: requests.Session, debug: bool = False):
        self.url = url.rstrip("/")
        self.session = session
        self.debug = debug

    def _call(self, method: str, path: str, body: dict | None = None,
              ok: tuple[int, ...] = (200,)) -> dict:
        url = f"{self.url}/api/orchestration/{path}"
        try:
            response = self.session.request(method, url, json=body, timeout=TIMEOUT)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # refused, reset, or cut in the middle of an answer (a server restarting)
            raise Unreachable(f"cannot reach the orchestration API at {self.url}: is "
                              "`metalcast serve` running? (set --url or METALCAST_URL, or "
                              "source an openrc)") from None
        except requests.Timeout:
            raise Unreachable(f"the orchestration API at {self.url} did not answer within "
                              f"{TIMEOUT} s") from None
        if self.debug:     # the answer escaped: it is the server's text (see printable)
            print(f"{method} {url} {json.dumps(body) if body is not None else ''} -> "
                  f"{response.status_code} {response.text!r}", file=sys.stderr)
        if response.status_code == 401:
            raise ApiError(401, "authentication failed: set METALCAST_USERNAME and "
                                "METALCAST_PASSWORD, or source an openrc (OS_AUTH_URL ...)")
        if response.status_code not in ok:
            raise ApiError(response.status_code, error_text(response))
        try:
            data = response.json()
        except ValueError:
            raise ApiError(response.status_code, "the API answered no JSON: "
                           f"{response.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise ApiError(response.status_code, f"unexpected answer: {data!r}")
        return data

    def show(self, kind: str) -> dict | None:
        """The strategy, or None when there is none (``{"strategy": null}``). A 404 is
        no orchestration API at this URL (StarlingX's client would say "No strategy
        available", which sends the operator looking in the wrong place)."""
        try:
            data = self._call("GET", f"{kind}/strategy")
        except ApiError as exc:
            if exc.status == 404:
                raise ApiError(404, f"{self.url} serves no /api/orchestration/{kind}/"
                               "strategy: is it a metalcast API URL?") from None
            raise
        return data.get("strategy")

    def create(self, kind: str, body: dict) -> dict:
        return self._strategy(self._call("POST", f"{kind}/strategy", body))

    def delete(self, kind: str, force: bool) -> None:
        self._call("DELETE", f"{kind}/strategy", {"force": force}, ok=(200, 204))

    def action(self, kind: str, body: dict) -> dict:
        return self._strategy(self._call("POST", f"{kind}/strategy/actions", body,
                                         ok=(200, 202)))

    @staticmethod
    def _strategy(data: dict) -> dict:
        strategy = data.get("strategy")
        if not isinstance(strategy, dict):
            raise ApiError(200, f"the API answered no strategy: {data!r}")
        return strategy


def connect(args) -> OrchestrationApi:
    """The API as the options and environment say (see the module docstring): an
    explicit ``--os-auth-url`` wins, then ``--url``, METALCAST_URL, OS_AUTH_URL."""
    options = {field: getattr(args, f"os_{field}", None) for field in identity.ENVIRONMENT}
    if options["auth_url"] or not (args.url or os.environ.get("METALCAST_URL")) and \
            os.environ.get("OS_AUTH_URL"):
        openrc = identity.Openrc.from_options(options)
        login = identity.login(openrc)
        url = login.service_url(VIM_SERVICE, VIM_TYPE, openrc.region_name, openrc.interface)
        session = requests.Session()
        session.headers.update({"X-Auth-Token": login.token})
    else:
        client = Client(args.url, args.username, args.password, retries=0)
        url, session = client.url, client.session
    session.headers.update({"Accept": "application/json", "User-Agent": "sw-manager"})
    return OrchestrationApi(url, session, debug=args.debug)
