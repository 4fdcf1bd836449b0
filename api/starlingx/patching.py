"""``/patching/v1/...``: StarlingX's patching REST API (specs/starlingx-patching.md §3).

Thin views over the conductor's PatchController (``service.patching``). Bodies are
StarlingX's: ``{"info", "warning", "error"}`` for operations, ``{"pd": ...}`` for
query, bare ``true``/``false`` for is_applied/is_available, HTTP 200 even for a
logical error (sw-patch decides by the ``error`` text). Authenticated like every
other non-public path (api/auth.py).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import flask

bp = flask.Blueprint("patching", __name__, url_prefix="/patching")
#: Largest upload accepted (a patch holds RPMs; the JSON API keeps its own cap). The
#: WSGI server is given the same limit (api/server.py): waitress buffers a
#: whole body to disk before the app sees it, so its cap is the one that bites first.
MAX_UPLOAD = 1 << 30


def _ctl():
    controller = getattr(flask.current_app.extensions["metalcast.service"], "patching", None)
    if controller is None:
        flask.abort(404)
    return controller


def _ids(ids: str) -> list[str]:
    return [part for part in ids.split("/") if part]


def _flag(name: str) -> bool:
    return flask.request.args.get(name, "").lower() in ("yes", "true", "1")


@bp.get("/")
def root():
    return "Titanium Cloud Patching API, Available versions: /v1"


@bp.get("/v1/query")
def query():
    return _ctl().query(flask.request.args.get("show", "all"),
                        flask.request.args.get("release") or None)


@bp.route("/v1/show/<path:ids>", methods=["GET", "POST"])
def show(ids):
    return _ctl().show(_ids(ids))


@bp.post("/v1/upload")
def upload():
    """Multipart field ``file``, streamed to a scratch file, imported, deleted."""
    flask.request.max_content_length = MAX_UPLOAD
    controller = _ctl()
    upload_file = flask.request.files.get("file")
    if upload_file is None or not upload_file.filename:
        return {"info": "", "warning": "", "error": "No file was uploaded\n"}
    name = os.path.basename(upload_file.filename.replace("\\", "/"))
    with tempfile.TemporaryDirectory(dir=controller.scratch_dir()) as work:
        path = Path(work) / name
        upload_file.save(path)
        return controller.upload([path]).as_dict()


@bp.post("/v1/upload_dir")
def upload_dir():
    dirs = [value for key, value in sorted(flask.request.args.items())
            if key.startswith("dir")]
    for directory in dirs:  # sw-patch sends absolute paths; never the server's cwd
        if not os.path.isabs(directory) or "\x00" in directory:
            return {"info": "", "warning": "",
                    "error": f"Invalid directory {directory!r}: an absolute path is "
                             "required\n"}
    paths = sorted(p for d in dirs for p in Path(d).glob("*.patch"))
    if not paths:
        return {"info": "", "warning": "", "error": "No patches found\n"}
    return _ctl().upload(paths).as_dict()


@bp.post("/v1/apply/<path:ids>")
def apply(ids):
    return _ctl().apply(_ids(ids), skip_semantic=_flag("skip-semantic")).as_dict()


@bp.post("/v1/remove/<path:ids>")
def remove(ids):
    return _ctl().remove(_ids(ids), skip_semantic=_flag("skip-semantic"),
                         skip_app_check=_flag("skipappcheck"),
                         remove_unremovable=_flag("removeunremovable")).as_dict()


@bp.post("/v1/delete/<path:ids>")
def delete(ids):
    return _ctl().delete(_ids(ids)).as_dict()


@bp.get("/v1/what_requires/<path:ids>")
def what_requires(ids):
    return _ctl().what_requires(_ids(ids)).as_dict()


@bp.get("/v1/query_dependencies/<path:ids>")
def query_dependencies(ids):
    return _ctl().query_dependencies(_ids(ids), recursive=_flag("recursive"))


@bp.post("/v1/commit/<path:ids>")
def commit(ids):
    return _ctl().commit(_ids(ids)).as_dict()


@bp.post("/v1/commit_dry_run/<path:ids>")
def commit_dry_run(ids):
    return _ctl().commit(_ids(ids), dry_run=True).as_dict()


@bp.get("/v1/query_hosts")
def query_hosts():
    return {"data": _ctl().query_hosts()}


@bp.route("/v1/host_install/<host>", methods=["GET", "POST"])
def host_install(host):
    return {"info": "", "warning": "", "error": "Deprecated: Use host_install_async\n"}


@bp.post("/v1/host_install_async/<host>")
@bp.post("/v1/host_install_async/<host>/<force>")
def host_install_async(host, force=None):
    return _ctl().host_install_async(host, force == "force").as_dict()


@bp.post("/v1/drop_host/<host>")
def drop_host(host):
    return _ctl().drop_host(host).as_dict()


@bp.post("/v1/is_applied/<path:ids>")
def is_applied(ids):
    return flask.jsonify(_ctl().is_in_state(_ids(ids), "Applied"))


@bp.post("/v1/is_available/<path:ids>")
def is_available(ids):
    return flask.jsonify(_ctl().is_in_state(_ids(ids), "Available"))


@bp.post("/v1/report_app_dependencies/")
@bp.post("/v1/report_app_dependencies/<path:ids>")
def report_app_dependencies(ids=""):
    app = flask.request.args.get("app")
    if not app:
        return {"status": 500, "error": "Application name must be specified"}
    return flask.jsonify(_ctl().report_app_dependencies(app, _ids(ids)))


@bp.route("/v1/query_app_dependencies", methods=["GET", "POST"])
def query_app_dependencies():
    return _ctl().query_app_dependencies()


@bp.post("/v1/init_release/<release>")
def init_release(release):
    return _ctl().init_release(release).as_dict()


@bp.post("/v1/del_release/<release>")
def del_release(release):
    return _ctl().del_release(release).as_dict()
