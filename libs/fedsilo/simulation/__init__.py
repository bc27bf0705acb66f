"""Simulated sites for loading the control plane (benchmarks and their scaled-down tests);
not part of a site's deployment."""
