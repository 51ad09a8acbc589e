"""Ways in for usage that does not come from the Python emitter.

- :mod:`~spendstream.ingest.otlp` and :mod:`~spendstream.ingest.genai`: OpenTelemetry
  GenAI spans, as the Collector's Kafka exporter writes them, turned into UsageEvents
  (pure functions; the worker's consumer loop runs them, agents/stages.py).
- :mod:`~spendstream.ingest.http`: ``spendstream ingest``, POST /v1/usage for services
  that cannot run a Kafka producer.
"""
