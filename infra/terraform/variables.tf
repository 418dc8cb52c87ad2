variable "resource_group_name" {
  description = "Existing resource group to deploy into (the Bicep template deploys into an existing group too)."
  type        = string
}

variable "location" {
  description = "Azure region; empty uses the resource group's. Flex Consumption must be available there (az functionapp list-flexconsumption-locations)."
  type        = string
  default     = ""
}

variable "base_name" {
  description = "Short name every resource name starts with (lowercase letters, digits, hyphens)."
  type        = string
  default     = "filecast"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,10}$", var.base_name))
    error_message = "base_name must be 3-11 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "scheduler_cron" {
  description = "NCRONTAB (6 fields, UTC) of the scheduler timer: how often due activations are looked for."
  type        = string
  default     = "0 * * * * *"
}

variable "table_prefix" {
  description = "Prefix of Filecast's tables (FILECAST_TABLE_PREFIX)."
  type        = string
  default     = "filecast"
}

variable "state_container_name" {
  description = "Blob container for bulky delta state (FILECAST_STATE_CONTAINER)."
  type        = string
  default     = "filecast-state"
}

variable "key_vault_secret_settings" {
  description = "Destination secrets: app setting name -> Key Vault secret name. Each becomes an app setting @Microsoft.KeyVault(VaultName=<vault>;SecretName=<secret>), e.g. { PARTNER_FTP_PASSWORD = \"partner-ftp-password\" }."
  type        = map(string)
  default     = {}
}

variable "export_storage_account_id" {
  description = "Resource id of a storage account that azure_blob destinations write to with the app's identity; empty for none."
  type        = string
  default     = ""
}

variable "export_container_name" {
  description = "Container of that account to scope the role to; empty grants it on the whole account."
  type        = string
  default     = ""
}

variable "operator_principal_id" {
  description = "Object id of an operator (you, or a CI identity) to grant data access for the CLI and Key Vault secret writes; empty for none."
  type        = string
  default     = ""
}

variable "operator_principal_type" {
  description = "User, Group or ServicePrincipal."
  type        = string
  default     = "User"

  validation {
    condition     = contains(["User", "Group", "ServicePrincipal"], var.operator_principal_type)
    error_message = "operator_principal_type must be User, Group or ServicePrincipal."
  }
}

variable "maximum_instance_count" {
  description = "Upper bound of Flex Consumption instances."
  type        = number
  default     = 40

  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count must be between 40 and 1000."
  }
}

variable "instance_memory_mb" {
  description = "Memory of each instance: 2048 or 4096."
  type        = number
  default     = 2048

  validation {
    condition     = contains([2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb must be 2048 or 4096."
  }
}

variable "log_retention_days" {
  description = "Days Log Analytics keeps logs."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
