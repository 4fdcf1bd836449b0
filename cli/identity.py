"""An OpenStack openrc login from the client side: Keystone v3 password auth, then the
URL of one service from the token's catalog.

StarlingX's ``sw-manager`` reaches the VIM this way (``OS_AUTH_URL``, ``OS_USERNAME``,
... then the catalog entry name ``vim``, type ``nfv``, in ``OS_REGION_NAME`` at
``OS_INTERFACE``); metalcast serves the same login at ``/v3`` (api/identity/). Unlike
StarlingX's client, a missing region takes the catalog's only region, a missing
interface means ``public``, missing domains mean ``Default`` and an auth URL without
``/v3`` gets it appended.
"""
from __future__ import annotations

import dataclasses
import os
import urllib.parse

import requests

from cli.errors import CliError

DEFAULT_DOMAIN = "Default"
DEFAULT_INTERFACE = "public"
#: option name -> the openrc variable it falls back to
ENVIRONMENT = {"auth_url": "OS_AUTH_URL", "username": "OS_USERNAME",
               "password": "OS_PASSWORD", "project_name": "OS_PROJECT_NAME",
               "project_domain_name": "OS_PROJECT_DOMAIN_NAME",
               "user_domain_name": "OS_USER_DOMAIN_NAME",
               "region_name": "OS_REGION_NAME", "interface": "OS_INTERFACE"}


class LoginFailed(CliError):
    """The Identity service refused the login, or its catalog lacks the service."""


@dataclasses.dataclass(frozen=True)
class Openrc:
    """What an openrc file sets, from ``--os-*`` options or ``OS_*`` variables."""

    auth_url: str
    username: str
    password: str
    project_name: str = "admin"
    project_domain_name: str = DEFAULT_DOMAIN
    user_domain_name: str = DEFAULT_DOMAIN
    region_name: str | None = None
    interface: str = DEFAULT_INTERFACE

    @classmethod
    def from_options(cls, options: dict[str, str | None]) -> Openrc:
        """Each field from ``options`` (the ``--os-*`` values), else its variable;
        a missing user or password is an error that names both."""
        values = {field: options.get(field) or os.environ.get(variable)
                  for field, variable in ENVIRONMENT.items()}
        missing = [f"--os-{field.replace('_', '-')} (or {ENVIRONMENT[field]})"
                   for field in ("auth_url", "username", "password") if not values[field]]
        if missing:
            raise LoginFailed("the Identity login needs " + ", ".join(missing)
                              + ": source your openrc file or give the options")
        return cls(**{k: v for k, v in values.items() if v})

    @property
    def tokens_url(self) -> str:
        url = self.auth_url.rstrip("/")
        if not urllib.parse.urlsplit(url).path.endswith("/v3"):
            url += "/v3"
        return url + "/auth/tokens"

    def body(self) -> dict:
        """The password login Keystone and StarlingX's clients send, project-scoped."""
        return {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.username, "password": self.password,
                "domain": {"name": self.user_domain_name}}}},
            "scope": {"project": {"name": self.project_name,
                                  "domain": {"name": self.project_domain_name}}}}}


@dataclasses.dataclass(frozen=True)
class Login:
    """A token and the catalog it came with."""

    token: str
    catalog: list

    def service_url(self, name: str, kind: str, region: str | None,
                    interface: str) -> str:
        """The URL of the service ``name`` of type ``kind`` at ``interface`` in
        ``region`` (any region when None); a clear error naming what is offered."""
        offered = []
        for service in self.catalog:
            if not isinstance(service, dict):
                continue
            if service.get("name") != name or service.get("type") != kind:
                continue
            for endpoint in service.get("endpoints") or []:
                where = (endpoint.get("region") or endpoint.get("region_id"),
                         endpoint.get("interface"))
                offered.append("/".join(map(str, where)))
                if where[1] == interface and region in (None, where[0]):
                    return str(endpoint["url"]).rstrip("/")
        found = ("it offers " + ", ".join(offered)) if offered else "it has no such service"
        raise LoginFailed(f"the catalog has no {name!r} (type {kind}) endpoint for region "
                          f"{region or 'any'}, interface {interface}: {found} (set "
                          "OS_REGION_NAME / OS_INTERFACE)")


def login(openrc: Openrc, timeout: float = 40) -> Login:
    """``POST {auth_url}/v3/auth/tokens``: the token (``X-Subject-Token``) and catalog."""
    url = openrc.tokens_url
    try:
        response = requests.post(url, json=openrc.body(), timeout=timeout,
                                 headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise LoginFailed(f"cannot reach the Identity service at {url}: {exc}") from None
    if response.status_code == 401:
        raise LoginFailed(f"the Identity service at {url} refused the login of "
                          f"{openrc.username!r}: check OS_USERNAME and OS_PASSWORD")
    if response.status_code != 201 or "X-Subject-Token" not in response.headers:
        raise LoginFailed(f"the Identity login at {url} answered HTTP "
                          f"{response.status_code}: {response.text.strip()[:200]}")
    try:
        catalog = response.json()["token"].get("catalog") or []
    except (ValueError, KeyError, AttributeError):
        raise LoginFailed(f"the Identity login at {url} answered no token body") from None
    return Login(response.headers["X-Subject-Token"], catalog)
