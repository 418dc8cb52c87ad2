// Storage Blob Data Contributor for the Function App's identity on an export storage account that
// this deployment does not own (an `azure_blob` destination with `account_url`, DESIGN.md §1),
// scoped to one container when a container name is given. Deployed at that account's resource group.

param storageAccountName string
@description('Container to scope the role to; empty grants it on the whole account.')
param containerName string
param principalId string

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = if (!empty(containerName)) {
  name: '${storageAccountName}/default/${containerName}'
}

resource accountScoped 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (empty(containerName)) {
  name: guid(account.id, principalId, storageBlobDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource containerScoped 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(containerName)) {
  name: guid(container.id, principalId, storageBlobDataContributor)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
