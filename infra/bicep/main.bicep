// Filecast on Azure Functions (Flex Consumption), deployed into an existing resource group:
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p @infra/bicep/main.parameters.json
// infra/terraform declares the same resources and app settings; tests/infra keeps the two in step.

@description('Azure region; Flex Consumption must be available there (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Short name every resource name starts with (lowercase letters, digits, hyphens).')
@minLength(3)
@maxLength(11)
param baseName string = 'filecast'

@description('NCRONTAB (6 fields, UTC) of the scheduler timer: how often due activations are looked for.')
param schedulerCron string = '0 * * * * *'

@description('Prefix of Filecast\'s tables (FILECAST_TABLE_PREFIX).')
param tablePrefix string = 'filecast'

@description('Blob container for bulky delta state (FILECAST_STATE_CONTAINER).')
param stateContainerName string = 'filecast-state'

@description('Destination secrets: app setting name -> Key Vault secret name. Each becomes an app setting @Microsoft.KeyVault(VaultName=<vault>;SecretName=<secret>), e.g. {"PARTNER_FTP_PASSWORD": "partner-ftp-password"}.')
param keyVaultSecretSettings object = {}

@description('Resource id of a storage account that azure_blob destinations write to with the app\'s identity; empty for none.')
param exportStorageAccountId string = ''

@description('Container of that account to scope the role to; empty grants it on the whole account.')
param exportContainerName string = ''

@description('Object id of an operator (you, or a CI identity) to grant data access for the CLI and Key Vault secret writes; empty for none.')
param operatorPrincipalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
param operatorPrincipalType string = 'User'

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@description('Days Log Analytics keeps logs.')
param logRetentionDays int = 30

param tags object = {}

var suffix = uniqueString(resourceGroup().id, baseName)
var names = {
  storage: take('st${replace(baseName, '-', '')}${suffix}', 24)
  keyVault: take('kv-${baseName}-${suffix}', 24)
  logAnalytics: 'log-${baseName}-${suffix}'
  appInsights: 'appi-${baseName}-${suffix}'
  plan: 'plan-${baseName}-${suffix}'
  app: '${baseName}-${suffix}'
}
var deploymentContainerName = 'app-package'
// The runner's queue trigger listens on this fixed name (core/settings.py RUNS_QUEUE); the host
// creates `activation-runs-poison` itself for messages that exhaust maxDequeueCount.
var runsQueueName = 'activation-runs'
var allTags = union({ app: 'filecast' }, tags)

module storage 'modules/storage.bicep' = {
  name: 'filecast-storage'
  params: {
    name: names.storage
    location: location
    tags: allTags
    runsQueueName: runsQueueName
    stateContainerName: stateContainerName
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'filecast-monitoring'
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: allTags
    retentionInDays: logRetentionDays
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'filecast-keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: allTags
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'filecast-app'
  params: {
    planName: names.plan
    appName: names.app
    location: location
    tags: allTags
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    keyVaultSecretSettings: keyVaultSecretSettings
    schedulerCron: schedulerCron
    tablePrefix: tablePrefix
    stateContainerName: stateContainerName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module roles 'modules/roles.bicep' = {
  name: 'filecast-roles'
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    principalId: app.outputs.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

// The export account may live in another resource group (or subscription): deploy there. Its id is
// only split when given, so the scope expression stays valid when the module is skipped.
var exportIdParts = split(empty(exportStorageAccountId) ? '${resourceGroup().id}/providers/none/none/none' : exportStorageAccountId, '/')

module exportAccess 'modules/export-access.bicep' = if (!empty(exportStorageAccountId)) {
  name: 'filecast-export-access'
  scope: resourceGroup(exportIdParts[2], exportIdParts[4])
  params: {
    storageAccountName: last(exportIdParts)
    containerName: exportContainerName
    principalId: app.outputs.principalId
  }
}

output functionAppName string = app.outputs.name
output functionAppHostName string = app.outputs.hostName
output storageAccountName string = storage.outputs.name
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output appInsightsName string = monitoring.outputs.appInsightsName
output principalId string = app.outputs.principalId
output functionKeyCommand string = 'az functionapp keys list --resource-group ${resourceGroup().name} --name ${app.outputs.name} --query functionKeys.default --output tsv'
