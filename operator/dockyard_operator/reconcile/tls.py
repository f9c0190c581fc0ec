"""Steps: the CA and the serving certificate, kept, issued, renewed or refused as `policies` say.

Two calls around the CA rotation step: `choose_ca` decides the CA of a SelfSigned registry (keep the one in
`<registry>-ca`, create one, or refuse to touch either Secret), or settles a pass completely when there is
nothing to issue (a bring-your-own TLS Secret, a refused CA); `serve` then keeps or issues the serving
certificate from whichever CA the rotation step says signs it, within that CA's name constraints.
Both return typed results (`context.CaChoice`, `context.Tls`); the Secrets are written by the children step.
Must not: write anything, or read the clock (the pass carries `now`).
"""

from __future__ import annotations

import asyncio

from dockyard_common import pki
from dockyard_operator import model, policies, settings
from dockyard_operator.builders import inputs
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context


class Certificates:
    def __init__(self, *, reader: context.Reader, config: settings.Settings) -> None:
        self._reader = reader
        self._cluster_domain = config.cluster_domain

    async def choose_ca(self, run: context.Pass) -> context.CaChoice | context.Tls:
        """The CA to continue with, or the whole TLS result when nothing is to be issued this pass."""
        if run.spec.tls.mode == "Secret":
            return await self._bring_your_own(run)
        child_names = run.names
        ca_object = await context.own_secret_object(self._reader, owner=run.owner, name=child_names.ca_secret)
        ca_data = context.decode(ca_object)
        tls_object = await context.own_secret_object(
            self._reader, owner=run.owner, name=child_names.tls_secret
        )
        tls_data = context.decode(tls_object)
        action, verdict = policies.ca_action(ca_secret=ca_data, tls_secret=tls_data)
        if action is policies.CaAction.REFUSE:
            return _refused(run, verdict, tls_data or {})
        dns, ips = policies.desired_sans(
            spec=run.spec,
            child_names=child_names,
            namespace=run.namespace,
            cluster_domain=self._cluster_domain,
        )
        permitted = policies.ca_constraints(dns, ips)
        findings = context.Findings()
        reused: frozenset[str] = frozenset()
        if action is policies.CaAction.CREATE:
            ca = await asyncio.to_thread(
                pki.new_ca,
                common_name=f"Dockyard CA {run.namespace}/{child_names.registry}",
                now=run.now,
                duration=model.parse_duration(run.spec.tls.ca_duration),
                permitted=permitted,
            )
            findings = context.event(
                Reason.CA_CREATED, f"created CA {pki.inspect(ca.cert_pem).fingerprint_sha256}"
            )
            handled = run.requested_rotation  # a request older than the CA is already satisfied by it
        else:
            assert ca_data is not None
            ca = pki.KeyPair(ca_data["ca.crt"], ca_data["ca.key"])
            reused = frozenset({child_names.ca_secret})
            handled = ((ca_object or {}).get("metadata", {}).get("annotations") or {}).get(context.ROTATE_CA)
        return context.CaChoice(
            ca=ca,
            handled=handled,
            permitted=permitted,
            dns=tuple(dns),
            ips=tuple(ips),
            tls_data=tls_data,
            reused=reused,
            findings=findings,
            created=action is policies.CaAction.CREATE,
            read=context.read_objects(ca_object, tls_object),
        )

    async def serve(
        self, run: context.Pass, *, choice: context.CaChoice, staged: context.Staged
    ) -> context.Tls:
        """Keep or issue the serving certificate from `staged.signer`; the result the builders render."""
        child_names = run.names
        ca, signer, bundle = staged.ca, staged.signer, staged.bundle
        findings = choice.findings + staged.findings
        # A CA made with name constraints vouches only for the names the spec had then (older CAs have none).
        dns, ips, outside = policies.within_constraints(
            pki.inspect(signer.cert_pem).permitted,
            dns_names=list(choice.dns),
            ip_addresses=list(choice.ips),
        )
        if outside:
            findings += context.problem(
                Reason.NAMES_OUTSIDE_CA,
                f"the CA may only vouch for the names the registry had when it was created, so "
                f"{', '.join(outside)} are left out of the serving certificate; request a CA rotation "
                f"(annotation {context.ROTATE_CA}) to include them",
            )
        tls_data = choice.tls_data
        verdict = policies.server_cert_verdict(
            tls_secret=tls_data,
            ca_pem=signer.cert_pem,
            ca_bundle=bundle,
            dns_names=dns,
            ip_addresses=ips,
            now=run.now,
            renew_before=model.parse_duration(run.spec.tls.renew_before),
        )
        reused = choice.reused | staged.reused
        if verdict.ok:
            assert tls_data is not None
            server = pki.KeyPair(tls_data["tls.crt"], tls_data["tls.key"])
            reused |= {child_names.tls_secret}
        else:
            server = await asyncio.to_thread(
                pki.issue_server_cert,
                ca=signer,
                common_name=dns[0],
                dns_names=dns,
                ip_addresses=ips,
                now=run.now,
                duration=model.parse_duration(run.spec.tls.cert_duration),
            )
            if not choice.created:  # a new CA's first certificate: CACreated and Created already say so
                findings += context.event(
                    Reason.CERTIFICATE_ISSUED, f"issued the serving certificate ({verdict.reason})"
                )
        info = pki.inspect(server.cert_pem)
        ca_info = pki.inspect(ca.cert_pem)
        if ca_info.not_after <= run.now:
            certificate = policies.Verdict(
                False,
                Reason.CA_EXPIRED,
                f"the CA expired at {ca_info.not_after.isoformat()}; delete both TLS Secrets to rotate",
            )
            findings += context.problem(Reason.CA_EXPIRED, certificate.message)
        elif verdict.ok:
            certificate = verdict  # Valid, or LimitedByCA when the CA expires first
        else:
            # Same reason and message as the next pass's "kept" verdict, so status does not flap; the
            # issuance itself is told by the CertificateIssued Event.
            certificate = policies.Verdict(True, Reason.VALID, f"valid until {info.not_after.isoformat()}")
        return context.Tls(
            secret_name=child_names.tls_secret,
            digest=context.tls_digest(server.cert_pem, server.key_pem, bundle),
            material=inputs.TlsMaterial(cert_pem=server.cert_pem, key_pem=server.key_pem, ca_pem=bundle),
            ca=ca,
            ca_annotations={context.ROTATE_CA: staged.handled} if staged.handled else {},
            certificate=certificate,
            ca_status=context.ca_status(ca.cert_pem, child_names.tls_secret),
            cert_status=context.cert_status(server.cert_pem, child_names.tls_secret),
            ca_pem=ca.cert_pem,
            next_ca_pem=staged.next_ca_pem,
            server_cert_pem=server.cert_pem,
            reused=reused,
            findings=findings,
            read=choice.read,
        )

    async def _bring_your_own(self, run: context.Pass) -> context.Tls:
        secret_name = run.spec.tls.secret_name or ""
        data = await context.secret(self._reader, namespace=run.namespace, name=secret_name)
        verdict = policies.byo_cert_verdict(secret=data, secret_name=secret_name, now=run.now)
        if not verdict.ok:
            raise context.Blocked([context.Problem(verdict.reason, verdict.message)])
        assert data is not None
        ca_status, ca_pem = None, None
        if data.get("ca.crt"):
            try:
                ca_status, ca_pem = context.ca_status(data["ca.crt"], secret_name), data["ca.crt"]
            except pki.PkiError:
                ca_status = None
        return context.Tls(
            secret_name=secret_name,
            digest=context.tls_digest(data["tls.crt"], data["tls.key"], data.get("ca.crt", b"")),
            certificate=verdict,
            ca_status=ca_status,
            cert_status=context.cert_status(data["tls.crt"], secret_name),
            ca_pem=ca_pem,
            server_cert_pem=data["tls.crt"],
        )


def _refused(run: context.Pass, verdict: policies.Verdict, existing: dict[str, bytes]) -> context.Tls:
    """Keep serving whatever the pod mounts today; never touch either Secret."""
    secret_name = run.names.tls_secret
    ca_status = cert_status = None
    if existing.get("ca.crt"):
        ca_status = context.ca_status(existing["ca.crt"], secret_name)
    if existing.get("tls.crt"):
        cert_status = context.cert_status(existing["tls.crt"], secret_name)
    return context.Tls(
        secret_name=secret_name,
        # The same digest a normal pass computes for this material: the pods must not roll.
        digest=context.tls_digest(
            existing.get("tls.crt", b""), existing.get("tls.key", b""), existing.get("ca.crt", b"")
        ),
        certificate=verdict,
        ca_status=ca_status,
        cert_status=cert_status,
        ca_pem=existing.get("ca.crt") or None,
        server_cert_pem=existing.get("tls.crt") or None,
        findings=context.problem(verdict.reason, verdict.message),
    )
