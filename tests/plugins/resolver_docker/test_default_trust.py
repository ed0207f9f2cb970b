"""The default TLS context loads its CAs only on the first TLS connection, and then verifies as usual."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from hoist_resolver_docker.resolver import DefaultTrustContext


def test_trust_is_loaded_on_first_tls_use_and_an_unknown_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            server.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ctx = DefaultTrustContext()
    assert ctx.cert_store_stats()["x509_ca"] == 0  # nothing loaded for plain-HTTP use
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with socket.create_connection(listener.getsockname()) as sock:
        with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate"):
            ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    assert ctx.cert_store_stats()["x509_ca"] > 0
    t.join(5)
    listener.close()
