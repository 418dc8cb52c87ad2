"""Benchmark of OpenPGP encryption: a whole export run encrypted vs the same run unencrypted.

    python -m bench.encryption [--rows 1000000] [--rounds 3] [--modes csv,csv+pgp,...] [--check | --ci]
                               [--target null|azurite]

The data set is bench/formats.py's 12 columns, loaded once into a DuckDB file. Each measurement
is a fresh child process running the engine (`core.run.engine.Run`): DuckDB source → mapping → CSV
writer → (gzip) → (OpenPGP) → a destination that counts the bytes and keeps none (the preview
destination), so the figures are the export's own work; `--target azurite` uploads instead, to an
Azurite started empty for each run (as `python -m bench` does), and checks each blob's size
against the run record. Rounds are interleaved (every mode once,
then again) because the machine is shared: each line prints the load average when it ran.

Modes: `csv` (plain), `csv+pgp` (binary, two recipients, Curve25519 and RSA-3072, signed with
Ed25519 protected by a passphrase), `csv+pgp-unsigned`, `csv+asc` (signed, ASCII-armoured),
`csv.gz` and `csv.gz+pgp`. Keys are made by GnuPG (`gpg`), as partners' are: Sequoia writes the
message format GnuPG keys advertise (SEIPD v1: AES-256-CFB with a SHA-1 MDC), the slower one.

CPU: user + system seconds of the child and, separately, of its helpers: unlike wall time, they
do not depend on what else the machine runs, and say what a free second core would absorb.

Memory: the child's peak RSS is `VmHWM` from /proc/self/status; the OpenPGP helper process's peak
is its VmHWM, sampled every 10 ms while it runs (`ru_maxrss` of a child would count the pages of
the parent it was spawned from). `--check` exits 1 unless `csv+pgp` takes at most
1.3 × `csv` (median of the rounds) and the child's peak grows by at most 50 MB. `--ci` (what CI
runs) gates memory only, counting the helper in: the median over the rounds of the run's peak
plus its helper's, for each encrypted mode, at most 50 MB over `csv`'s; a run that fails fails it
too. Wall time is printed, not gated: on 2 cores the helper's CPU shows in it (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "csv": {},
    "csv+pgp": {"encryption": "binary"},
    "csv+asc": {"encryption": "armor"},
    "csv+pgp-unsigned": {"encryption": "unsigned"},
    "csv.gz": {"compression": "gzip"},
    "csv.gz+pgp": {"compression": "gzip", "encryption": "binary"},
}
TIME_BUDGET, RSS_BUDGET_MB = 1.3, 50


def make_db(path: Path, rows: int) -> None:
    import duckdb

    sys.path.insert(0, str(ROOT))
    from bench.formats import make_batch

    with duckdb.connect(str(path)) as con:
        for start in range(0, rows, 100_000):
            batch = make_batch(start, min(100_000, rows - start), 7)  # noqa: F841 - read by DuckDB by name
            if start == 0:
                con.execute("CREATE TABLE data AS SELECT * FROM batch")
            else:
                con.execute("INSERT INTO data SELECT * FROM batch")


def make_keys(work: Path) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from tests.integration import gnupg

    rsa3k = gnupg.RSA.replace("Length: 2048", "Length: 3072")
    partner = gnupg.make_key(work, "partner", gnupg.CV25519)
    bank = gnupg.make_key(work, "bank", rsa3k)
    signer = gnupg.make_key(work, "signer", gnupg.SIGN_ONLY, passphrase=gnupg.SIGNING_PASSPHRASE)
    keys = {
        "PARTNER_KEYS": partner.public + bank.public,
        "SIGNING_KEY": signer.secret(gnupg.SIGNING_PASSPHRASE),
        "SIGNING_PASSPHRASE": gnupg.SIGNING_PASSPHRASE,
    }
    for key in (partner, bank, signer):
        subprocess.run(["gpgconf", "--homedir", str(key.home), "--kill", "gpg-agent"], capture_output=True, check=False)
    return keys


def vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def watch_helpers() -> list[float]:
    """Peak RSS (VmHWM) of each OpenPGP helper process, sampled every 10 ms while it runs: the
    kernel's `ru_maxrss` of a child counts the parent's pages it was spawned from."""
    import threading

    from core.write import pgp_stream

    peaks: list[float] = []
    live: list[Any] = []
    start = pgp_stream.Stage.__init__

    def init(self: Any, keys: Any) -> None:
        start(self, keys)
        live.append(self.process)

    def sample() -> None:
        while True:
            for process in list(live):
                try:
                    status = Path(f"/proc/{process.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
                if process.poll() is not None:
                    live.remove(process)
            time.sleep(0.01)

    pgp_stream.Stage.__init__ = init  # type: ignore[method-assign]
    threading.Thread(target=sample, daemon=True).start()
    return peaks


def child(db: str, mode: str, keys_file: str, target: str = "null") -> None:
    """One export run in this fresh process; prints its figures as one JSON line."""
    import asyncio
    from datetime import UTC, datetime

    sys.path.insert(0, str(ROOT))
    from core.catalog.parse import parse_catalog
    from core.destinations.memory import PreviewDestination
    from core.run.engine import Run
    from core.run.records import RunRecord
    from core.settings import Settings

    options = dict(MODES[mode])
    activation: dict[str, Any] = {"model": "data", "destination": "out", "file_name": "data", "format": "csv"}
    if "compression" in options:
        activation["compression"] = options["compression"]
    if "encryption" in options:
        activation["encryption"] = {"recipients_setting": "PARTNER_KEYS", "armor": options["encryption"] == "armor"}
        if options["encryption"] != "unsigned":
            activation["encryption"]["signing_key_setting"] = "SIGNING_KEY"
            activation["encryption"]["signing_passphrase_setting"] = "SIGNING_PASSPHRASE"
    catalog = parse_catalog(
        {
            "sources": {"db": {"type": "duckdb", "database": db}},
            "models": {"data": {"source": "db", "table": "data"}},
            "destinations": {
                "out": {"type": "azure_blob", "container": "bench", "connection_setting": "X", "create_container": True}
            },
            "activations": {"export": activation},
        }
    )
    helper_peak = watch_helpers()
    settings = Settings({**json.loads(Path(keys_file).read_text()), "X": os.environ.get("BENCH_AZURE_CONNECTION", "")})
    destination = PreviewDestination() if target == "null" else None  # None: the catalog's, Azurite
    record = RunRecord("bench", "export", "manual", datetime.now(UTC))
    started = time.perf_counter()
    result = asyncio.run(Run(catalog, "export", settings, record, destination=destination, retries=0).execute())
    seconds = time.perf_counter() - started
    if result.exception is not None:
        raise SystemExit(f"{mode}: {result.exception.message}")
    helper = max(helper_peak, default=0.0)
    own, helpers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_mb": vmhwm_mb(),
                "helper_rss_mb": helper,
                "cpu": own.ru_utime + own.ru_stime,
                "helper_cpu": helpers.ru_utime + helpers.ru_stime,
                "bytes": sum(f["bytes"] for f in record.files),
                "paths": [f["path"] for f in record.files],
                "rows": record.rows.read,
            }
        )
    )


def measure(db: Path, mode: str, keys_file: Path, target: str = "null") -> dict[str, Any]:
    """One run in a fresh child process; with `target` azurite, against a fresh, empty Azurite
    whose blobs must then have the sizes the run record gives."""
    if target == "null":
        return _child(db, mode, keys_file, target, os.environ)
    from azure.storage.blob import BlobServiceClient

    sys.path.insert(0, str(ROOT))
    from devtools.services import Azurite

    with tempfile.TemporaryDirectory(prefix="filecast-bench-pgp-") as work, Azurite.start(Path(work)) as azurite:
        env = {**os.environ, "BENCH_AZURE_CONNECTION": azurite.connection_string}
        figures = _child(db, mode, keys_file, target, env)
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("bench")
        stored = sum(container.get_blob_client(path).get_blob_properties().size for path in figures["paths"])
    if stored != figures["bytes"]:
        raise SystemExit(f"{mode}: Azurite holds {stored} bytes, the run record says {figures['bytes']}")
    return figures


def _child(db: Path, mode: str, keys_file: Path, target: str, env: Mapping[str, str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(db), mode, str(keys_file), target],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(env),
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["load"] = load
    return figures


def memory_verdict(results: dict[str, list[dict[str, Any]]], modes: list[str]) -> int:
    """0 when every encrypted mode's run, helper included, peaks at most `RSS_BUDGET_MB` over `csv`
    (medians over the rounds); 1 otherwise."""
    whole = {m: statistics.median(r["rss_mb"] + r["helper_rss_mb"] for r in results[m]) for m in modes}
    over = []
    for mode in modes:
        if "+" not in mode or mode.startswith("csv.gz"):
            continue
        grown = whole[mode] - whole["csv"]
        print(
            f"  memory: {mode} with its helper {whole[mode]:.0f} MB, {grown:+.0f} MB over csv "
            f"(budget +{RSS_BUDGET_MB} MB)"
        )
        if grown > RSS_BUDGET_MB:
            over.append(mode)
    print("memory within budget" if not over else f"MEMORY OVER BUDGET: {', '.join(over)}")
    return 1 if over else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="csv,csv+pgp,csv+pgp-unsigned,csv+asc,csv.gz,csv.gz+pgp")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--ci", action="store_true", help="gate the memory budget only (helper included)")
    parser.add_argument("--target", choices=["null", "azurite"], default="null")
    args = parser.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="filecast-bench-pgp-") as work:
        db, keys_file = Path(work) / "data.duckdb", Path(work) / "keys.json"
        make_db(db, args.rows)
        keys_file.write_text(json.dumps(make_keys(Path(work))))
        keys_file.chmod(0o600)
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for round_ in range(args.rounds):
            for mode in modes:
                figures = measure(db, mode, keys_file, args.target)
                results[mode].append(figures)
                print(
                    f"round {round_ + 1} {mode:16} {figures['seconds']:6.2f} s  {figures['bytes'] / 1e6:7.1f} MB  "
                    f"peak {figures['rss_mb']:5.0f} MB (helper {figures['helper_rss_mb']:4.0f} MB)  "
                    f"cpu {figures['cpu']:5.2f} + helper {figures['helper_cpu']:4.2f} s  "
                    f"load {figures['load']:.2f}",
                    flush=True,
                )
    print(f"\n{args.rows:,} rows, {args.rounds} rounds, medians (load average now {os.getloadavg()[0]:.2f}):")
    base = {m: statistics.median(r["seconds"] for r in results[m]) for m in modes}
    peak = {m: max(r["rss_mb"] for r in results[m]) for m in modes}
    cpu = {m: statistics.median(r["cpu"] + r["helper_cpu"] for r in results[m]) for m in modes}
    for mode in modes:
        reference = "csv.gz" if mode.startswith("csv.gz") else "csv"
        ratio = base[mode] / base[reference] if reference in base else float("nan")
        print(
            f"  {mode:16} {base[mode]:6.2f} s  {ratio:5.2f}× {reference:6}  peak {peak[mode]:5.0f} MB "
            f"({peak[mode] - peak.get(reference, peak[mode]):+.0f} MB)  "
            f"helper {max(r['helper_rss_mb'] for r in results[mode]):4.0f} MB  "
            f"cpu {cpu[mode]:5.2f} s ({cpu[mode] / cpu[reference]:.2f}×)"
        )
    if args.ci and "csv" in base:
        return memory_verdict(results, modes)
    if args.check and "csv" in base and "csv+pgp" in base:
        ok = base["csv+pgp"] <= TIME_BUDGET * base["csv"] and peak["csv+pgp"] - peak["csv"] <= RSS_BUDGET_MB
        print("within budget" if ok else "OVER BUDGET")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
