"""The app as Azure deploys it: `requirements.txt` alone, then the functions indexed and one export.

A Function App's remote build copies the project minus `.funcignore` and runs
`pip install -r requirements.txt`, nothing else; a module the app imports that only the dev
requirements bring breaks every trigger. This check does the same on this machine:

1. stages the deployment package (the tracked files minus `.funcignore`) in a temporary folder;
2. creates a fresh virtualenv there and installs `requirements.txt` only;
3. in that venv (`devtools/deployed_probe.py`), with the package folder on `sys.path` as the
   Functions worker puts it: imports `function_app`, checks every function is indexed with its
   trigger, applies a catalog through `PUT /api/catalog`, queues a run through
   `POST /api/activations/{id}/run`, hands the queued message to the `runner` function and reads
   the exported blob back from Azurite, comparing every value;
4. installs the project (`pip install --no-deps .`) into the same venv and runs the `filecast`
   command from an unrelated folder.

Run it with `make deploy-check` (CI runs it). It needs Azurite from `make setup`.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devtools.services import Azurite  # noqa: E402

ROWS = 2_500


def funcignore_patterns() -> list[str]:
    lines = (REPO / ".funcignore").read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """`.funcignore` semantics as Core Tools applies them: a pattern matches the path or any of its folders."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(part, pattern)
        for pattern in patterns
        for prefix, part in zip(prefixes, parts, strict=True)
    )


def stage_package(target: Path) -> list[str]:
    """Copy what a deployment ships: the files git tracks, minus `.funcignore`."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    patterns = funcignore_patterns()
    shipped = sorted(p for p in listed if p and not ignored(p, patterns) and (REPO / p).is_file())
    for relative in shipped:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target / relative)
    return shipped


def step(text: str) -> None:
    print(f"== deploy-check: {text}", flush=True)


def run(args: list[str], **kwargs: object) -> None:
    started = time.monotonic()
    subprocess.run(args, check=True, **kwargs)  # type: ignore[call-overload]
    print(f"   ({time.monotonic() - started:.1f} s)", flush=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="filecast-deployed-"))
    try:
        app, venv = work / "wwwroot", work / "venv"
        step(f"staging the deployment package in {app}")
        shipped = stage_package(app)
        leaked = [p for p in shipped if p.startswith(("tests/", "bench/", "devtools/", ".ci/"))]
        if leaked or "requirements-dev.txt" in shipped:
            print(f"error: .funcignore lets development files into the package: {leaked[:5]}", file=sys.stderr)
            return 1
        print(f"   {len(shipped)} files: {', '.join(sorted({p.split('/')[0] for p in shipped}))}")
        step("a fresh virtualenv with requirements.txt alone (what the remote build installs)")
        run([sys.executable, "-m", "venv", str(venv)])
        python = str(venv / "bin" / "python")
        run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(app / "requirements.txt"),
            ]
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(work)),
            "FILECAST_LOCAL_SETTINGS": os.devnull,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with Azurite.start(work / "azurite") as azurite:
            step(f"the functions, indexed and called, against Azurite on port {azurite.blob_port}")
            env["AzureWebJobsStorage"] = azurite.connection_string
            env["CHECK_EXPORT_STORAGE"] = azurite.connection_string
            run([python, str(REPO / "devtools" / "deployed_probe.py"), str(app), str(ROWS)], env=env, cwd=app)
            step("`pip install .` gives a `filecast` command that works from any folder")
            run(
                [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", str(REPO)],
                cwd=work,
            )
            elsewhere = work / "elsewhere"
            elsewhere.mkdir()
            filecast = str(venv / "bin" / "filecast")
            run([filecast, "--help"], env=env, cwd=elsewhere, stdout=subprocess.DEVNULL)
            run([filecast, "validate", str(app / "catalog.yaml")], env=env, cwd=elsewhere)
        step("passed")
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"error: `{' '.join(map(str, exc.cmd))}` exited {exc.returncode}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
