"""OpenID Connect for the console's single sign-on: the provider's side of the authorization code flow.

What the gateway asks of the provider, on httpx: its metadata (discovery at
``{issuer}/.well-known/openid-configuration``), the authorization URL (``response_type=code``,
PKCE S256, ``state`` and ``nonce``), the code exchanged for tokens at the token endpoint
(``client_secret_basic``), and the ID token verified here: an RS256 signature by a key of the
provider's JWKS (PyJWT does the RSA arithmetic), ``iss`` exactly the configured issuer, ``aud``
the console's client id (and ``azp`` when there are several audiences), ``exp`` and ``iat`` within
:data:`LEEWAY_S` of this clock, and the ``nonce`` of the sign-in that asked for it.

Everything the provider answers is checked before use: documents are read up to
:data:`MAX_DOCUMENT_BYTES`, must be JSON objects, and every endpoint must pass the issuer's own
rule (https, or http on loopback). Metadata and keys are kept per process for
:data:`CACHE_S`; an ID token signed with a key id not in the cached set makes one fresh read of
the JWKS first (the provider rotated its keys), so a new key is accepted at once and a key the
provider withdrew stops being accepted within the hour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import orjson

from gateway.core.settings import issuer_allowed

LEEWAY_S = 60  # clock difference tolerated between the provider and the gateway
CACHE_S = 3600
MAX_DOCUMENT_BYTES = 1024 * 1024
HTTP_TIMEOUT_S = 10.0
SCOPES = "openid email profile"


class OidcError(Exception):
    """A sign-in cannot go on; the message says why in words a person can act on (no secrets)."""


@dataclass(frozen=True)
class Flow:
    """What the start of a sign-in keeps for its callback: never sent anywhere but to the provider."""

    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> Flow:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Metadata:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def _endpoint(document: dict[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not issuer_allowed(value):
        raise OidcError(f"The identity provider's metadata has no usable {name}.")
    return value


class OidcClient:
    """One provider and the console's client there; metadata and keys cached in this process."""

    def __init__(self, issuer: str, client_id: str, client_secret: str) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self._metadata: tuple[float, Metadata] | None = None
        self._keys: tuple[float, dict[str, Any]] | None = None

    async def _get_json(self, url: str, **request: Any) -> dict[str, Any]:
        """A JSON object from the provider, read up to MAX_DOCUMENT_BYTES, no redirect followed."""
        method = "POST" if "data" in request else "GET"
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False) as client:
                async with client.stream(
                    method, url, headers={"accept": "application/json"}, **request
                ) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise OidcError("The identity provider's answer is too large.")
                    status = response.status_code
        except httpx.HTTPError as exc:
            raise OidcError(f"The identity provider did not answer ({type(exc).__name__}).") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            raise OidcError(f"The identity provider answered HTTP {status} without a JSON object.")
        if status != 200:
            error = document.get("error")
            raise OidcError(f"The identity provider refused: {error if isinstance(error, str) else status}.")
        return document

    async def metadata(self) -> Metadata:
        if self._metadata is not None and time.monotonic() - self._metadata[0] < CACHE_S:
            return self._metadata[1]
        document = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if document.get("issuer") != self.issuer:
            raise OidcError("The identity provider's metadata names another issuer.")
        found = Metadata(
            _endpoint(document, "authorization_endpoint"),
            _endpoint(document, "token_endpoint"),
            _endpoint(document, "jwks_uri"),
        )
        self._metadata = (time.monotonic(), found)
        return found

    async def authorization_url(self, flow: Flow, redirect_uri: str) -> str:
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPES,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": flow.challenge,
            "code_challenge_method": "S256",
        }
        endpoint = (await self.metadata()).authorization_endpoint
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def exchange(self, code: str, flow: Flow, redirect_uri: str) -> str:
        """The ID token the provider gives for ``code`` (once: a code replayed is refused there)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": flow.verifier,
        }
        endpoint = (await self.metadata()).token_endpoint
        answer = await self._get_json(endpoint, data=form, auth=(self.client_id, self._secret))
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("The identity provider gave no ID token.")
        return id_token

    async def _key_set(self, fresh: bool) -> dict[str, Any]:
        if not fresh and self._keys is not None and time.monotonic() - self._keys[0] < CACHE_S:
            return self._keys[1]
        document = await self._get_json((await self.metadata()).jwks_uri)
        keys: dict[str, Any] = {}
        for jwk in document.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[str(jwk.get("kid", ""))] = jwt.PyJWK(jwk, algorithm="RS256").key
            except jwt.PyJWTError:
                continue  # a malformed key is no key
        self._keys = (time.monotonic(), keys)
        return keys

    async def _signing_key(self, kid: str) -> Any:
        for fresh in (False, True):  # an unknown key id: the provider may have rotated its keys
            keys = await self._key_set(fresh)
            if kid in keys:
                return keys[kid]
            if not kid and len(keys) == 1:
                return next(iter(keys.values()))
        raise OidcError("The ID token is signed with a key the identity provider does not publish.")

    async def verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, once its signature, issuer, audience, times and nonce are right."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcError("The ID token is malformed.") from None
        if header.get("alg") != "RS256":
            raise OidcError("The ID token is not signed with RS256.")
        key = await self._signing_key(str(header.get("kid") or ""))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key,
                algorithms=["RS256"],
                audience=self.client_id,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise OidcError("The ID token has expired.") from None
        except jwt.InvalidSignatureError:
            raise OidcError("The ID token's signature does not verify.") from None
        except jwt.PyJWTError as exc:
            raise OidcError(f"The ID token is not valid: {exc}.") from None
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise OidcError("The ID token was not issued for this sign-in (nonce).")
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("The ID token was issued to another client (azp).")
        if isinstance(claims.get("iat"), int | float) and claims["iat"] > time.time() + LEEWAY_S:
            raise OidcError("The ID token is issued in the future.")
        return claims


def person(claims: dict[str, Any]) -> tuple[str, str]:
    """(actor, display): the email (else name, else subject) for the audit trail, and what the
    console shows (name and email)."""

    def text(name: str) -> str:
        value = claims.get(name)
        return value.strip()[:200] if isinstance(value, str) else ""

    email, name, subject = text("email"), text("name"), text("sub")
    actor = email or name or subject
    display = f"{name} <{email}>" if name and email else actor
    return actor, display


def groups(claims: dict[str, Any], claim: str) -> list[str]:
    """The person's groups from ``claim``: a list of strings (a single string counts as one)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
