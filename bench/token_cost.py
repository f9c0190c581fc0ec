"""`python -m bench.token_cost`: what a token credential costs the registry next to a bcrypt password.

Issue 16's target: a token check on a warm JWKS cache costs less than 10% of a bcrypt check. Measured in this
process with the registry's own code: `auth.Authenticator.authenticate` for a fresh htpasswd password (one
bcrypt at the cost `user add` uses), for a fresh ServiceAccount-shaped token (RS256 signature, claims,
mapping; keys already cached), and for a token already verified (the HMAC cache). The issuer is in-process
(its discovery and JWKS served from memory), so no network time is counted. Prints the medians and ratios.

`--gets-seconds N` adds issue 16's throughput row: one `dockyard-registry serve --no-tls` with the token
flow on (`--token-realm /token`, `--token-key`), one pushed image, and authenticated manifest GETs with wrk
(bench/metrics_cost.py's load: `-t2`, `--connections`; a Python client when wrk is missing, smoke only) for
N seconds each, alternating per round between Basic credentials (the verified-password cache warm after the
first request) and a Bearer registry token from `/token` (an HS256 check per request). Prints requests/s
of each and the Bearer/Basic ratio per round (paired within a round, so the machine's drifting load cancels
out) and their median; the target is Bearer within 10% of Basic.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import metrics_cost
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


def manifest_gets(*, rounds: int, seconds: float, connections: int) -> dict[str, list[float]]:
    """Manifest GETs per second with Basic and with a Bearer registry token, alternating per round; also
    `token_gets_share` (Bearer / Basic in percent, per round)."""
    workdir = Path(tempfile.mkdtemp(prefix="dockyard-token-bench-"))
    (workdir / "token.key").write_text(os.urandom(32).hex())
    flow = ("--token-realm", "/token", "--token-key", str(workdir / "token.key"), "--token-ttl", "86400")
    server = metrics_cost.Server(workdir, "tokens", metrics=False, extra_args=flow)
    out: dict[str, list[float]] = {}
    try:
        manifest_url, _ = asyncio.run(metrics_cost.prepare(server, blob=os.urandom(1024)))
        request = urllib.request.Request(  # noqa: S310  # the benchmark's own loopback server
            f"{server.base}/token?service=dockyard&scope=repository:bench:pull", headers=metrics_cost.AUTH
        )
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            token = json.load(resp)["token"]
        loads = {"basic": metrics_cost.AUTH["Authorization"], "bearer": f"Bearer {token}"}
        for r in range(rounds):
            got: dict[str, float] = {}
            for name in ("basic", "bearer") if r % 2 == 0 else ("bearer", "basic"):
                rps, _ = metrics_cost.load(
                    manifest_url, seconds=seconds, connections=connections, authorization=loads[name]
                )
                got[name] = rps
                out.setdefault(f"token_gets_{name}", []).append(rps)
                print(f"  round {r + 1} manifest GET {name:6} {rps:10.1f} req/s", flush=True)
            out.setdefault("token_gets_share", []).append(100 * got["bearer"] / got["basic"])
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.token_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument(
        "--gets-seconds",
        type=float,
        default=0.0,
        help="also measure manifest GETs, N s per load (default off)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the manifest GETs (default 3)")
    parser.add_argument(
        "--connections", type=int, default=64, help="connections for manifest GETs (default 64)"
    )
    args = parser.parse_args(argv)
    found = asyncio.run(_measure(args.samples))
    bcrypt_median = statistics.median(found["bcrypt (fresh password)"])
    for name, values in found.items():
        median = statistics.median(values)
        print(f"{name:28s} median {median * 1e6:10.1f} us   {100 * median / bcrypt_median:6.2f}% of bcrypt")
    if args.gets_seconds > 0:
        gets = manifest_gets(rounds=args.rounds, seconds=args.gets_seconds, connections=args.connections)
        basic, bearer = (statistics.median(gets[f"token_gets_{k}"]) for k in ("basic", "bearer"))
        share = statistics.median(gets["token_gets_share"])
        print(f"manifest GET, Basic (warm)    median {basic:10.1f} req/s")
        print(
            f"manifest GET, Bearer token    median {bearer:10.1f} req/s   {share:6.1f}% of Basic (per round)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
