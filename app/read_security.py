"""``hes read --auth hls-gmac``: where the meter's suite-0 keys come from, the client
invocation counter to start at, and its recovery from the meter's frame counter.

Keys come from exactly one source: the key store (``--key-store METER_ID``, sealed under the
master key, with the counter persisted there), a key CSV in the ``hes keys import`` format
(``--keys-file``), the terminal (``--ask-keys``, no echo), ``--ek``/``--ak``, or else
``$HES_EK``/``$HES_AK``; all but ``--ek``/``--ak`` keep keys out of shell history. No key,
nor its hex, is ever printed: error messages name the option or the line, never the value,
and the wire trace shows only ciphered APDUs.

``--recover-counter`` first associates as the public client without security (which a
secured meter allows for this), reads the frame counter of the management client's security
setup (Data 0.0.43.1.0.255 by default; ``--counter-obis``), then associates with the counter
after it, and moves the key store's counter up to it when the keys come from there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from collector.session import Session
from collector.transport import Transport
from contracts.meters import MeterTarget
from protocols.cosem import Obis
from protocols.enums import InterfaceClass
from protocols.errors import DlmsError, InvocationCounterRejected, ProtocolError
from protocols.security import (
    DEFAULT_CLIENT_SYSTEM_TITLE,
    MAX_INVOCATION_COUNTER,
    CounterStore,
    MemoryCounterStore,
    SecurityContext,
    SecurityKeys,
)
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.keystore import (
    DatabaseCounterStore,
    KeyStore,
    KeyStoreError,
    load_master_key,
    parse_key_file,
)

#: Data object holding the management client's frame counter (Green Book 0.0.43.1.e.255).
FRAME_COUNTER = "0.0.43.1.0.255"
PUBLIC_CLIENT = 16
DEFAULT_SYSTEM_TITLE = DEFAULT_CLIENT_SYSTEM_TITLE.hex()
EK_ENV = "HES_EK"
AK_ENV = "HES_AK"
_HEX32 = re.compile(r"[0-9A-Fa-f]{32}")
_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")

KeyStoreOption = Annotated[
    str | None,
    typer.Option(
        "--key-store",
        help="with --auth hls-gmac: the meter id whose keys (and invocation counter) are in "
        "the key store (--db; master key from $HES_MASTER_KEY or --master-key-file)",
    ),
]
KeysFileOption = Annotated[
    Path | None,
    typer.Option(
        "--keys-file",
        help="with --auth hls-gmac: a key CSV as hes keys import reads (hes simulate --keys "
        "writes one); --key-id picks the row when it has several",
    ),
]
KeyIdOption = Annotated[
    str | None, typer.Option("--key-id", help="the meter id of the --keys-file row to use")
]
EkOption = Annotated[
    str | None,
    typer.Option(
        "--ek",
        help=f"global unicast encryption key, 32 hex digits (prefer ${EK_ENV} or "
        "--keys-file: a command line stays in shell history)",
    ),
]
AkOption = Annotated[
    str | None,
    typer.Option("--ak", help=f"authentication key, 32 hex digits (prefer ${AK_ENV})"),
]
AskKeysOption = Annotated[
    bool,
    typer.Option(
        "--ask-keys",
        help="ask for EK and AK on the terminal, without echo (nothing in history or ps)",
    ),
]
SystemTitleOption = Annotated[
    str,
    typer.Option("--system-title", help="the client system title, 16 hex digits"),
]
ServerTitleOption = Annotated[
    str | None,
    typer.Option(
        "--server-system-title",
        help="the meter's system title, 16 hex digits (default: the key store's or the "
        "file's, else taken from the AARE)",
    ),
]
CounterOption = Annotated[
    int | None,
    typer.Option(
        "--invocation-counter",
        help="the first client invocation counter to use (default: the key store's next, else 0)",
    ),
]
RecoverOption = Annotated[
    bool,
    typer.Option(
        "--recover-counter",
        help="read the meter's frame counter as the public client first, then associate "
        "with the counter after it (and store it in the key store)",
    ),
]
CounterObisOption = Annotated[
    str,
    typer.Option("--counter-obis", help="the frame counter object (Data) --recover-counter reads"),
]
MasterKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--master-key-file",
        help="with --key-store: the master key file (default: $HES_MASTER_KEY, else "
        "$HES_MASTER_KEY_FILE)",
    ),
]


class SecurityUsage(Exception):
    """A security option that cannot be used; ``error`` is the JSON error class."""

    def __init__(self, message: str, error: str = "usage") -> None:
        super().__init__(message)
        self.error = error


@dataclass
class HlsPlan:
    """Everything ``hes read`` needs for one HLS-GMAC association, keys held but never shown."""

    keys: SecurityKeys = field(repr=False)
    source: str
    system_title: bytes
    server_system_title: bytes | None
    start: int | None
    recover: bool
    counter_obis: str
    meter_id: str | None = None
    database: Database | None = None
    #: The frame counter read by --recover-counter, once read.
    recovered: int | None = None
    context: SecurityContext | None = None

    def close(self) -> None:
        if self.database is not None:
            self.database.close()

    def counters(self) -> CounterStore:
        """The key store's persisted counter, or one in memory from ``start`` (or 0)."""
        if self.database is not None and self.meter_id is not None:
            store = DatabaseCounterStore(self.database, self.meter_id, self.system_title)
            if self.start is not None:
                store.advance_to(self.start)
            return store
        return MemoryCounterStore(self.start or 0)

    async def prepare(
        self, target: MeterTarget, opener: Callable[[MeterTarget], Transport], timeout: float
    ) -> SecurityContext:
        """The context of the management association, after the counter recovery if asked."""
        if self.recover:
            value = await read_frame_counter(target, opener, self.counter_obis, timeout)
            if value >= MAX_INVOCATION_COUNTER:
                raise ProtocolError(
                    f"the meter's frame counter is {value}: no counter is left, renew the keys"
                )
            self.recovered = value
            self.start = value + 1
        counters = await asyncio.to_thread(self.counters)
        self.context = SecurityContext(
            self.keys,
            counters=counters,
            system_title=self.system_title,
            server_system_title=self.server_system_title,
            # one-off reads: a small block, so a memory counter wastes little of the range
            counter_block=16,
        )
        return self.context

    def as_json(self) -> dict[str, Any]:
        """What the output says about the association: sources and counters, no key."""
        ctx = self.context
        out: dict[str, Any] = {
            "mechanism": "hls-gmac",
            "suite": 0,
            "keys_from": self.source,
            "client_system_title": self.system_title.hex(),
        }
        if self.meter_id is not None:
            out["key_id"] = self.meter_id
        if ctx is not None:
            title = ctx.server_system_title
            out["server_system_title"] = None if title is None else title.hex()
            out["next_invocation_counter"] = ctx.next_unused
        if self.recovered is not None:
            out["recovered_frame_counter"] = self.recovered
        return out

    def recovery(self, expected: int) -> str:
        """How to get past a meter that refused the counter, for this source of keys."""
        step = f"run again with --recover-counter (or --invocation-counter {expected})"
        if self.database is not None and self.meter_id is not None:
            step += f", or `hes keys counter {self.meter_id} --at-least {expected}`"
        return f"the meter expects client invocation counter {expected} or more: {step}"


async def read_frame_counter(
    target: MeterTarget, opener: Callable[[MeterTarget], Transport], obis: str, timeout: float
) -> int:
    """The frame counter as the public client reads it, unciphered and unauthenticated."""
    public = dataclasses.replace(target, client_sap=PUBLIC_CLIENT, authentication="none")
    async with Session(
        opener(public), request_timeout=timeout, max_pdu_size=target.max_pdu_size
    ) as session:
        value = await session.get(InterfaceClass.DATA, obis, 2)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"frame counter {obis}: not an unsigned integer: {value!r}")
    return value


def _hex_option(value: str, name: str, pattern: re.Pattern[str], size: str) -> bytes:
    text = value.strip()
    if not pattern.fullmatch(text):
        raise SecurityUsage(f"{name} is not {size}")  # never the value: it may be a key
    return bytes.fromhex(text)


def _file_keys(path: Path, key_id: str | None) -> tuple[str, SecurityKeys, bytes | None]:
    try:
        rows = parse_key_file(path)
    except KeyStoreError as exc:
        raise SecurityUsage(str(exc), "no_keys") from None
    if key_id is not None:
        picked = [r for r in rows if r.meter_id == key_id]
        if not picked:
            raise SecurityUsage(f"key file {path}: no row for meter {key_id}", "no_keys")
        row = picked[0]
    elif len(rows) == 1:
        row = rows[0]
    else:
        raise SecurityUsage(f"key file {path} holds {len(rows)} meters: give --key-id")
    if row.keys is None:
        raise SecurityUsage(f"key file {path}: meter {row.meter_id} has no HLS keys", "no_keys")
    return row.meter_id, row.keys, row.system_title


def ask_key(what: str) -> str:
    """One key typed on the terminal without echo (the prompt on stderr: stdout stays JSON)."""
    try:
        value: str = typer.prompt(what, hide_input=True, err=True)
    except (typer.Abort, EOFError):
        raise SecurityUsage(f"--ask-keys: no {what.split(' (')[0]} was typed", "no_keys") from None
    return value


def file_is_private(path: Path) -> bool:
    """Whether only the owner may read the key file (a note on stderr otherwise)."""
    try:
        return not os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    except OSError:
        return True


def hls_plan(
    *,
    key_store: str | None,
    keys_file: Path | None,
    key_id: str | None,
    ek: str | None,
    ak: str | None,
    system_title: str,
    ask: bool = False,
    server_system_title: str | None,
    invocation_counter: int | None,
    recover: bool,
    counter_obis: str,
    db: str | None,
    master_key_file: Path | None,
    env: dict[str, str] | None = None,
) -> HlsPlan:
    """Check the HLS options and load the keys; SecurityUsage names what was wrong."""
    environ = os.environ if env is None else env
    given = [
        name
        for name, on in (
            ("--key-store", key_store is not None),
            ("--keys-file", keys_file is not None),
            ("--ek/--ak", ek is not None or ak is not None),
            ("--ask-keys", ask),
        )
        if on
    ]
    if len(given) > 1:
        raise SecurityUsage(f"give one source of keys, not {' and '.join(given)}")
    if key_id is not None and keys_file is None:
        raise SecurityUsage("--key-id picks a row of --keys-file: add --keys-file")
    title = _hex_option(system_title, "--system-title", _HEX16, "16 hex digits (8 bytes)")
    server = None
    if server_system_title is not None:
        server = _hex_option(
            server_system_title, "--server-system-title", _HEX16, "16 hex digits (8 bytes)"
        )
    if invocation_counter is not None and not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise SecurityUsage(f"--invocation-counter {invocation_counter}: give 0..4294967295")
    if recover and invocation_counter is not None:
        raise SecurityUsage("give --recover-counter or --invocation-counter, not both")
    try:
        Obis.parse(counter_obis)
    except ValueError as exc:
        raise SecurityUsage(f"--counter-obis {counter_obis!r}: {exc}") from None
    common: dict[str, Any] = {
        "system_title": title,
        "start": invocation_counter,
        "recover": recover,
        "counter_obis": counter_obis,
    }
    if key_store is not None:
        return _store_plan(key_store, db, master_key_file, server, common)
    if keys_file is not None:
        meter_id, keys, file_title = _file_keys(keys_file, key_id)
        return HlsPlan(
            keys,
            "keys-file",
            server_system_title=server or file_title,
            meter_id=meter_id,
            **common,
        )
    ek_text: str | None
    ak_text: str | None
    if ask:
        source, names = "prompt", ("the EK typed", "the AK typed")
        ek_text, ak_text = (
            ask_key("encryption key (EK, 32 hex digits)"),
            ask_key("authentication key (AK, 32 hex digits)"),
        )
    elif ek is not None or ak is not None:
        source, ek_text, ak_text = "command-line", ek, ak
        names = ("--ek", "--ak")
    else:
        source, ek_text, ak_text = "environment", environ.get(EK_ENV), environ.get(AK_ENV)
        names = (f"${EK_ENV}", f"${AK_ENV}")
    if ek_text is None or ak_text is None:
        raise SecurityUsage(
            "--auth hls-gmac needs the meter's keys: --key-store METER_ID, --keys-file FILE, "
            f"--ask-keys, or {EK_ENV} and {AK_ENV} (or --ek and --ak), 32 hex digits each",
            "no_keys",
        )
    keys = SecurityKeys(
        _hex_option(ek_text, names[0], _HEX32, "32 hex digits (16 bytes)"),
        _hex_option(ak_text, names[1], _HEX32, "32 hex digits (16 bytes)"),
    )
    return HlsPlan(keys, source, server_system_title=server, **common)


def _store_plan(
    meter_id: str,
    db: str | None,
    master_key_file: Path | None,
    server: bytes | None,
    common: dict[str, Any],
) -> HlsPlan:
    try:
        master = load_master_key(master_key_file)
    except KeyStoreError as exc:
        raise SecurityUsage(str(exc), "no_keys") from None
    try:
        database = open_database(db)
    except StorageError as exc:
        raise SecurityUsage(str(exc), "storage") from None
    try:
        stored = KeyStore(database, master).get(meter_id)
    except (KeyStoreError, StorageError) as exc:
        database.close()
        raise SecurityUsage(str(exc), "no_keys") from None
    return HlsPlan(
        stored.keys,
        "key-store",
        server_system_title=server or stored.system_title,
        meter_id=meter_id,
        database=database,
        **common,
    )


def counter_error(exc: DlmsError, plan: HlsPlan | None) -> dict[str, Any] | None:
    """The recovery advice of a refused counter under ``plan`` (None: not that error)."""
    if plan is None or not isinstance(exc, InvocationCounterRejected):
        return None
    out: dict[str, Any] = {"recover_with": "--recover-counter"}
    if exc.expected is not None:
        out["expected_invocation_counter"] = exc.expected
        out["recovery"] = plan.recovery(exc.expected)
    else:
        out["recovery"] = "the meter refused the counter: run again with --recover-counter"
    return out
