"""The Bicep and Terraform templates declare the same, secure Filecast deployment.

No Azure subscription or CLI needed: the templates are parsed (pycep-parser, python-hcl2) and
compared. The last tests break copies of the templates and check the comparisons notice.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.infra.app_settings import NOT_SET_BY_TEMPLATES, REQUIRED_APP_SETTINGS
from tests.infra.infra_model import (
    KEY_VAULT_REFERENCE,
    REPO_ROOT,
    TOOL_SPECIFIC_PARAMETERS,
    Template,
    documented_settings,
    load_bicep,
    load_terraform,
    normalise,
    resource_problems,
    setting_problems,
    undeclared_settings,
)


@pytest.fixture(scope="module")
def bicep() -> Template:
    return load_bicep()


@pytest.fixture(scope="module")
def terraform() -> Template:
    return load_terraform()


def _core_constant(name: str) -> str:
    """A module-level string constant of core/settings.py, read without importing the app."""
    tree = ast.parse((REPO_ROOT / "core" / "settings.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"core/settings.py has no constant {name}")


# ------------------------------------------------------------------------- same resources


def test_both_templates_declare_the_same_resources(bicep: Template, terraform: Template) -> None:
    problems = resource_problems(bicep, terraform)
    assert not problems, "\n".join(problems)


def test_identity_gets_the_data_roles_it_needs(bicep: Template, terraform: Template) -> None:
    expected_app_roles = {
        "Storage Blob Data Owner",
        "Storage Queue Data Contributor",
        "Storage Table Data Contributor",
        "Storage Blob Data Contributor",  # on the optional export account
        "Key Vault Secrets User",
        "Monitoring Metrics Publisher",
    }
    for template in (bicep, terraform):
        app_roles = {role for principal, role in template.role_grants if principal == "app"}
        assert app_roles == expected_app_roles, template.tool


def test_queue_is_the_one_the_runner_listens_on(bicep: Template, terraform: Template) -> None:
    runs_queue = _core_constant("RUNS_QUEUE")
    assert runs_queue == "activation-runs"
    assert {r.body["name"] for r in bicep.of_kind("storage_queue")} == {"runsQueueName"}
    assert bicep.variables["runsQueueName"] == runs_queue
    assert {r.body["name"] for r in terraform.of_kind("storage_queue")} == {"${local.runs_queue_name}"}
    assert terraform.variables["runs_queue_name"] == runs_queue


def test_state_container_is_the_configured_one(bicep: Template, terraform: Template) -> None:
    assert "stateContainerName" in {r.body["name"] for r in bicep.of_kind("blob_container")}
    assert "${var.state_container_name}" in {r.body["name"] for r in terraform.of_kind("blob_container")}


# -------------------------------------------------------------------------- same settings


def test_both_templates_set_every_app_setting_the_code_reads(bicep: Template, terraform: Template) -> None:
    problems = setting_problems(bicep, terraform, REQUIRED_APP_SETTINGS)
    assert not problems, "\n".join(problems)


def test_every_setting_core_documents_is_set_or_knowingly_left_out() -> None:
    documented = documented_settings()
    assert {"SCHEDULER_CRON", "FILECAST_TABLE_PREFIX", "AzureWebJobsStorage__accountName"} <= documented
    problems = undeclared_settings(documented, REQUIRED_APP_SETTINGS, NOT_SET_BY_TEMPLATES)
    assert not problems, "\n".join(problems)


def test_host_storage_is_identity_based(bicep: Template, terraform: Template) -> None:
    for template in (bicep, terraform):
        assert template.app_settings["AzureWebJobsStorage__credential"] == "managedidentity"
        assert "AzureWebJobsStorage" not in template.app_settings, template.tool
    assert bicep.app_settings["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert terraform.app_settings["AzureWebJobsStorage__accountName"] == "${azurerm_storage_account.host.name}"


def test_destination_secrets_are_key_vault_references(bicep: Template, terraform: Template) -> None:
    assert bicep.secret_settings_from == "keyVaultSecretSettings"
    assert terraform.secret_settings_from == "key_vault_secret_settings"
    for template in (bicep, terraform):
        assert template.secret_settings_from is not None
        # An empty map by default: the user names their own settings (DESIGN.md: `*_setting` fields).
        assert template.parameters[normalise(template.secret_settings_from)] == {}
        assert "SecretName=" in template.text and KEY_VAULT_REFERENCE in template.text


def test_defaults_match_the_code(bicep: Template, terraform: Template) -> None:
    expected = {
        "schedulercron": "0 * * * * *",
        "tableprefix": _core_constant("DEFAULT_TABLE_PREFIX"),
        "statecontainername": _core_constant("DEFAULT_STATE_CONTAINER"),
    }
    for template in (bicep, terraform):
        assert {name: template.parameters[name] for name in expected} == expected, template.tool


def test_same_parameters_and_outputs(bicep: Template, terraform: Template) -> None:
    assert set(bicep.parameters) ^ set(terraform.parameters) <= TOOL_SPECIFIC_PARAMETERS
    assert bicep.outputs == terraform.outputs
    assert {"functionappname", "functionapphostname", "storageaccountname", "functionkeycommand"} <= bicep.outputs


def test_example_parameter_files_only_name_real_parameters(bicep: Template, terraform: Template) -> None:
    bicep_params = json.loads((REPO_ROOT / "infra/bicep/main.parameters.json").read_text())["parameters"]
    assert {name.lower() for name in bicep_params} <= set(bicep.parameters)
    example = (REPO_ROOT / "infra/terraform/terraform.tfvars.example").read_text()
    assigned = re.findall(r"^#?\s*([a-z_]+)\s*=", example, flags=re.MULTILINE)
    assert assigned and {name.replace("_", "") for name in assigned} <= set(terraform.parameters)


# ------------------------------------------------------------------------------- security


def test_bicep_security_properties(bicep: Template) -> None:
    storage = bicep.one("storage_account").body["properties"]
    assert storage["allowSharedKeyAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["allowBlobPublicAccess"] is False
    assert storage["supportsHttpsTrafficOnly"] is True
    assert all(r.body["properties"]["publicAccess"] == "None" for r in bicep.of_kind("blob_container"))

    site = bicep.one("function_app").body
    assert site["identity"]["type"] == "SystemAssigned"
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    flex = site["properties"]["functionAppConfig"]
    assert flex["runtime"] == {"name": "python", "version": "3.11"}
    assert flex["deployment"]["storage"]["authentication"]["type"] == "SystemAssignedIdentity"
    assert bicep.one("service_plan").body["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert re.findall(r"basicPublishingCredentialsPolicies[^}]*allow: (\w+)", bicep.text, re.S) == ["false"] * 2

    vault = bicep.one("key_vault").body["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True
    assert bicep.one("application_insights").body["properties"]["DisableLocalAuth"] is True


def test_terraform_security_properties(terraform: Template) -> None:
    storage = terraform.one("storage_account").body
    assert storage["shared_access_key_enabled"] is False
    assert storage["min_tls_version"] == "TLS1_2"
    assert storage["allow_nested_items_to_be_public"] is False
    assert storage["https_traffic_only_enabled"] is True
    assert all(r.body["container_access_type"] == "private" for r in terraform.of_kind("blob_container"))

    app = terraform.one("function_app").body
    assert app["identity"] == [{"type": "SystemAssigned"}]
    assert app["https_only"] is True
    assert app["site_config"][0]["minimum_tls_version"] == "1.2"
    assert (app["runtime_name"], app["runtime_version"]) == ("python", "3.11")
    assert app["storage_authentication_type"] == "SystemAssignedIdentity"
    assert app["webdeploy_publish_basic_authentication_enabled"] is False
    assert terraform.one("service_plan").body["sku_name"] == "FC1"

    vault = terraform.one("key_vault").body
    assert vault["rbac_authorization_enabled"] is True
    assert vault["purge_protection_enabled"] is True
    assert terraform.one("application_insights").body["local_authentication_disabled"] is True


def test_no_key_or_secret_in_any_template(bicep: Template, terraform: Template) -> None:
    for template in (bicep, terraform):
        for needle in (
            "AccountKey=",
            "listKeys(",
            "primary_access_key",
            "primary_connection_string",
            "SharedAccessSignature",
            "sig=",
        ):
            assert needle not in template.text, f"{template.tool}: {needle}"


def test_every_checkov_skip_says_why() -> None:
    for path in sorted((REPO_ROOT / "infra").rglob("*")):
        if path.suffix not in {".bicep", ".tf"}:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            skip = re.search(r"checkov:skip=([A-Z0-9_]+)(.*)", line)
            if skip:
                reason = skip.group(2).lstrip(":").strip()
                assert len(reason) > 30, f"{path.name}: {skip.group(1)} needs a justification"


# ------------------------------------------------- the checks notice a broken template


@pytest.fixture
def broken(tmp_path: Path) -> Callable[..., Path]:
    """Returns a function that copies infra/ and replaces `pattern` (a regex) in one file."""

    def make(relative: str, pattern: str, replacement: str = "") -> Path:
        shutil.copytree(REPO_ROOT / "infra", tmp_path / "infra")
        target = tmp_path / "infra" / relative
        text = target.read_text(encoding="utf-8")
        changed, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE | re.DOTALL)
        assert count == 1, f"{pattern!r} not found in {relative}"
        target.write_text(changed, encoding="utf-8")
        return tmp_path

    return make


def test_noticed_terraform_loses_a_setting(broken: Callable[..., Path], bicep: Template) -> None:
    root = broken("terraform/main.tf", r"^\s*SCHEDULER_CRON\s*=.*?\n")
    problems = setting_problems(bicep, load_terraform(root), REQUIRED_APP_SETTINGS)
    assert "terraform: app setting `SCHEDULER_CRON` is not set" in problems
    assert "app setting `SCHEDULER_CRON`: set in bicep only" in problems


def test_noticed_bicep_loses_a_setting(broken: Callable[..., Path], terraform: Template) -> None:
    root = broken("bicep/modules/functionapp.bicep", r"^\s*\{ name: 'FILECAST_STATE_CONTAINER'.*?\n")
    problems = setting_problems(load_bicep(root), terraform, REQUIRED_APP_SETTINGS)
    assert "bicep: app setting `FILECAST_STATE_CONTAINER` is not set" in problems


def test_noticed_bicep_loses_the_secret_map(broken: Callable[..., Path], terraform: Template) -> None:
    root = broken("bicep/modules/functionapp.bicep", r"concat\(appSettings, secretAppSettings\)", "appSettings")
    problems = setting_problems(load_bicep(root), terraform, REQUIRED_APP_SETTINGS)
    assert "bicep: no Key Vault-referenced settings built from a map parameter" in problems


def test_noticed_terraform_loses_a_resource(broken: Callable[..., Path], bicep: Template) -> None:
    root = broken("terraform/main.tf", r'^resource "azurerm_storage_queue" "runs" \{.*?^\}\n')
    problems = resource_problems(bicep, load_terraform(root))
    assert "terraform: no storage_queue resource" in problems


def test_noticed_bicep_loses_a_resource(broken: Callable[..., Path], terraform: Template) -> None:
    root = broken("bicep/modules/keyvault.bicep", r"^resource vault .*?^\}\n")
    problems = resource_problems(load_bicep(root), terraform)
    assert "bicep: no key_vault resource" in problems


def test_noticed_a_role_in_one_template_only(broken: Callable[..., Path], bicep: Template) -> None:
    root = broken("terraform/main.tf", r'^resource "azurerm_role_assignment" "app_table_contributor" \{.*?^\}\n')
    problems = resource_problems(bicep, load_terraform(root))
    assert "role `Storage Table Data Contributor` for the app identity: in bicep only" in problems


def test_noticed_the_code_documents_a_new_setting(tmp_path: Path) -> None:
    settings_py = tmp_path / "settings.py"
    original = (REPO_ROOT / "core" / "settings.py").read_text(encoding="utf-8")
    row = "| `FILECAST_STATE_CONTAINER` |"
    assert row in original
    settings_py.write_text(original.replace(row, "| `FILECAST_NEW_SETTING` | x | y |\n" + row, 1))
    problems = undeclared_settings(documented_settings(settings_py), REQUIRED_APP_SETTINGS, NOT_SET_BY_TEMPLATES)
    assert len(problems) == 1 and "`FILECAST_NEW_SETTING`" in problems[0]


def test_allowlist_is_the_declared_secrets(bicep: Template, terraform: Template) -> None:
    """A catalog may name only the secrets the deployment declares (core/settings.py
    FILECAST_ALLOWED_SETTINGS): both templates build the allowlist from the secret map's names."""
    assert bicep.app_settings["FILECAST_ALLOWED_SETTINGS"] == {
        "function": {
            "type": "join",
            "parameters": {
                "input_array": {"function": {"type": "objectKeys", "parameters": {"arg_1": "keyVaultSecretSettings"}}},
                "delimiter": ",",
            },
        }
    }
    assert terraform.app_settings["FILECAST_ALLOWED_SETTINGS"] == '${join(",", keys(var.key_vault_secret_settings))}'
