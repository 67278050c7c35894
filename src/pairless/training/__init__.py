"""Training learned denoisers: the engine, the shared self-supervised path, model folders, the lock."""
