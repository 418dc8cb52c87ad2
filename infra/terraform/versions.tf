terraform {
  required_version = ">= 1.6"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # azurerm_function_app_flex_consumption, storage_account_id on containers and queues (ARM,
      # no shared key) and rbac_authorization_enabled on Key Vault all need a recent 4.x.
      version = ">= 4.40, < 5.0"
    }
  }
}

provider "azurerm" {
  features {
    key_vault {
      # Purge protection is on: a destroyed vault stays recoverable for its retention period.
      purge_soft_delete_on_destroy = false
    }
  }
  # Shared keys are disabled on the storage account: any data-plane call uses Entra ID.
  storage_use_azuread = true
}
