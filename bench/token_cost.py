"""`python -m bench.token_cost`: what a token credential costs the registry next to a bcrypt password.

Issue 16's target: a token check on a warm JWKS cache costs less than 10% of a bcrypt check. Measured in this
process with the registry's own code: `auth.Authenticator.authenticate` for a fresh htpasswd password (one
bcrypt at the cost `user add` uses), for a fresh ServiceAccount-shaped token (RS256 signature, claims,
mapping; keys already cached), and for a token already verified (the HMAC cache). The issuer is in-process
(its discovery and JWKS served from memory), so no network time is counted. Prints the medians and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from dockyard_common import htpasswd as htpasswd_file
from dockyard_registry import auth, identity

ISSUER = "https://kubernetes.default.svc.cluster.local"


class _MemoryIssuer:
    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}

    async def get_json(self, url: str, *, issuer: identity.Issuer) -> Any:
        if url.endswith("openid-configuration"):
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/openid/v1/jwks"}
        return self.jwks

    async def review(self, token: str, *, issuer: identity.Issuer) -> bool:
        return True


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _measure(samples: int) -> dict[str, list[float]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with tempfile.TemporaryDirectory() as tmp:
        htpasswd = Path(tmp) / "htpasswd"
        htpasswd.write_text(htpasswd_file.render({"bench": auth.hash_password("bench-password")}))
        config = identity.Issuer(name="kubernetes", kind="kubernetes", url=ISSUER, audience="dockyard")
        verifier = identity.TokenVerifier([config], _MemoryIssuer(key))
        authn = auth.Authenticator(htpasswd=htpasswd, access=None, tokens=verifier)
        now = time.time()

        def token(i: int) -> str:
            subject = f"system:serviceaccount:ns:sa{i}"
            claims = {"iss": ISSUER, "aud": "dockyard", "sub": subject, "exp": now + 3600}
            return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

        await authn.authenticate(_basic("x", token(-1)))  # warms the key cache
        tokens = [token(i) for i in range(samples)]
        kinds = ("bcrypt (fresh password)", "token (fresh, warm keys)", "token (cached)")
        out: dict[str, list[float]] = {kind: [] for kind in kinds}
        for i in range(samples):
            authn._verified.clear()  # a fresh password each time: the cost of one bcrypt
            start = time.perf_counter()
            await authn.authenticate(_basic("bench", "bench-password"))
            out["bcrypt (fresh password)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await authn.authenticate(_basic("x", tokens[i]))
            out["token (fresh, warm keys)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await authn.authenticate(_basic("x", tokens[i]))
            out["token (cached)"].append(time.perf_counter() - start)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.token_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args(argv)
    found = asyncio.run(_measure(args.samples))
    bcrypt_median = statistics.median(found["bcrypt (fresh password)"])
    for name, values in found.items():
        median = statistics.median(values)
        print(f"{name:28s} median {median * 1e6:10.1f} us   {100 * median / bcrypt_median:6.2f}% of bcrypt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
