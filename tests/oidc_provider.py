"""A real OpenID provider for the sign-in tests: panva's oidc-provider (tests/oidc/) on Debian's Node.

``OpenIdProvider(gateway_url, directory).start()`` runs ``node tests/oidc/provider.mjs`` on a free
loopback port with one client whose redirect URI is the gateway's callback, accounts from a JSON
file the test may rewrite at any time (``people``), RSA keys made here (``rotate_keys`` restarts it
signing with new ones), and two faults a provider can really have: a token endpoint whose clock is
behind (``clock_behind``: its ID tokens have expired on arrival) and a published key set that is
not the one it signs with (``forged=True``). ``make test`` installs the npm package first
(tests/oidc/package-lock.json pins it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support import ROOT, TLS, _stop, free_port, wait_until

PROVIDER_DIR = ROOT / "tests" / "oidc"
NODE = shutil.which("node")
if NODE is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
    pytest.fail(
        "The sign-in tests need Node and the OpenID provider package: sudo apt-get install -y nodejs npm; "
        "then make oidc-provider (make test does it)",
        pytrace=False,
    )


def rsa_jwks() -> dict[str, Any]:
    """A new private RSA signing key as a JWK set, with a key id of its own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    return {"keys": [{**jwk, "kid": "k-" + secrets.token_hex(4), "use": "sig", "alg": "RS256"}]}


@dataclass
class OpenIdProvider:
    gateway_url: str
    directory: Path
    forged: bool = False
    port: int = field(default_factory=free_port)
    client_id: str = "gateway-console"
    client_secret: str = field(default_factory=lambda: "test-client-secret-" + secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gateway_env(self, **extra: str) -> dict[str, str]:
        """The gateway's settings for this provider."""
        return {
            "GATEWAY_OIDC_ISSUER": self.issuer,
            "GATEWAY_OIDC_CLIENT_ID": self.client_id,
            "GATEWAY_OIDC_CLIENT_SECRET": self.client_secret,
            **extra,
        }

    def start(self) -> OpenIdProvider:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / "signing.json").exists():
            self._write("signing.json", rsa_jwks())
            self._write("published.json", rsa_jwks() if self.forged else {"keys": []})
        if not (self.directory / "accounts.json").exists():
            self.people({})
        if self.forged:  # the same key id as the signing key, another key: the signature cannot verify
            published = json.loads((self.directory / "published.json").read_text())
            published["keys"][0]["kid"] = self.key_id()
            self._write("published.json", published)
        env = {
            **os.environ,
            "PORT": str(self.port),
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "REDIRECT_URI": f"{self.gateway_url}/console/oidc/callback",
            "ACCOUNTS_FILE": str(self.directory / "accounts.json"),
            "SIGNING_JWKS_FILE": str(self.directory / "signing.json"),
            "CLOCK_FILE": str(self.directory / "clock"),
            **({"PUBLISHED_JWKS_FILE": str(self.directory / "published.json")} if self.forged else {}),
        }
        with open(self.directory / "provider.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(NODE), str(PROVIDER_DIR / "provider.mjs")],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=PROVIDER_DIR,
            )
        discovery = f"{self.issuer}/.well-known/openid-configuration"
        wait_until(lambda: httpx.get(discovery, verify=TLS, timeout=2).status_code == 200, what="provider")
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def _write(self, name: str, value: Any) -> None:
        (self.directory / name).write_text(json.dumps(value))

    def people(self, accounts: dict[str, dict[str, Any]]) -> None:
        """Who may sign in (login -> name, email, groups); read by the provider at every sign-in."""
        self._write("accounts.json", accounts)

    def clock_behind(self, seconds: int) -> None:
        """From now on, the token endpoint issues ID tokens as if it were ``seconds`` ago (0: on time)."""
        (self.directory / "clock").write_text(str(seconds))

    def key_id(self) -> str:
        return str(json.loads((self.directory / "signing.json").read_text())["keys"][0]["kid"])

    def rotate_keys(self) -> None:
        """Restart on the same port signing with a new key (and a new key id) only."""
        self.stop()
        self._write("signing.json", rsa_jwks())
        self.start()

    def log(self) -> str:
        return (self.directory / "provider.log").read_text(errors="replace")
