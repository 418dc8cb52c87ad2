"""Filecast core: everything but the Azure Functions triggers (it never imports azure.functions)."""
