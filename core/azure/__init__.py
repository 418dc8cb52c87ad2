"""The one boundary to the Azure SDKs: clients, the error mapper, raw table requests."""
