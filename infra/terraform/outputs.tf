output "function_app_name" {
  value = azurerm_function_app_flex_consumption.main.name
}

output "function_app_host_name" {
  value = azurerm_function_app_flex_consumption.main.default_hostname
}

output "storage_account_name" {
  value = azurerm_storage_account.host.name
}

output "key_vault_name" {
  value = azurerm_key_vault.main.name
}

output "key_vault_uri" {
  value = azurerm_key_vault.main.vault_uri
}

output "app_insights_name" {
  value = azurerm_application_insights.main.name
}

output "principal_id" {
  description = "Object id of the Function App's managed identity."
  value       = local.app_principal_id
}

output "function_key_command" {
  description = "Prints the default function key the HTTP API expects (x-functions-key header or ?code=)."
  value       = "az functionapp keys list --resource-group ${data.azurerm_resource_group.main.name} --name ${azurerm_function_app_flex_consumption.main.name} --query functionKeys.default --output tsv"
}
