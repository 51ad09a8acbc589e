"""Detection: what deserves an alert, as pure functions over windows and batches.

- ``anomaly``: spend anomalies per key against time-of-day-and-week baselines;
- ``retry_storm``: features whose failed attempts spike;
- ``budgets``: daily/monthly budgets crossed or about to be;
- ``gpu``: idle GPUs that cost money, saturated KV caches (fed by the worker's GPU loop);
- ``unpriced``: models with no price, once a day per model (fed by the worker);
- ``conflicts``: copies of stored events arriving with other content (fed by the writer's resolution).
- ``windows``: the windows the first three read, exact, from the rollups (whole periods) and raw (edges).

Alerts are stored in ``alerts``; delivering them is ``spendstream.alerting``'s job.
"""
