"""The status metrics collector: cluster-wide metrics on NATS and for Prometheus."""
