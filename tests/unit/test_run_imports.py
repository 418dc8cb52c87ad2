"""What a plain export loads: the Azure SDK and croniter stay out of a run that needs neither.

A CSV export to FTP without Filecast's storage configured (the CLI's `run --catalog`) takes no
lease and keeps no history, so the Table Storage stores, the alerts and the Azure SDK behind
them are loaded only when used; croniter only by a catalog with a schedule or by the scheduler.
Checked in a fresh interpreter (imports are process state), running the CLI's own code path.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.helpers import fresh_python


def _loaded(code: str, tmp_path: Path) -> dict[str, bool]:
    out = fresh_python(code, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    loaded: dict[str, bool] = json.loads(out.splitlines()[-1])
    return loaded


def test_a_run_without_storage_loads_no_azure_sdk_and_no_croniter(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        textwrap.dedent(f"""
            sources: {{db: {{type: duckdb, database: {tmp_path / "none.duckdb"}}}}}
            models: {{m: {{source: db, table: t}}}}
            destinations: {{out: {{type: ftp, host: 127.0.0.1, port: 1, username: u}}}}
            activations: {{a: {{model: m, destination: out, file_name: f, format: csv}}}}
        """)
    )
    loaded = _loaded(
        f"""
        import json, sys
        from core.control.service import Services, run_activation, storage_services
        from core.run.engine import Run
        from core.destinations import ftp
        from core.settings import Settings
        services = Services(Settings({{}}))
        catalog = services.catalog({str(catalog)!r})
        assert storage_services(Settings({{}})) is None
        names = ("azure.core", "azure.data.tables", "aiohttp", "croniter")
        print(json.dumps({{name: name in sys.modules for name in names}}))
        """,
        tmp_path,
    )
    assert loaded == {"azure.core": False, "azure.data.tables": False, "aiohttp": False, "croniter": False}


def test_the_stores_and_a_schedule_still_load_what_they_need(tmp_path: Path) -> None:
    loaded = _loaded(
        """
        import json, sys
        from core.catalog.cron import cron_problem
        from core.control.service import Services, due_occurrence
        from core.settings import Settings
        assert cron_problem("0 6 * * *") is None
        Services(Settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})).tables
        print(json.dumps({name: name in sys.modules for name in ("azure.data.tables", "croniter")}))
        """,
        tmp_path,
    )
    assert loaded == {"azure.data.tables": True, "croniter": True}
