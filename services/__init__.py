"""One folder per service: configuration, server start-up and servicers (wiring only)."""
