"""Delta state: packed row fingerprints by generation, in Table Storage or in memory."""
