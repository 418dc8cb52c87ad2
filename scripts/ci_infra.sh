#!/usr/bin/env bash
# Static checks of the infrastructure templates (infra/bicep, infra/terraform) with checkov.
#
# checkov pins many dependencies of its own, so it lives in its own virtualenv under
# ${FILECAST_TOOLS:-/tmp/filecast-tools}/checkov-venv, never in the app's environment. The venv is
# reused when it already holds the requested checkov; FILECAST_CHECKOV_SPEC changes the pin.
# Exits non-zero when any check fails. Each skipped check is justified next to its skip in the
# templates (`#checkov:skip=` in Terraform, `// checkov:skip=` in Bicep).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${FILECAST_TOOLS:-/tmp/filecast-tools}"
venv="$tools/checkov-venv"
spec="${FILECAST_CHECKOV_SPEC:-checkov>=3.2.400,<4}"
python="${PYTHON:-python3}"
# Written only after a complete install: a venv without it (interrupted install, other pin) is rebuilt.
stamp="$venv/.filecast-spec"

mkdir -p "$tools"
exec 9>"$tools/checkov-venv.lock"
flock 9  # two CI jobs sharing FILECAST_TOOLS must not build the same venv at once

if [[ -x "$venv/bin/checkov" && "$(cat "$stamp" 2>/dev/null)" == "$spec" ]]; then
  echo "ci_infra: reusing $venv"
else
  echo "ci_infra: installing '$spec' into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -qq --disable-pip-version-check "$spec"
  printf '%s\n' "$spec" >"$stamp"
fi
flock -u 9
echo "ci_infra: checkov $("$venv/bin/checkov" --version)"

cd "$root"
# Formatting is checked offline when a terraform binary happens to be installed (none is required).
if command -v terraform >/dev/null 2>&1; then
  # fmt reads no CLI configuration; ignore a TF_CLI_CONFIG_FILE that points nowhere.
  env -u TF_CLI_CONFIG_FILE terraform -chdir=infra/terraform fmt -check -diff
fi
# --skip-download: no call to the Prisma Cloud API (CI reaches package indexes only).
"$venv/bin/checkov" \
  --directory infra \
  --framework bicep terraform \
  --quiet --compact \
  --skip-download
