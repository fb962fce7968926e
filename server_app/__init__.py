"""bouquet ServerApp: configuration, the round loop and a run's outputs."""
