"""What runs for an app's lifetime besides requests: background tasks and the startup and cleanup steps.

Owns: registering, on an aiohttp application, the tasks and steps its settings ask for: the periodic sweep
of expired upload sessions (and of upload body files a stopped nginx left behind), the thread hashing
upload bodies while nginx writes them, the scheduled online gc, the storage check behind /readyz, the token
issuers' key refreshes, and readying and closing the pull-through mirrors' upstream clients. Each task is
cancelled and awaited at cleanup.
Must not: answer requests (app.py and handlers/ do) or hold storage rules (store.py, maintenance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from dockyard_registry import bodyfile, state

log = logging.getLogger(__name__)


def install(app: web.Application, settings: state.Settings) -> None:
    """Register on `app` what `settings` ask to run beside the requests."""
    if settings.upload_sweep_seconds is not None:
        app.cleanup_ctx.append(_sweep_uploads)
    if settings.body_ahead is not None:
        app.cleanup_ctx.append(_body_ahead)
    if settings.gc is not None:
        app.cleanup_ctx.append(_scheduled_gc)
    if settings.storage is not None:
        app.cleanup_ctx.append(_storage_checks)
    if settings.mirror is not None:
        app.on_startup.append(_prepare_mirrors)
        app.on_cleanup.append(_close_mirrors)
    if settings.authenticator is not None and settings.authenticator.tokens is not None:
        app.cleanup_ctx.append(_issuer_keys)


@contextlib.asynccontextmanager
async def _while_serving(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` as a task for the app's lifetime; cancel and await it at cleanup."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sweep_uploads(app: web.Application) -> AsyncIterator[None]:
    """For the app's lifetime: purge expired upload sessions every `upload_sweep_seconds`."""
    settings = app[state.SETTINGS]
    interval = settings.upload_sweep_seconds
    assert interval is not None

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                purged = await settings.store.purge_expired_uploads()
            except Exception:
                # The one place an error is logged and not raised: nothing awaits this task until
                # shutdown, so raising would end the sweeps silently for the process's lifetime.
                log.exception("sweeping expired upload sessions failed; retrying in %ss", interval)
                continue
            if purged:
                log.info("purged %d expired upload sessions", len(purged))
            if settings.body_file_dir is not None:
                older_than = time.time() - settings.store.upload_expiry
                with contextlib.suppress(OSError):
                    if gone := await asyncio.to_thread(
                        bodyfile.sweep, settings.body_file_dir, older_than=older_than
                    ):
                        log.info("removed %d upload body files a stopped nginx left behind", gone)

    async with _while_serving(loop()):
        yield


async def _body_ahead(app: web.Application) -> AsyncIterator[None]:
    """For the app's lifetime: hash upload body files while nginx writes them (bodyahead.Follower)."""
    follower = app[state.SETTINGS].body_ahead
    assert follower is not None
    await asyncio.to_thread(follower.start)
    try:
        yield
    finally:
        await asyncio.to_thread(follower.stop)


async def _scheduled_gc(app: web.Application) -> AsyncIterator[None]:
    """For the app's lifetime: the online gc (maintenance.GcRunner) on its schedule."""
    runner = app[state.SETTINGS].gc
    assert runner is not None
    async with _while_serving(runner.run_forever()):
        yield


async def _prepare_mirrors(app: web.Application) -> None:
    """Load the upstreams' TLS settings before serving, so that no pull waits for them."""
    mirrors = app[state.SETTINGS].mirror
    assert mirrors is not None
    await mirrors.prepare()


async def _close_mirrors(app: web.Application) -> None:
    """Stop running upstream fetches (nothing half-fetched is stored) and close their connections."""
    mirrors = app[state.SETTINGS].mirror
    assert mirrors is not None
    await mirrors.close()


async def _storage_checks(app: web.Application) -> AsyncIterator[None]:
    """For the app's lifetime: the storage check (health.StorageMonitor) behind /readyz."""
    monitor = app[state.SETTINGS].storage
    assert monitor is not None
    async with _while_serving(monitor.run_forever()):
        yield


async def _issuer_keys(app: web.Application) -> AsyncIterator[None]:
    """For the app's lifetime: read every token issuer's keys at startup and again whenever due (each
    issuer's keyRefreshSeconds; an unreachable one at its retry interval), so /status shows reachability,
    requests rarely wait, and a key the issuer dropped stops verifying within that bound."""
    authenticator = app[state.SETTINGS].authenticator
    assert authenticator is not None and authenticator.tokens is not None
    keysets = list(authenticator.tokens.keysets.values())

    async def loop() -> None:
        while True:
            await asyncio.gather(*(keyset.warm() for keyset in keysets))
            # At least a second: a keyset whose read just failed within its retry interval is not busy-looped.
            await asyncio.sleep(max(1.0, min((k.seconds_until_due() for k in keysets), default=600.0)))

    async with _while_serving(loop()):
        yield
