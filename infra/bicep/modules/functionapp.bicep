// The Filecast Function App on the Flex Consumption plan (Linux, Python 3.11), with a system-assigned
// managed identity. Host storage is identity-based (AzureWebJobsStorage__accountName, no key), the
// deployment package goes to a blob container through the same identity, and destination secrets
// come from Key Vault references.

param planName string
param appName string
param location string
param tags object
param storageAccountName string
@description('URL of the blob container Flex Consumption deploys the app package to.')
param deploymentContainerUrl string
param appInsightsConnectionString string
param keyVaultName string
@description('App setting name -> Key Vault secret name, for destination secrets (e.g. PARTNER_FTP_PASSWORD -> partner-ftp-password).')
param keyVaultSecretSettings object
param schedulerCron string
param tablePrefix string
param stateContainerName string
@description('Upper bound of Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int
@allowed([2048, 4096])
param instanceMemoryMB int

// Every setting Filecast and the Functions host read; tests/infra checks this list against the
// Terraform template and against core/settings.py.
var appSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
  { name: 'SCHEDULER_CRON', value: schedulerCron }
  { name: 'FILECAST_TABLE_PREFIX', value: tablePrefix }
  { name: 'FILECAST_STATE_CONTAINER', value: stateContainerName }
  // The only app settings a catalog's `*_setting` fields may name: the declared secrets.
  { name: 'FILECAST_ALLOWED_SETTINGS', value: join(objectKeys(keyVaultSecretSettings), ',') }
]

var secretAppSettings = [for secret in items(keyVaultSecretSettings): {
  name: secret.key
  value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${secret.value})'
}]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption exists only in some regions and a failed run is retried by the next schedule tick; left to the deployer.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: the HTTP API authenticates callers with function keys over HTTPS (FUNCTION auth level, DESIGN.md §3); client certificates are not part of that contract.
  // checkov:skip=CKV_AZURE_222: operators and CI call the HTTP API over the internet with a function key; a private-only app needs VNet integration and a private endpoint, left out of this template.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; always-ready instances would bill around the clock for a scheduler that ticks once a minute.
  // checkov:skip=CKV_AZURE_213: the Flex Consumption plan does not support App Service health checks; the platform restarts unhealthy instances itself.
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(appSettings, secretAppSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Publishing with basic (user/password) credentials is off: `func azure functionapp publish` and
// `az functionapp deployment source config-zip` authenticate with the caller's Entra ID token.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = site.name
output hostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
