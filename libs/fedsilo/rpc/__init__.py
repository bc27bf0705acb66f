"""gRPC plumbing shared by every service: channels, server start-up, errors, metrics."""
