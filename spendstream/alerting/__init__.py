"""Alert delivery: Slack, PagerDuty and signed webhooks, from the ``alerts`` table as an outbox."""
