"""Notifications when jobs change state (Slack incoming webhooks)."""
