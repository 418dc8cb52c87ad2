// Key Vault for destination secrets (FTP passwords, connection strings, SAS URLs). RBAC mode: the
// Function App's identity reads secrets as Key Vault Secrets User (see roles.bicep) and app settings
// reference them as @Microsoft.KeyVault(VaultName=...;SecretName=...).

param name string
param location string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Key Vault references are resolved by the App Service platform over the vault's public endpoint when the Function App has no VNet integration; a deny-by-default firewall would break them. Access needs an Entra token and an RBAC role.
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109: the public endpoint must stay reachable for Key Vault references from a Function App without VNet integration.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
