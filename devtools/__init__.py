"""Local development services (Azurite, an FTP server) for the demo and the tests. Not deployed."""
