"""What a person runs beside the daemon: lookup, status, retry, check-config, demo."""
