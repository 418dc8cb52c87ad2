"""Reads the Bicep and Terraform templates into one comparable model, and lists what differs.

Bicep is parsed with pycep-parser, Terraform with python-hcl2; neither needs an Azure subscription
or the tools' own CLIs. The checks are plain functions returning problems as sentences, so the
tests can also run them on deliberately broken copies of infra/ and prove they catch the breakage.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]

# One name per kind of Azure resource, whatever the tool calls it.
BICEP_KINDS = {
    "Microsoft.Storage/storageAccounts": "storage_account",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "blob_container",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "storage_queue",
    "Microsoft.OperationalInsights/workspaces": "log_analytics_workspace",
    "Microsoft.Insights/components": "application_insights",
    "Microsoft.KeyVault/vaults": "key_vault",
    "Microsoft.Web/serverfarms": "service_plan",
    "Microsoft.Web/sites": "function_app",
    "Microsoft.Authorization/roleAssignments": "role_assignment",
}
# Bicep child resources that Terraform expresses as arguments of the parent resource.
BICEP_FOLDED_INTO_PARENT = {
    "Microsoft.Storage/storageAccounts/blobServices": "azurerm_storage_account.blob_properties",
    "Microsoft.Storage/storageAccounts/queueServices": "azurerm_storage_account (service enabled by default)",
    "Microsoft.Storage/storageAccounts/tableServices": "azurerm_storage_account (service enabled by default)",
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": (
        "azurerm_function_app_flex_consumption.webdeploy_publish_basic_authentication_enabled"
    ),
}
TERRAFORM_KINDS = {
    "azurerm_storage_account": "storage_account",
    "azurerm_storage_container": "blob_container",
    "azurerm_storage_queue": "storage_queue",
    "azurerm_log_analytics_workspace": "log_analytics_workspace",
    "azurerm_application_insights": "application_insights",
    "azurerm_key_vault": "key_vault",
    "azurerm_service_plan": "service_plan",
    "azurerm_function_app_flex_consumption": "function_app",
    "azurerm_role_assignment": "role_assignment",
}
# What a working, secure Filecast needs, whatever else a template adds.
REQUIRED_KINDS = frozenset(BICEP_KINDS.values())

# Built-in role definition ids (identical in every subscription) -> role names, as Terraform names them.
BUILTIN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
# Who a role assignment is for, by the expression naming its principal.
BICEP_PRINCIPALS = {"principalId": "app", "operatorPrincipalId": "operator"}
TERRAFORM_PRINCIPALS = {"${local.app_principal_id}": "app", "${var.operator_principal_id}": "operator"}
# Parameters only one tool needs: Terraform names the resource group, Bicep gets it from `-g`.
TOOL_SPECIFIC_PARAMETERS = {"resourcegroupname"}

KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(VaultName="
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Resource:
    kind: str
    type: str
    name: str
    body: dict[str, Any]
    file: Path


@dataclass
class Template:
    """What one tool's template declares, in tool-neutral terms."""

    tool: str
    resources: list[Resource] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)
    app_settings: dict[str, Any] = field(default_factory=dict)
    secret_settings_from: str | None = None  # the map parameter Key Vault references are built from
    role_grants: set[tuple[str, str]] = field(default_factory=set)  # (principal, role name)
    parameters: dict[str, Any] = field(default_factory=dict)  # normalised name -> default
    outputs: set[str] = field(default_factory=set)  # normalised names
    variables: dict[str, Any] = field(default_factory=dict)  # main.bicep variables / Terraform locals
    text: str = ""  # every template file, concatenated

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def one(self, kind: str) -> Resource:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.tool}: expected one {kind}, found {len(found)}"
        return found[0]


def normalise(name: str) -> str:
    """`schedulerCron` and `scheduler_cron` are the same parameter."""
    return name.replace("_", "").lower()


# --------------------------------------------------------------------------------------- Bicep


def _unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """A conditional resource (`= if (...) {...}`) nests its body under `config`."""
    return config["config"] if "condition" in config and "config" in config else config


def _strings(node: Any) -> Iterator[Any]:
    """Every leaf of a pycep expression tree, plus `a.b` property accesses as (a, b) pairs."""
    if isinstance(node, dict):
        operator = node.get("operator")
        if isinstance(operator, dict) and operator.get("type") == "property_accessor":
            operands = operator["operands"]
            yield (operands["operand_1"], operands["operand_2"])
            return
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _bicep_role_guid(expression: Any, variables: dict[str, Any]) -> str | None:
    for leaf in _strings(expression):
        if isinstance(leaf, tuple):
            holder, key = leaf
            value = variables.get(holder, {}).get("value")
            if isinstance(value, dict) and isinstance(value.get(key), str) and _GUID.match(value[key]):
                return str(value[key])
        elif _GUID.match(leaf):
            return leaf
        elif isinstance(variables.get(leaf, {}).get("value"), str) and _GUID.match(variables[leaf]["value"]):
            return str(variables[leaf]["value"])
    return None


def _bicep_app_settings(site: dict[str, Any], variables: dict[str, Any], template: Template) -> None:
    expression = site.get("properties", {}).get("siteConfig", {}).get("appSettings")
    if isinstance(expression, dict) and expression.get("function", {}).get("type") == "concat":
        parts = list(expression["function"]["parameters"].values())
    else:
        parts = [expression]
    for part in parts:
        value = variables[part]["value"] if isinstance(part, str) and part in variables else part
        if isinstance(value, list):
            for item in value:
                template.app_settings[item["name"]] = item["value"]
        elif isinstance(value, dict) and "loop_type" in value:
            source = value["loop_type"]["detail"]["array_name"]  # e.g. items(keyVaultSecretSettings)
            source = source.get("function", {}).get("parameters", source) if isinstance(source, dict) else source
            built = value["config"].get("value", "")
            if isinstance(built, str) and KEY_VAULT_REFERENCE in built:
                template.secret_settings_from = next((leaf for leaf in _strings(source) if isinstance(leaf, str)), None)


def load_bicep(root: Path = REPO_ROOT) -> Template:
    template = Template(tool="bicep")
    parser = BicepParser()
    files = sorted((root / "infra" / "bicep").rglob("*.bicep"))
    for path in files:
        template.text += path.read_text(encoding="utf-8")
        doc = parser.parse(file_path=path)
        variables = doc.get("variables", {})
        for name, resource in doc.get("resources", {}).items():
            if resource.get("existing"):
                continue
            type_ = resource["type"]
            body = _unwrap(resource["config"])
            if type_ in BICEP_FOLDED_INTO_PARENT:
                continue
            if type_ not in BICEP_KINDS:
                template.unknown_types.append(f"{type_} ({path.name})")
                continue
            kind = BICEP_KINDS[type_]
            template.resources.append(Resource(kind, type_, name, body, path))
            if kind == "function_app":
                _bicep_app_settings(body, variables, template)
            elif kind == "role_assignment":
                properties = body["properties"]
                guid = _bicep_role_guid(properties["roleDefinitionId"], variables)
                role = BUILTIN_ROLES.get(guid or "", f"unknown role {guid}")
                principal = BICEP_PRINCIPALS.get(properties["principalId"], properties["principalId"])
                template.role_grants.add((principal, role))
        if path.name == "main.bicep":
            for name, parameter in doc.get("parameters", {}).items():
                template.parameters[normalise(name)] = parameter.get("default")
            template.outputs = {normalise(name) for name in doc.get("outputs", {})}
            template.variables = {name: v.get("value") for name, v in variables.items()}
    return template


# ----------------------------------------------------------------------------------- Terraform

_HCL_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)


def _hcl(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=_HCL_OPTIONS)


def _terraform_app_settings(app: dict[str, Any], locals_: dict[str, Any], template: Template) -> None:
    expression = app.get("app_settings", {})
    parts: list[Any] = [expression]
    if isinstance(expression, str):
        parts = [locals_.get(name) for name in re.findall(r"local\.(\w+)", expression)]
    for part in parts:
        if isinstance(part, dict):
            template.app_settings.update(part)
        elif isinstance(part, str) and KEY_VAULT_REFERENCE in part:
            source = re.search(r"\bin\s+var\.(\w+)", part)
            template.secret_settings_from = source.group(1) if source else None
    # The provider sets APPLICATIONINSIGHTS_CONNECTION_STRING from this argument (and strips the
    # setting from app_settings when it reads the app back), so this is where it belongs.
    for site_config in app.get("site_config", []):
        if site_config.get("application_insights_connection_string"):
            template.app_settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] = site_config[
                "application_insights_connection_string"
            ]


def load_terraform(root: Path = REPO_ROOT) -> Template:
    template = Template(tool="terraform")
    files = sorted((root / "infra" / "terraform").glob("*.tf"))
    docs = []
    for path in files:
        template.text += path.read_text(encoding="utf-8")
        docs.append((path, _hcl(path)))
    locals_: dict[str, Any] = {}
    for _, doc in docs:
        for block in doc.get("locals", []):
            locals_.update(block)
    template.variables = locals_
    for path, doc in docs:
        for block in doc.get("resource", []):
            for type_, named in block.items():
                for name, body in named.items():
                    if type_ not in TERRAFORM_KINDS:
                        template.unknown_types.append(f"{type_} ({path.name})")
                        continue
                    kind = TERRAFORM_KINDS[type_]
                    template.resources.append(Resource(kind, type_, name, body, path))
                    if kind == "function_app":
                        _terraform_app_settings(body, locals_, template)
                    elif kind == "role_assignment":
                        principal = TERRAFORM_PRINCIPALS.get(body["principal_id"], body["principal_id"])
                        template.role_grants.add((principal, body["role_definition_name"]))
        for block in doc.get("variable", []):
            for name, variable in block.items():
                template.parameters[normalise(name)] = variable.get("default")
        for block in doc.get("output", []):
            template.outputs.update(normalise(name) for name in block)
    return template


# ---------------------------------------------------------------------------- core/settings.py


def documented_settings(settings_py: Path = REPO_ROOT / "core" / "settings.py") -> set[str]:
    """The setting names in the table of core/settings.py's module docstring.

    A cell like `` `AzureWebJobsStorage__blobServiceUri` / `__queueServiceUri` `` names two
    settings: a name starting with `__` takes the prefix of the full name before it.
    """
    docstring = ast.get_docstring(ast.parse(settings_py.read_text(encoding="utf-8"))) or ""
    names: set[str] = set()
    for line in docstring.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first_cell = line.strip("|").split("|")[0]
        prefix = ""
        for name in re.findall(r"`([^`]+)`", first_cell):
            if name.startswith("__"):
                name = prefix + name
            else:
                prefix = name.split("__")[0]
            names.add(name)
    return names


# ------------------------------------------------------------------------------------ checks


def resource_problems(bicep: Template, terraform: Template) -> list[str]:
    """Differences in what the two templates create; empty when they declare the same things."""
    problems = [
        f"{t.tool}: unknown resource type {u}: map it in tests/infra"
        for t in (bicep, terraform)
        for u in t.unknown_types
    ]
    for template in (bicep, terraform):
        missing = REQUIRED_KINDS - {r.kind for r in template.resources}
        problems += [f"{template.tool}: no {kind} resource" for kind in sorted(missing)]
    counts = {t.tool: Counter(r.kind for r in t.resources if r.kind != "role_assignment") for t in (bicep, terraform)}
    for kind in sorted(set(counts["bicep"]) | set(counts["terraform"])):
        if counts["bicep"][kind] != counts["terraform"][kind]:
            problems.append(f"{kind}: bicep declares {counts['bicep'][kind]}, terraform {counts['terraform'][kind]}")
    for principal, role in sorted(bicep.role_grants - terraform.role_grants):
        problems.append(f"role `{role}` for the {principal} identity: in bicep only")
    for principal, role in sorted(terraform.role_grants - bicep.role_grants):
        problems.append(f"role `{role}` for the {principal} identity: in terraform only")
    return problems


def setting_problems(bicep: Template, terraform: Template, required: frozenset[str]) -> list[str]:
    """Missing or one-sided app settings; empty when both templates set the same, required ones."""
    problems = []
    for template in (bicep, terraform):
        problems += [
            f"{template.tool}: app setting `{name}` is not set"
            for name in sorted(required - set(template.app_settings))
        ]
        if template.secret_settings_from is None:
            problems.append(f"{template.tool}: no Key Vault-referenced settings built from a map parameter")
    for name in sorted(set(bicep.app_settings) ^ set(terraform.app_settings)):
        only = "bicep" if name in bicep.app_settings else "terraform"
        problems.append(f"app setting `{name}`: set in {only} only")
    return problems


def undeclared_settings(documented: set[str], required: frozenset[str], not_set: dict[str, str]) -> list[str]:
    """Settings core/settings.py documents that the templates neither set nor deliberately skip."""
    return [
        f"core/settings.py documents `{name}`, which no template sets: add it to both templates "
        "and to tests/infra/app_settings.py, or to NOT_SET_BY_TEMPLATES with the reason"
        for name in sorted(documented - required - set(not_set))
    ]
