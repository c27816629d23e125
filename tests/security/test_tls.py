"""TLS on HTTP and gRPC with certificates made at test time (trustme): the real tritonclient HTTPS and
gRPC-TLS clients work, plaintext to a TLS port fails, TLS 1.2 is the floor, HSTS is sent."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import trustme

from tests.security.conftest import INFER, Keys, bearer
from tests.serving.conftest import Server, free_port, start_server, stop_server


@dataclass
class TlsServer:
    server: Server
    port: int
    grpc_port: int
    ca_file: Path


@pytest.fixture(scope="module")
def tls(keyed_home: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    certs = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = certs / "server.pem", certs / "server.key", certs / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    grpc_port = free_port()
    server = start_server(
        keyed_home,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--grpc-port",
        str(grpc_port),
        insecure_dev=False,
        scheme="https",
        verify=ssl.create_default_context(cafile=str(ca_file)),
    )
    yield TlsServer(server, server.port, grpc_port, ca_file)
    stop_server(server)


def test_https_with_hsts_and_plaintext_refused(tls: TlsServer, keys: Keys) -> None:
    with httpx.Client(
        base_url=f"https://127.0.0.1:{tls.port}",
        verify=ssl.create_default_context(cafile=str(tls.ca_file)),
        timeout=10,
    ) as client:
        response = client.post("/v2/models/credit/infer", json=INFER, headers=bearer(keys.consumer))
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert client.get("/v2/models/credit").status_code == 401  # keys still required
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls.port}/v2/health/ready", timeout=5)
    with pytest.raises(httpx.ConnectError):  # an unknown CA is refused by a verifying client
        httpx.get(f"https://127.0.0.1:{tls.port}/v2/health/ready", timeout=5)


def test_tls_1_2_is_the_floor(tls: TlsServer) -> None:
    def handshake(maximum: ssl.TLSVersion) -> str | None:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        with (
            socket.create_connection(("127.0.0.1", tls.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
        ):
            return wrapped.version()

    assert handshake(ssl.TLSVersion.MAXIMUM_SUPPORTED) in ("TLSv1.2", "TLSv1.3")
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # A client that offers nothing newer than TLS 1.0/1.1 gets no session (the client library
        # warns that these versions are deprecated: that is the point).
        with warnings.catch_warnings(), pytest.raises((ssl.SSLError, OSError)):
            warnings.simplefilter("ignore", DeprecationWarning)
            handshake(old)


# geventhttpclient (under tritonclient.http) still calls the deprecated ssl.match_hostname.
@pytest.mark.filterwarnings("ignore:ssl.match_hostname:DeprecationWarning")
def test_tritonclient_https(tls: TlsServer, keys: Keys) -> None:
    import gevent.ssl
    import tritonclient.http as triton

    client = triton.InferenceServerClient(
        f"127.0.0.1:{tls.port}",
        ssl=True,
        # geventhttpclient calls the factory with cafile=ssl_options["ca_certs"] (certifi's by default)
        ssl_options={"ca_certs": str(tls.ca_file)},
        ssl_context_factory=gevent.ssl.create_default_context,
    )
    try:
        assert client.is_server_ready()
        tensor = triton.InferInput("input", [1, 6], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 6)), binary_data=True)
        result = client.infer("credit", [tensor], headers=bearer(keys.consumer))
        assert result.as_numpy("probabilities").shape == (1, 3)
    finally:
        client.close()


def test_tritonclient_grpc_tls_and_plaintext_refused(tls: TlsServer, keys: Keys) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    metadata = {"authorization": f"Bearer {keys.consumer}"}
    with triton.InferenceServerClient(
        f"127.0.0.1:{tls.grpc_port}", ssl=True, root_certificates=str(tls.ca_file)
    ) as client:
        assert client.is_server_live()
        tensor = triton.InferInput("input", [1, 6], "FP64")
        tensor.set_data_from_numpy(np.zeros((1, 6)))
        assert client.infer("credit", [tensor], headers=metadata).as_numpy("label").shape == (1,)
    with (
        triton.InferenceServerClient(f"127.0.0.1:{tls.grpc_port}") as plaintext,
        pytest.raises(InferenceServerException),
    ):
        plaintext.is_server_live(client_timeout=5)


def test_tls_from_settings_alone(keyed_home: Path, keys: Keys, tls: TlsServer) -> None:
    """MODELPORT_TLS_CERT/KEY without the flags: HTTPS, not plain HTTP with an HSTS header."""
    certs = tls.ca_file.parent
    env = {"MODELPORT_TLS_CERT": str(certs / "server.pem"), "MODELPORT_TLS_KEY": str(certs / "server.key")}
    context = ssl.create_default_context(cafile=str(tls.ca_file))
    server = start_server(keyed_home, insecure_dev=False, env=env, scheme="https", verify=context)
    try:
        with httpx.Client(base_url=server.url, verify=context) as client:
            response = client.get("/v2/health/ready")
            assert response.status_code == 200 and "strict-transport-security" in response.headers
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.port}/v2/health/ready", timeout=5)
    finally:
        stop_server(server)
