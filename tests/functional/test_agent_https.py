"""The agent's command API server (ramdisk_agent/server.py, standard library only)
against real curl: pinned self-signed certificate, keep-alive, bad input, no token
in the request log, and a broken client that does not stop it; the hand-encoded
certificate (ramdisk_agent/selfsigned.py) checked by openssl."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from ramdisk_agent.commands import CommandRunner, Extension, sync_command
from ramdisk_agent.server import MAX_BODY, create_app, make_certificate, serve_https

TOKEN = "t0ken-for-the-https-test"
#: Tool -> Debian package.
TOOLS = {"curl": "curl", "openssl": "openssl"}


def require(tool: str) -> str:
    """The tool's path; a clear failure (never a skip) when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: install the Debian package {TOOLS[tool]} "
                    "(run scripts/install-system-packages as root)")
    return path


class Echo(Extension):
    name = "echo"

    @sync_command
    def say(self, text):
        return {"text": text}


@pytest.fixture()
def server(tmp_path):
    cert, key, pem = make_certificate("127.0.0.1", str(tmp_path))
    httpd = serve_https(create_app(CommandRunner([Echo(None)]), lambda: TOKEN), "127.0.0.1", 0,
                        cert, key)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_port}", cert
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def curl(cacert: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("curl"), "-sS", "--cacert", cacert, "--noproxy", "*",
                           "--max-time", "20", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_curl_pins_the_certificate_and_reuses_one_connection(server, caplog):
    url, cert = server
    caplog.set_level(logging.INFO, logger="ramdisk_agent.server")
    done = curl(cert, "-v", "-H", "Content-Type: application/json",
                "--data", json.dumps({"name": "echo.say", "params": {"text": "hi"}}),
                f"{url}/v1/commands/?agent_token={TOKEN}&wait=true",
                "--next", "--cacert", cert, f"{url}/v1/commands/?agent_token={TOKEN}",
                "-w", "\n%{http_code}")
    assert done.returncode == 0, done.stderr
    first, listing = done.stdout.split("}{", 1)
    assert json.loads(first + "}")["command_result"] == {"text": "hi"}
    body, _, code = ("{" + listing).rpartition("\n")
    assert code == "200" and len(json.loads(body)["commands"]) == 1
    assert "Re-using existing connection" in done.stderr or \
        "Reusing existing connection" in done.stderr, done.stderr
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "agent_token=***" in logged and TOKEN not in logged


@pytest.mark.parametrize("args, status, fault", [
    (["--data", "junk", "{url}/v1/commands/?agent_token=" + TOKEN], 400, "Body must be"),
    (["{url}/v1/commands/?agent_token=wrong"], 401, "Token invalid."),
    (["{url}/v2/"], 404, "not found"),
    (["-X", "DELETE", "{url}/v1/commands/?agent_token=" + TOKEN], 405, "not allowed"),
    (["-X", "POST", "{url}/v1/status"], 405, "not allowed"),
])
def test_bad_requests(server, args, status, fault):
    url, cert = server
    done = curl(cert, "-w", "\n%{http_code}", *[a.format(url=url) for a in args])
    body, _, code = done.stdout.rpartition("\n")
    assert int(code) == status, done.stdout
    document = json.loads(body)
    assert document["faultcode"] == "Client" and fault in document["faultstring"]


def test_oversized_body_and_broken_clients_leave_it_serving(server):
    url, cert = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")        # plain HTTP to TLS
        try:
            assert not raw.recv(100).startswith(b"HTTP/")
        except ConnectionResetError:
            pass                                    # the server dropped it: fine too
    context = ssl.create_default_context(cafile=cert)
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                             server_hostname="127.0.0.1") as tls:
        tls.sendall(f"POST /v1/commands/?agent_token={TOKEN} HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        assert tls.recv(100).startswith(b"HTTP/1.1 413 ")
    done = curl(cert, f"{url}/v1/status")
    assert done.returncode == 0 and "started_at" in json.loads(done.stdout)


@pytest.mark.parametrize("host, san", [("127.0.0.1", "IP Address:127.0.0.1"),
                                       ("::1", "IP Address:0:0:0:0:0:0:0:1"),
                                       ("agent-7.example", "DNS:agent-7.example")])
def test_openssl_accepts_the_certificate(tmp_path, host, san):
    openssl = require("openssl")
    cert, key, pem = make_certificate(host, str(tmp_path))
    verified = subprocess.run([openssl, "verify", "-CAfile", cert, "-verify_ip" if ":" in host
                               or host[0].isdigit() else "-verify_hostname", host, cert],
                              capture_output=True, text=True, timeout=30, check=False)
    assert verified.returncode == 0 and verified.stdout.strip().endswith("OK"), verified
    text = subprocess.run([openssl, "x509", "-in", cert, "-noout", "-text"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    assert san in text and "CA:TRUE" in text and "ecdsa-with-SHA256" in text
    assert "Digital Signature, Certificate Sign" in text
    matches = subprocess.run([openssl, "pkey", "-in", key, "-pubout"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    public = subprocess.run([openssl, "x509", "-in", cert, "-noout", "-pubkey"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert matches == public                       # the key belongs to the certificate
    assert oct(os.stat(key).st_mode & 0o777) == "0o600" and pem == open(cert).read()
