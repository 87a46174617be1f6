"""Operating a Mimir server: Prometheus metrics, health checks, pulling models, the catalogue."""
