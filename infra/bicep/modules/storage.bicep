// Host storage account: the Functions host (AzureWebJobsStorage), the runs queue, Filecast's tables,
// the delta-state container and the Flex Consumption deployment container. Keys are disabled:
// every client (host, Filecast, deployment) authenticates with Microsoft Entra ID.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string
param location string
param tags object
@description('Queue the scheduler and the HTTP API send run messages to (core/settings.py RUNS_QUEUE).')
param runsQueueName string
@description('Blob container for bulky delta state (FILECAST_STATE_CONTAINER).')
param stateContainerName string
@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches the account over its public endpoint; access needs an Entra token with a data role (shared keys are off), see infra/README.md for the private-endpoint variant.
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: the public endpoint stays enabled for a Function App without VNet integration.
  // checkov:skip=CKV_AZURE_206: LRS is enough for queue messages, run records and delta state; a lost state only causes a full re-export (at-least-once delivery), not data loss.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    isLocalUserEnabled: false
    isSftpEnabled: false
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource runsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: runsQueueName
}

// Filecast creates its tables (catalog, runs, state, leases) on first use; the identity's
// Storage Table Data Contributor role allows that.
resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainer.name}'
