"""StarlingX's patch API (specs/starlingx-patching.md §3) under ``/patch/``, ``/v1/``
and ``/patching/v1/``: the same operations on each, as StarlingX's controller serves
``/patch/`` and ``/v1/`` alike (its sw-patch client calls ``/patch/<operation>``,
its orchestration ``/v1/<operation>``; ``/patching/v1/`` is metalcast's first path).

Thin views over the conductor's PatchController (``service.patching``). Bodies are
StarlingX's: ``{"info", "warning", "error"}`` for operations, ``{"pd": ...}`` for
query, bare ``true``/``false`` for is_applied/is_available, HTTP 200 even for a
logical error (sw-patch decides by the ``error`` text). Authenticated like every
other non-public path (api/auth.py).

Where it is served (:func:`register`): on the main API port, next to Ironic's
``/v1/nodes``, ``/v1/ports``, ``/v1/drivers``, ``/v1/lookup`` and ``/v1/heartbeat``,
none of which is a StarlingX operation name (:data:`OPERATIONS`), so ``/v1/query``
and Ironic's ``/v1/nodes`` never meet; only the bare ``GET /v1`` differs (StarlingX's
controller answers it with the query, Ironic with its version document), and it stays
Ironic's. And on the patching listener (``[patching] listen_port``, api/server.py),
which serves this API alone, as StarlingX's local API on 127.0.0.1:5487. Reading
operations take GET and POST (sw-patch POSTs show and is_applied, the orchestration
GETs query); changing ones only POST, so no web page can make a browser apply a patch.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import flask

from conductor.errors import is_disk_full

bp = flask.Blueprint("patching", __name__)
#: The operations of StarlingX 6.0.0's patch API controller (cgcs_patch/api/controllers/
#: root.py), which its sw-patch client and the VIM call. None is one of Ironic's /v1
#: resources (nodes, ports, portgroups, chassis, drivers, lookup, heartbeat, conductors,
#: allocations, deploy_templates, volume, events, shards, runbooks).
OPERATIONS = frozenset({
    "query", "show", "apply", "remove", "delete", "upload", "upload_dir", "what_requires",
    "query_dependencies", "commit", "commit_dry_run", "query_hosts", "host_install",
    "host_install_async", "drop_host", "is_applied", "is_available",
    "report_app_dependencies", "query_app_dependencies", "init_release", "del_release"})
#: Where the operations answer (StarlingX's two, then metalcast's first).
PREFIXES = ("/patch", "/v1", "/patching/v1")
ROOT_TEXT = "Titanium Cloud Patching API, Available versions: /v1"
#: Largest upload accepted (a patch holds RPMs; the JSON API keeps its own cap). This
#: route alone gets it (api/limits.py), before its body is read, and for credentials
#: not verified yet only one upload at a time per client (api/http_server.py).
MAX_UPLOAD = 1 << 30
READ = ["GET", "POST"]
#: The running release, on query answers: metalcast's sw-patch defaults ``commit --all``
#: to it, as StarlingX's client does to the release of the controller it runs on.
RELEASE_HEADER = "X-Metalcast-Running-Release"


def is_patch_path(path: str) -> bool:
    """True for a path of this API (StarlingX's bodies, no Ironic microversions)."""
    parts = path.split("/")
    if parts[1] in ("patch", "patching"):
        return True
    return parts[1] == "v1" and len(parts) > 2 and parts[2] in OPERATIONS


def register(app: flask.Flask, listener: bool = False) -> None:
    """Serve the API on ``app``: the main API (``listener`` False) or the patching
    listener, which also answers ``GET /`` as StarlingX's local API does."""
    for prefix in PREFIXES:
        app.register_blueprint(bp, url_prefix=prefix,
                               name="patching" + prefix.replace("/", "_"))
    # StarlingX's index of /patch/ is the query; the one of /v1 too, but on the main
    # port /v1 is Ironic's, and on the listener an open /v1 would be public (api/auth).
    app.add_url_rule("/patch/", "patch_index", query, methods=READ)
    app.add_url_rule("/" if listener else "/patching/", "patch_root", root)


def root():
    return ROOT_TEXT


def _ctl():
    controller = getattr(flask.current_app.extensions["metalcast.service"], "patching", None)
    if controller is None:
        flask.abort(404)
    return controller


def _ids(ids: str) -> list[str]:
    return [part for part in ids.split("/") if part]


def _flag(name: str) -> bool:
    return flask.request.args.get(name, "").lower() in ("yes", "true", "1")


def _ids_route(rule: str, methods: list[str]):
    """``rule/<ids...>``, and ``rule`` alone, which answers that IDs are missing
    (StarlingX's ``/apply/`` applies nothing and says nothing: a silent success)."""
    def decorate(view):
        def checked(ids: str = ""):
            patch_ids = _ids(ids)
            if not patch_ids:
                return {"info": "", "warning": "", "error": "Patch ID must be specified\n"}
            return view(patch_ids)
        bp.add_url_rule(rule, view.__name__, checked, methods=methods)
        bp.add_url_rule(rule + "/<path:ids>", view.__name__, checked, methods=methods)
        return view
    return decorate


@bp.route("/query", methods=READ)
def query():
    controller = _ctl()
    response = flask.jsonify(controller.query(flask.request.args.get("show", "all"),
                                              flask.request.args.get("release") or None))
    response.headers[RELEASE_HEADER] = controller.running_release
    return response


@_ids_route("/show", READ)
def show(ids):
    return _ctl().show(ids)


@bp.post("/upload")
def upload():
    """Multipart field ``file``, streamed to a scratch file, imported, deleted."""
    flask.request.max_content_length = MAX_UPLOAD
    controller = _ctl()
    upload_file = flask.request.files.get("file")
    if upload_file is None or not upload_file.filename:
        return {"info": "", "warning": "", "error": "Error: No file uploaded"}
    name = os.path.basename(upload_file.filename.replace("\\", "/"))
    if not _file_name_ok(name):   # it names the scratch file: one path component
        shown = name if len(name) <= 64 else name[:64] + "..."
        return {"info": "", "warning": "",
                "error": f"Invalid patch file name {shown!r}: a plain file name (at "
                         "most 255 bytes, no control characters) is required\n"}, 400
    try:
        with tempfile.TemporaryDirectory(dir=controller.scratch_dir()) as work:
            path = Path(work) / name
            upload_file.save(path)
            return controller.upload([path]).as_dict()
    except OSError as exc:      # the scratch copy found the disk full
        if not is_disk_full(exc):
            raise
        return {"info": "", "warning": "", "error": f"{controller.no_space()}\n"}


def _file_name_ok(name: str) -> bool:
    return name not in ("", ".", "..") and len(name.encode(errors="replace")) <= 255 \
        and not any(ord(char) < 0x20 or char == "\x7f" for char in name)


@bp.post("/upload_dir")
def upload_dir():
    dirs = [value for key, value in sorted(flask.request.args.items())
            if key.startswith("dir")]
    for directory in dirs:  # sw-patch sends absolute paths; never the server's cwd
        if not os.path.isabs(directory) or "\x00" in directory:
            return {"info": "", "warning": "",
                    "error": f"Invalid directory {directory!r}: an absolute path is "
                             "required\n"}
    paths = sorted(p for d in dirs for p in Path(d).glob("*.patch"))
    if not paths:  # StarlingX's text, without the newline its messages end with
        return {"info": "", "warning": "", "error": "No patches found"}
    return _ctl().upload(paths).as_dict()


@_ids_route("/apply", ["POST"])
def apply(ids):
    return _ctl().apply(ids, skip_semantic=_flag("skip-semantic")).as_dict()


@_ids_route("/remove", ["POST"])
def remove(ids):
    return _ctl().remove(ids, skip_semantic=_flag("skip-semantic"),
                         skip_app_check=_flag("skipappcheck"),
                         remove_unremovable=_flag("removeunremovable")).as_dict()


@_ids_route("/delete", ["POST"])
def delete(ids):
    return _ctl().delete(ids).as_dict()


@_ids_route("/what_requires", READ)
def what_requires(ids):
    return _ctl().what_requires(ids).as_dict()


@_ids_route("/query_dependencies", READ)
def query_dependencies(ids):
    return _ctl().query_dependencies(ids, recursive=_flag("recursive"))


@_ids_route("/commit", ["POST"])
def commit(ids):
    return _ctl().commit(ids).as_dict()


@_ids_route("/commit_dry_run", ["POST"])
def commit_dry_run(ids):
    return _ctl().commit(ids, dry_run=True).as_dict()


@bp.route("/query_hosts", methods=READ)
def query_hosts():
    return {"data": _ctl().query_hosts()}


@bp.route("/host_install", methods=["POST"])
@bp.route("/host_install/<path:host>", methods=["POST"])
def host_install(host=""):
    return {"info": "", "warning": "", "error": "Deprecated: Use host_install_async"}


@bp.post("/host_install_async")
@bp.post("/host_install_async/<host>")
@bp.post("/host_install_async/<host>/<force>")
def host_install_async(host="", force=None):
    if not host:
        return {"info": "", "warning": "", "error": "Host must be specified for install"}
    return _ctl().host_install_async(host, force == "force").as_dict()


@bp.post("/drop_host")
@bp.post("/drop_host/<host>")
def drop_host(host=""):
    if not host:
        return {"info": "", "warning": "", "error": "Host must be specified"}
    return _ctl().drop_host(host).as_dict()


@_ids_route("/is_applied", READ)
def is_applied(ids):
    return flask.jsonify(_ctl().is_in_state(ids, "Applied"))


@_ids_route("/is_available", READ)
def is_available(ids):
    return flask.jsonify(_ctl().is_in_state(ids, "Available"))


@bp.post("/report_app_dependencies")
@bp.post("/report_app_dependencies/<path:ids>")
def report_app_dependencies(ids=""):
    app = flask.request.args.get("app")
    if not app:
        return {"status": 500, "error": "Application name must be specified"}
    return flask.jsonify(_ctl().report_app_dependencies(app, _ids(ids)))


@bp.route("/query_app_dependencies", methods=READ)
def query_app_dependencies():
    return _ctl().query_app_dependencies()


@bp.post("/init_release")
@bp.post("/init_release/<release>")
def init_release(release=""):
    if not release:
        return {"info": "", "warning": "", "error": "Release must be specified"}
    return _ctl().init_release(release).as_dict()


@bp.post("/del_release")
@bp.post("/del_release/<release>")
def del_release(release=""):
    if not release:
        return {"info": "", "warning": "", "error": "Release must be specified"}
    return _ctl().del_release(release).as_dict()
