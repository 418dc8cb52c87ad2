"""Writing files: formats, parts and gzip (the spool), file names, OpenPGP encryption."""
