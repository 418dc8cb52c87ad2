"""The control plane: stores, the use cases (service), the HTTP API, alerts, the console."""
