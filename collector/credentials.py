"""Where a management session's credentials come from when the environment has none.

LLS secrets are named by the inventory's ``password_ref``: ``$HES_PASSWORD_<REF>`` first (as
before), else the key store's LLS secret of that reference (``hes keys import`` of a file
with an ``lls_password`` column, as ``hes simulate --keys`` writes for its LLS meters). A run
asks the key store once for every reference it will need, so a fleet of tens of thousands of
LLS meters costs one read, not one per session. Suite-0 contexts of secured meters come from
the key store, their counter block reserved (and committed) before the session uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from contracts.meters import SECURE_PROFILE
from protocols.security import SecurityContext
from storage.keystore import (
    DatabaseCounterStore,
    KeyStore,
    KeyStoreError,
    reserve_counter_blocks,
    security_context,
)
from storage.records import MeterRecord

Secrets = Callable[[str], bytes | None]


def with_stored_secrets(
    secrets: Secrets,
    meters: Sequence[MeterRecord],
    open_store: Callable[[], KeyStore],
    every_ref: bool = False,
) -> Secrets:
    """``secrets``, falling back on the key store's LLS secrets of the meters' references
    (read once, here: blocking IO). ``every_ref``: every meter's reference, not only those
    of LLS meters (management commands use it whatever the meter's own association). A
    store that cannot be opened (no master key) leaves ``secrets`` as it is: the meters
    then fail with their own no-secret error, as without a key store."""
    refs = {
        m.password_ref
        for m in meters
        if m.password_ref
        and (every_ref or m.authentication == "lls")
        and secrets(m.password_ref) is None
    }
    if not refs:
        return secrets
    try:
        stored = open_store().lls_secrets(refs)
    except KeyStoreError:
        return secrets
    if not stored:
        return secrets

    def resolve(ref: str) -> bytes | None:
        value = secrets(ref)
        return value if value is not None else stored.get(ref)

    return resolve


def fresh_context(keystore: KeyStore, meter_id: str) -> SecurityContext:
    """A secured meter's context with its counter block reserved and committed (blocking)."""
    ctx = security_context(keystore, meter_id)
    assert isinstance(ctx.counters, DatabaseCounterStore)
    (start,) = reserve_counter_blocks(keystore.db, [(ctx.counters, ctx.counter_block)])
    ctx.hold_block(start)
    return ctx


def contexts_from(keystore: KeyStore | None) -> Callable[[MeterRecord], SecurityContext | None]:
    """``security_for`` of a run: a fresh context for each secured meter, None for the
    others (a secured meter with no key store open: KeyStoreError, its no-keys failure)."""

    def security_for(meter: MeterRecord) -> SecurityContext | None:
        if meter.security_profile != SECURE_PROFILE:
            return None
        if keystore is None:
            raise KeyStoreError(f"meter {meter.meter_id} is secured but no key store is open")
        return fresh_context(keystore, meter.meter_id)

    return security_for
