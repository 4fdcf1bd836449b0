"""The body of ``POST /v3/auth/tokens``, parsed once into a :class:`PasswordLogin`.

Keystone's rules, as its clients send it (keystoneauth1's V3Password, the StarlingX
clients' own urllib request): the ``password`` method, the user by id, or by name with
its domain; the scope a project by id, or by name with its domain, or none (unscoped).
metalcast has one domain, Keystone's ``default`` ("Default"). A malformed body is a
400; what Keystone refuses as an authentication failure (an unsupported method or
scope, another domain) is a 401 that names nothing about the users.
"""
from __future__ import annotations

import dataclasses
import uuid

from conductor import errors

#: The one domain: Keystone's default domain.
DOMAIN_ID = "default"
DOMAIN_NAME = "Default"
#: Fixed namespace of the user and project ids (uuid5 of the name): stable across
#: restarts and processes, Keystone-shaped (32 hex digits).
ID_NAMESPACE = uuid.UUID("5b0c8ad1-2f4e-4c55-9a47-7c6f2e3d9b10")
#: The message of every refused login: it tells no user name from a password.
REFUSED = "The request you have made requires authentication."


def object_id(kind: str, name: str) -> str:
    """The id of the user or project ``name`` (``kind`` "user" or "project")."""
    return uuid.uuid5(ID_NAMESPACE, f"{kind}:{name}").hex


@dataclasses.dataclass(frozen=True)
class PasswordLogin:
    """A password login: ``user_id`` or ``user_name``; ``project_id`` or
    ``project_name``, or neither (unscoped)."""

    password: str
    user_name: str | None = None
    user_id: str | None = None
    project_name: str | None = None
    project_id: str | None = None

    @property
    def scoped(self) -> bool:
        return self.project_name is not None or self.project_id is not None


def _object(data: object, where: str) -> dict:
    if not isinstance(data, dict):
        raise errors.InvalidParameter(f"Invalid input for field '{where}': expected an "
                                      "object.")
    return data


def _text(data: dict, key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise errors.InvalidParameter(f"Invalid input for field '{where}.{key}': expected "
                                      "a non-empty string.")
    return value


def _check_domain(data: dict, where: str) -> None:
    """The ``domain`` of a user or project given by name must be the default domain."""
    domain = _object(data.get("domain"), f"{where}.domain") if "domain" in data else None
    if domain is None:
        raise errors.InvalidParameter(f"Expecting to find domain in {where.split('.')[-1]}."
                                      " The server could not comply with the request "
                                      "since it is either malformed or otherwise incorrect.")
    domain_id = _text(domain, "id", f"{where}.domain")
    name = _text(domain, "name", f"{where}.domain")
    if domain_id is None and name is None:
        raise errors.InvalidParameter(f"Invalid input for field '{where}.domain': expected "
                                      "an id or a name.")
    if (domain_id is not None and domain_id != DOMAIN_ID) or (
            name is not None and name.lower() != DOMAIN_NAME.lower()):
        raise errors.NotAuthorized(REFUSED)


def _user(identity: dict) -> tuple[str | None, str | None, str]:
    password = _object(identity.get("password"), "identity.password")
    user = _object(password.get("user"), "identity.password.user")
    secret = user.get("password")
    if not isinstance(secret, str):
        raise errors.InvalidParameter("Invalid input for field 'identity.password.user."
                                      "password': expected a string.")
    user_id, name = _id_or_name(user, "identity.password.user")
    return user_id, name, secret


def _id_or_name(value: dict, field: str) -> tuple[str | None, str | None]:
    """(id, name) of a user or project; a name must come with its domain."""
    ident, name = _text(value, "id", field), _text(value, "name", field)
    if ident is None and name is None:
        raise errors.InvalidParameter(f"Invalid input for field '{field}': expected an id "
                                      "or a name.")
    if ident is None:
        _check_domain(value, field)
    return ident, name


def _project(scope: object) -> tuple[str | None, str | None]:
    """(project id, project name) of the scope; (None, None) when unscoped."""
    if scope is None or scope == "unscoped":
        return None, None
    scope = _object(scope, "scope")
    if set(scope) != {"project"}:  # domain, system and trust scopes: nothing to grant
        raise errors.NotAuthorized(REFUSED)
    return _id_or_name(_object(scope["project"], "scope.project"), "scope.project")


def parse(body: dict) -> PasswordLogin:
    """The login in a ``{"auth": {"identity": ..., "scope": ...}}`` body."""
    auth = _object(body.get("auth"), "auth")
    identity = _object(auth.get("identity"), "identity")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods:
        raise errors.InvalidParameter("Invalid input for field 'identity.methods': expected "
                                      "a list of methods.")
    if methods != ["password"]:  # token, totp, application credentials: not here
        raise errors.NotAuthorized(REFUSED)
    user_id, user_name, password = _user(identity)
    project_id, project_name = _project(auth.get("scope"))
    return PasswordLogin(password=password, user_id=user_id,
                         user_name=None if user_id else user_name,
                         project_id=project_id,
                         project_name=None if project_id else project_name)
