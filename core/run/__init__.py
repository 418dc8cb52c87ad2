"""One run: the engine (source to destination), its thread/loop bridge, the run record."""
