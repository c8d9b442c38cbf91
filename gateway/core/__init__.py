"""What every layer uses: settings, errors, logs, metrics, limits on requests, background tasks."""
