"""The operator's image-update REST under ``/updates/v1/`` (authenticated as the rest
of the API); what ``metalcast image|channel|group|instance|lease`` call.

- ``GET|POST /images`` (POST: the image file as the raw body, streamed to the data dir;
  ``?version=V[&channel=C][&appid=ID]``), ``GET|DELETE /images/<version>[?appid=]``
- ``GET /channels``, ``GET|PUT /channels/<name>`` (PUT ``{"version": V}``)
- ``GET /groups``, ``GET|POST /groups/<name>`` (POST: create, policy fields),
  ``PUT /groups/<name>`` (``updates_enabled``: pause, resume and lift a halt)
- ``GET /instances[?group=&status=&version=&limit=]``, ``GET /instances/<id>``
  (machine id or node UUID; with its history)
- ``GET /leases``, ``DELETE /leases/<group>/holders/<host>``,
  ``PUT /leases/<group>`` ``{"max": N}``
"""
from __future__ import annotations

import flask

from api import common
from conductor import errors

bp = flask.Blueprint("updates", __name__)
#: The largest image an upload may carry (api/limits.py): a Flatcar /usr image is
#: ~0.5 GiB, a whole metalcast slot 1 GiB.
MAX_UPLOAD = 1 << 30
#: Routes whose body is not JSON (the image file itself).
RAW_BODIES = ("/updates/v1/images",)


def _updates():
    return common.service().updates


def _appid() -> str | None:
    return flask.request.args.get("appid")


@bp.get("/images")
def list_images():
    return {"images": _updates().images(_appid())}


@bp.post("/images")
def upload_image():
    version = flask.request.args.get("version")
    if not version:
        raise errors.InvalidParameter("Say which version the image is: ?version=V.")
    flask.request.max_content_length = MAX_UPLOAD
    return _updates().upload(flask.request.stream, version,
                             flask.request.args.get("channel"), _appid()), 201


@bp.get("/images/<version>")
def show_image(version: str):
    return _updates().image(version, _appid())


@bp.delete("/images/<version>")
def delete_image(version: str):
    _updates().delete_image(version, _appid())
    return "", 204


@bp.get("/channels")
def list_channels():
    return {"channels": _updates().channels()}


@bp.get("/channels/<name>")
def show_channel(name: str):
    return _updates().channel(name, _appid())


@bp.put("/channels/<name>")
def set_channel(name: str):
    return _updates().set_channel(name, common.json_body().get("version"), _appid())


@bp.get("/groups")
def list_groups():
    return {"groups": _updates().groups()}


@bp.get("/groups/<name>")
def show_group(name: str):
    return _updates().group(name, _appid())


@bp.post("/groups/<name>")
def create_group(name: str):
    return _updates().create_group(name, common.json_body(), _appid()), 201


@bp.put("/groups/<name>")
def update_group(name: str):
    """Some policy fields; ``updates_enabled: false`` pauses the group, ``true``
    resumes it and lifts a halt."""
    return _updates().update_group(name, common.json_body(), _appid())


@bp.get("/instances")
def list_instances():
    args = flask.request.args
    return {"instances": _updates().instances(
        args.get("group"), args.get("status"), args.get("version"),
        min(common.int_arg("limit", 1000), 1000))}


@bp.get("/instances/<ident>")
def show_instance(ident: str):
    return _updates().instance(ident)


@bp.get("/leases")
def lease_status():
    return {"groups": _updates().leases.status()}


@bp.delete("/leases/<group>/holders/<host>")
def release_lease(group: str, host: str):
    return _updates().leases.release(group, host)


@bp.put("/leases/<group>")
def set_lease_max(group: str):
    return _updates().leases.set_max(group, common.json_body().get("max"))
