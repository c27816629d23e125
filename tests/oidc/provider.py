"""A real OpenID provider on loopback for the tests: ``provider.mjs`` (panva/oidc-provider, pinned in
``package-lock.json``) run with the machine's Node.js.

:func:`start_provider` writes a signing key set, starts the provider on a free port and waits for its
"ready" line; :func:`stop_provider` ends it by its PID. The key set is a file the test owns, so a test
can restart the provider with rotated keys (:meth:`Provider.restart`) or start a second issuer that
signs with the same keys. ``npm ci`` runs first when ``node_modules`` is missing (``make test`` does it
too: the Makefile's ``oidc`` target).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

HERE = Path(__file__).resolve().parent
AUDIENCE = "urn:modelport"
OTHER_AUDIENCE = "urn:other-api"
# client id → secret, as in provider.mjs
SECRETS = {
    "pipeline": "pipeline-secret",  # groups: ml-publishers
    "reader": "reader-secret",  # groups: risk
    "stranger": "stranger-secret",  # groups: visitors (mapped to no role)
    "brief": "brief-secret",  # groups: risk; tokens live one second
}


def install() -> None:
    """``npm ci`` when the pinned provider is not installed yet (offline-safe once it is)."""
    if (HERE / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "the OpenID provider tests need Node.js 20 and npm"
    subprocess.run([npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"], check=True, timeout=300)


def new_keys(kind: str = "RS256") -> dict[str, Any]:
    """A private JWK (RSA 2048 or P-256) with a fresh ``kid``."""
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    jwk: dict[str, Any]
    if kind == "ES256":
        jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    else:
        jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    return jwk | {"kid": uuid.uuid4().hex[:16], "alg": kind, "use": "sig"}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Provider:
    """A running provider: its issuer URL, the private keys it signs with, its process."""

    port: int
    keys_file: Path
    keys: list[dict[str, Any]]
    redirect_uris: tuple[str, ...] = ()
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, client: str = "pipeline", resource: str = AUDIENCE, scope: str | None = None) -> str:
        """A client-credentials access token from the provider (a JWT for a known resource)."""
        form = {
            "grant_type": "client_credentials",
            "client_id": client,
            "client_secret": SECRETS[client],
            "resource": resource,
            "scope": scope or ("models" if resource == AUDIENCE else "other"),
        }
        answer = httpx.post(f"{self.issuer}/token", data=form, timeout=10)
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def restart(self, keys: list[dict[str, Any]]) -> None:
        """Stop, then start again on the same port signing with ``keys`` (the first is used)."""
        stop_provider(self)
        self.keys = keys
        _launch(self)


def start_provider(
    directory: Path, keys: list[dict[str, Any]] | None = None, redirect_uris: tuple[str, ...] = ()
) -> Provider:
    install()
    directory.mkdir(parents=True, exist_ok=True)
    provider = Provider(
        free_port(), directory / f"keys-{uuid.uuid4().hex[:8]}.json", keys or [new_keys()], redirect_uris
    )
    _launch(provider)
    return provider


def _launch(provider: Provider, timeout: float = 15.0) -> None:
    provider.keys_file.write_text(json.dumps({"keys": provider.keys}))
    provider.keys_file.chmod(0o600)
    node = shutil.which("node")
    assert node, "the OpenID provider tests need Node.js 20"
    command = [
        node,
        str(HERE / "provider.mjs"),
        "--port",
        str(provider.port),
        "--keys",
        str(provider.keys_file),
    ]
    for uri in provider.redirect_uris:
        command += ["--redirect-uri", uri]
    env = {**os.environ, "NODE_ENV": "test"}
    process = subprocess.Popen(
        command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    provider.process = process
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or process.poll() is not None:
                stop_provider(provider)
                raise AssertionError(f"the OpenID provider did not start on port {provider.port}")
            if selector.select(left) and process.stdout.readline().startswith("ready "):
                return


def stop_provider(provider: Provider) -> None:
    process, provider.process = provider.process, None
    if process is None:
        return
    if process.poll() is None:
        process.terminate()  # by its PID: this process only
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()
