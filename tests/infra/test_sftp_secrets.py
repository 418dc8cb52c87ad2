"""SFTP key secrets are declared in both example parameter files, the way the FTP password is."""

from __future__ import annotations

import json
import re
from pathlib import Path

INFRA = Path(__file__).resolve().parents[2] / "infra"


def bicep_map() -> dict[str, str]:
    doc = json.loads((INFRA / "bicep/main.parameters.json").read_text())
    return dict(doc["parameters"]["keyVaultSecretSettings"]["value"])


def terraform_map() -> dict[str, str]:
    text = (INFRA / "terraform/terraform.tfvars.example").read_text()
    block = re.search(r"key_vault_secret_settings\s*=\s*\{(.*?)\}", text, flags=re.DOTALL)
    assert block is not None
    return dict(re.findall(r'^\s*([A-Z0-9_]+)\s*=\s*"([^"]+)"', block.group(1), flags=re.MULTILINE))


def test_both_examples_declare_the_same_secrets_sftp_keys_included() -> None:
    assert bicep_map() == terraform_map()
    assert {"PARTNER_FTP_PASSWORD", "PARTNER_SFTP_PRIVATE_KEY", "PARTNER_SFTP_KEY_PASSPHRASE"} <= set(bicep_map())
    for setting, secret in bicep_map().items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", setting)
        assert re.fullmatch(r"[0-9a-zA-Z-]{1,127}", secret)  # Key Vault secret names
