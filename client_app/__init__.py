"""bouquet ClientApp: message handlers and per-method local training."""
