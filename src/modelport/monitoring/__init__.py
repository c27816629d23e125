"""Monitoring: Prometheus metrics, structured logs (docs/monitoring.md)."""
