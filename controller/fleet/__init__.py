"""The installed fleet: cluster and speaker health, alerts, telemetry history, remote
actions, thresholds."""
