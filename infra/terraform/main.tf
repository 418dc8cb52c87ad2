# Filecast on Azure Functions (Flex Consumption), deployed into an existing resource group.
# infra/bicep declares the same resources and app settings; tests/infra keeps the two in step.

data "azurerm_client_config" "current" {}

data "azurerm_resource_group" "main" {
  name = var.resource_group_name
}

locals {
  location = var.location != "" ? var.location : data.azurerm_resource_group.main.location
  suffix   = substr(sha1("${data.azurerm_resource_group.main.id}/${var.base_name}"), 0, 13)
  names = {
    storage       = substr("st${replace(var.base_name, "-", "")}${local.suffix}", 0, 24)
    key_vault     = substr("kv-${var.base_name}-${local.suffix}", 0, 24)
    log_analytics = "log-${var.base_name}-${local.suffix}"
    app_insights  = "appi-${var.base_name}-${local.suffix}"
    plan          = "plan-${var.base_name}-${local.suffix}"
    app           = "${var.base_name}-${local.suffix}"
  }
  deployment_container_name = "app-package"
  # The runner's queue trigger listens on this fixed name (core/settings.py RUNS_QUEUE); the host
  # creates `activation-runs-poison` itself for messages that exhaust maxDequeueCount.
  runs_queue_name = "activation-runs"
  tags            = merge({ app = "filecast" }, var.tags)

  # Every setting Filecast and the Functions host read; tests/infra checks this map against the
  # Bicep template and against core/settings.py. APPLICATIONINSIGHTS_CONNECTION_STRING is set
  # through site_config.application_insights_connection_string, which is how the provider wants it.
  app_settings = {
    AzureWebJobsStorage__accountName          = azurerm_storage_account.host.name
    AzureWebJobsStorage__credential           = "managedidentity"
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "Authorization=AAD"
    SCHEDULER_CRON                            = var.scheduler_cron
    FILECAST_TABLE_PREFIX                     = var.table_prefix
    FILECAST_STATE_CONTAINER                  = var.state_container_name
    # The only app settings a catalog's `*_setting` fields may name: the declared secrets.
    FILECAST_ALLOWED_SETTINGS = join(",", keys(var.key_vault_secret_settings))
  }

  secret_app_settings = {
    for setting, secret in var.key_vault_secret_settings :
    setting => "@Microsoft.KeyVault(VaultName=${azurerm_key_vault.main.name};SecretName=${secret})"
  }

  app_principal_id = azurerm_function_app_flex_consumption.main.identity[0].principal_id
}

# ---------------------------------------------------------------------------------------------
# Host storage: the Functions host (AzureWebJobsStorage), the runs queue, Filecast's tables, the
# delta-state container and the deployment container. Keys are disabled: every client
# authenticates with Entra ID.

resource "azurerm_storage_account" "host" {
  #checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches the account over its public endpoint; access needs an Entra token with a data role (shared keys are off), see infra/README.md for the private-endpoint variant.
  #checkov:skip=CKV_AZURE_59:same reason as CKV_AZURE_35: the public endpoint stays enabled for a Function App without VNet integration.
  #checkov:skip=CKV_AZURE_43:the name is built at plan time from base_name (validated: lowercase letters, digits, hyphens, which are removed) and a hex digest, cut to 24 characters, so it always meets the naming rules.
  #checkov:skip=CKV_AZURE_33:classic Storage Analytics queue logging is not used: the Functions host logs every queue-triggered execution to Application Insights and Filecast records each run in its runs table.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys encrypt the data at rest (with infrastructure encryption on top); customer-managed keys are an organisation policy choice, not a Filecast need.
  #checkov:skip=CKV2_AZURE_33:private endpoints need a VNet-integrated Function App, which this template leaves out (see CKV_AZURE_35).
  #checkov:skip=CKV_AZURE_206:LRS is enough for queue messages, run records and delta state; a lost state only causes a full re-export (at-least-once delivery), not data loss.
  name                              = local.names.storage
  resource_group_name               = data.azurerm_resource_group.main.name
  location                          = local.location
  tags                              = local.tags
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "LRS"
  access_tier                       = "Hot"
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  public_network_access_enabled     = true
  local_user_enabled                = false
  sftp_enabled                      = false
  infrastructure_encryption_enabled = true

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Log Analytics storage insights needs the storage account key, and shared keys are disabled on this account.
  name                  = local.deployment_container_name
  storage_account_id    = azurerm_storage_account.host.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "state" {
  #checkov:skip=CKV2_AZURE_21:Log Analytics storage insights needs the storage account key, and shared keys are disabled on this account.
  name                  = var.state_container_name
  storage_account_id    = azurerm_storage_account.host.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "runs" {
  name               = local.runs_queue_name
  storage_account_id = azurerm_storage_account.host.id
}

# Filecast creates its tables (catalog, runs, state, leases) on first use; the identity's
# Storage Table Data Contributor role allows that.

# ---------------------------------------------------------------------------------------------
# Monitoring: Log Analytics and workspace-based Application Insights, local auth off (the app's
# identity publishes telemetry as Monitoring Metrics Publisher).

resource "azurerm_log_analytics_workspace" "main" {
  name                = local.names.log_analytics
  resource_group_name = data.azurerm_resource_group.main.name
  location            = local.location
  tags                = local.tags
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
}

resource "azurerm_application_insights" "main" {
  name                          = local.names.app_insights
  resource_group_name           = data.azurerm_resource_group.main.name
  location                      = local.location
  tags                          = local.tags
  application_type              = "web"
  workspace_id                  = azurerm_log_analytics_workspace.main.id
  local_authentication_disabled = true
}

# ---------------------------------------------------------------------------------------------
# Key Vault for destination secrets, RBAC mode.

resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:Key Vault references are resolved by the App Service platform over the vault's public endpoint when the Function App has no VNet integration; a deny-by-default firewall would break them. Access needs an Entra token and an RBAC role.
  #checkov:skip=CKV2_AZURE_32:private endpoints need a VNet-integrated Function App, which this template leaves out (see CKV_AZURE_109).
  #checkov:skip=CKV_AZURE_189:same reason as CKV_AZURE_109: the public endpoint must stay reachable for Key Vault references from a Function App without VNet integration.
  name                            = local.names.key_vault
  resource_group_name             = data.azurerm_resource_group.main.name
  location                        = local.location
  tags                            = local.tags
  tenant_id                       = data.azurerm_client_config.current.tenant_id
  sku_name                        = "standard"
  rbac_authorization_enabled      = true
  soft_delete_retention_days      = 90
  purge_protection_enabled        = true
  enabled_for_deployment          = false
  enabled_for_disk_encryption     = false
  enabled_for_template_deployment = false
  public_network_access_enabled   = true

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

# ---------------------------------------------------------------------------------------------
# The Function App: Flex Consumption, Linux, Python 3.11, system-assigned identity.

resource "azurerm_service_plan" "main" {
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero on demand; always-ready instances would bill around the clock for a scheduler that ticks once a minute.
  #checkov:skip=CKV_AZURE_225:zone redundancy on Flex Consumption exists only in some regions and a failed run is retried by the next schedule tick; left to the deployer.
  name                = local.names.plan
  resource_group_name = data.azurerm_resource_group.main.name
  location            = local.location
  tags                = local.tags
  os_type             = "Linux"
  sku_name            = "FC1"
}

# checkov has no checks for this resource type yet; tests/infra asserts its security settings
# (https_only, TLS 1.2, identity, basic auth off) instead.
resource "azurerm_function_app_flex_consumption" "main" {
  name                = local.names.app
  resource_group_name = data.azurerm_resource_group.main.name
  location            = local.location
  tags                = local.tags
  service_plan_id     = azurerm_service_plan.main.id

  # The deployment package goes to a blob container through the app's own identity.
  storage_container_type      = "blobContainer"
  storage_container_endpoint  = "${azurerm_storage_account.host.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type = "SystemAssignedIdentity"

  runtime_name           = "python"
  runtime_version        = "3.11"
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = var.instance_memory_mb

  https_only                    = true
  public_network_access_enabled = true
  # `func azure functionapp publish` and zip deploy authenticate with the caller's Entra ID token.
  webdeploy_publish_basic_authentication_enabled = false

  identity {
    type = "SystemAssigned"
  }

  site_config {
    application_insights_connection_string = azurerm_application_insights.main.connection_string
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
  }

  app_settings = merge(local.app_settings, local.secret_app_settings)
}

# ---------------------------------------------------------------------------------------------
# Role assignments for the app's identity on what it uses.

# The host keeps leases, timer state and the deployment package in blobs (Owner is what the
# Functions host documents for identity-based AzureWebJobsStorage); Filecast keeps delta state there.
resource "azurerm_role_assignment" "app_blob_owner" {
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_queue_contributor" {
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_table_contributor" {
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_secrets_user" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_metrics_publisher" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# An azure_blob destination with `account_url` writes with the app's identity (DESIGN.md §1).
resource "azurerm_role_assignment" "export_blob_contributor" {
  count = var.export_storage_account_id == "" ? 0 : 1
  scope = (
    var.export_container_name == ""
    ? var.export_storage_account_id
    : "${var.export_storage_account_id}/blobServices/default/containers/${var.export_container_name}"
  )
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# An optional operator (a person or a CI identity) gets what `python -m core apply|run|reset` and
# `az keyvault secret set` need from their own machine, since shared keys are disabled.
resource "azurerm_role_assignment" "operator_blob_contributor" {
  count                = var.operator_principal_id == "" ? 0 : 1
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.operator_principal_id
  principal_type       = var.operator_principal_type
}

resource "azurerm_role_assignment" "operator_queue_contributor" {
  count                = var.operator_principal_id == "" ? 0 : 1
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = var.operator_principal_id
  principal_type       = var.operator_principal_type
}

resource "azurerm_role_assignment" "operator_table_contributor" {
  count                = var.operator_principal_id == "" ? 0 : 1
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = var.operator_principal_id
  principal_type       = var.operator_principal_type
}

resource "azurerm_role_assignment" "operator_secrets_officer" {
  count                = var.operator_principal_id == "" ? 0 : 1
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = var.operator_principal_id
  principal_type       = var.operator_principal_type
}
