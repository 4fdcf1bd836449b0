"""The agent's command API (IPA's paths and shapes) over HTTPS, with Flask.

Paths: ``GET /``, ``GET /v1/``, ``GET /v1/status``, ``GET|POST /v1/commands/``,
``GET /v1/commands/<id>[?wait=true]``, and the same without ``/v1``. Command
endpoints need ``?agent_token=<token from lookup>`` (401 "Token invalid."
otherwise). Errors are ``{faultcode, faultstring}``. The TLS certificate is
self-signed, generated at start with ``cryptography`` and sent to the API as
``agent_verify_ca`` with each heartbeat, so the conductor can pin it.
"""
from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
import os
import ssl
import time
from typing import Callable

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from ramdisk_agent import __version__
from ramdisk_agent.commands import CommandRunner
from ramdisk_agent.errors import AgentError, InvalidContent, TokenInvalid

LOG = logging.getLogger(__name__)
WAIT_LIMIT = 3600.0


def _runner() -> CommandRunner:
    return current_app.config["AGENT_RUNNER"]


def _check_token() -> None:
    expected = current_app.config["AGENT_TOKEN"]()
    given = request.args.get("agent_token", "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise TokenInvalid()


def _wanted(name: str) -> bool:
    return request.args.get(name, "false").lower() in ("true", "1", "yes")


def make_blueprint(name: str, prefix: str) -> Blueprint:
    bp = Blueprint(name, __name__, url_prefix=prefix)

    if prefix:      # "/" itself is the root document below
        @bp.get("/")
        def version_root():
            return jsonify({"id": "v1", "links": [{"href": request.host_url + "v1/",
                                                   "rel": "self"}]})

    @bp.get("/status")
    def status():
        return jsonify({"started_at": current_app.config["AGENT_STARTED"],
                        "version": __version__})

    @bp.get("/commands/", strict_slashes=False)
    def list_commands():
        _check_token()
        return jsonify({"commands": [r.serialize() for r in _runner().list()]})

    @bp.post("/commands/", strict_slashes=False)
    def run_command():
        _check_token()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "name" not in body:
            raise InvalidContent('Body must be a JSON object {"name": ..., "params": {...}}')
        result = _runner().execute(body["name"], body.get("params") or {})
        if _wanted("wait"):
            result.done.wait(WAIT_LIMIT)
        return jsonify(result.serialize())

    @bp.get("/commands/<command_id>")
    def get_command(command_id):
        _check_token()
        result = _runner().get(command_id)
        if _wanted("wait"):
            result.done.wait(WAIT_LIMIT)
        return jsonify(result.serialize())

    return bp


def create_app(runner: CommandRunner, token: Callable[[], str | None]) -> Flask:
    """The command API; ``token()`` returns the token from lookup (None before)."""
    app = Flask("metalcast_agent")
    app.config.update(AGENT_RUNNER=runner, AGENT_TOKEN=token, AGENT_STARTED=time.time())
    app.register_blueprint(make_blueprint("v1", "/v1"))
    app.register_blueprint(make_blueprint("bare", ""))

    @app.get("/")
    def root():
        v1 = {"id": "v1", "links": [{"href": request.host_url + "v1/", "rel": "self"}]}
        return jsonify({"name": "metalcast-agent", "version": __version__,
                        "description": "metalcast ramdisk agent (ironic-python-agent API)",
                        "versions": [v1], "default_version": v1})

    @app.errorhandler(AgentError)
    def agent_error(exc: AgentError):
        return jsonify(exc.fault()), exc.status_code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        fault = "Client" if exc.code < 500 else "Server"
        return jsonify({"faultcode": fault, "faultstring": exc.description}), exc.code

    return app


def make_certificate(host: str, directory: str) -> tuple[str, str, str]:
    """Self-signed EC certificate for ``host``; (cert path, key path, PEM text)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_path, key_path = os.path.join(directory, "agent.crt"), os.path.join(directory, "agent.key")
    with open(cert_path, "w", encoding="ascii") as f:
        f.write(pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path, pem


def serve_https(app: Flask, host: str, port: int, cert_path: str, key_path: str):
    """A threaded HTTPS server (not started); ``.server_port`` is the bound port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return make_server(host, port, app, threaded=True, ssl_context=context)
