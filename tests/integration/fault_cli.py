"""`python -m tests.integration.fault_cli ARGS…`: the real CLI in its own process, with one fault.

`FILECAST_TEST_FAULT` names it:
- `state_unreachable_after_publish`: once the files are published, the state's Table endpoint
  points at a closed loopback port, so the commit fails as when Table Storage is unreachable (the
  SDK's own connection error, translated by the store);
- `slow_publish`: waits `FILECAST_TEST_DELAY` seconds (default 4) before publishing, holding the
  lease, so a second run can be started meanwhile.
Test code only; the product has no such hooks.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from typing import Any

from azure.data.tables import TableClient

from core import cli
from core.run import engine
from core.settings import STORAGE_SETTING as STORAGE
from core.state.table_storage import TableStorageStateStore


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    fault = os.environ.get("FILECAST_TEST_FAULT", "")
    engine.BACKOFF = 0.05  # the in-run retries meet the same fault; don't wait seconds for them
    if fault == "state_unreachable_after_publish":
        commit = TableStorageStateStore.commit

        def unreachable_commit(self: TableStorageStateStore, info: Any, snapshot: Any) -> None:
            conn = re.sub(
                r"TableEndpoint=http://127\.0\.0\.1:\d+",
                f"TableEndpoint=http://127.0.0.1:{closed_port()}",
                os.environ[STORAGE],
            )
            self.table = TableClient.from_connection_string(conn, table_name=self.table.table_name, retry_total=0)
            commit(self, info, snapshot)

        TableStorageStateStore.commit = unreachable_commit  # type: ignore[method-assign]
    elif fault == "slow_publish":
        publish = engine.Run._publish

        async def slow_publish(self: engine.Run, staged: Any) -> None:
            await asyncio.sleep(float(os.environ.get("FILECAST_TEST_DELAY", "4")))
            await publish(self, staged)

        engine.Run._publish = slow_publish  # type: ignore[method-assign]
    elif fault:
        raise SystemExit(f"unknown FILECAST_TEST_FAULT `{fault}`")
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
