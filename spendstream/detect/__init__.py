"""Detection: what deserves an alert, as pure functions over windows and batches.

- ``anomaly``: spend anomalies and new spenders per team, feature, customer and feature × customer
  (rules: ``spend``);
- ``retry_storm``: storms, slow burns and agent loops per feature and customer (rules: ``storm``);
- ``noise``: what a subject usually spends and how much it wanders, learned from hours (pure);
- ``baseline``: that model, refreshed once an hour into ``detector_baselines``;
- ``subject_hours``: the refresh's history, each closed hour's per-subject numbers computed once (and again
  when marked) into ``detector_subject_hours``;
- ``schedules``: the refresh's memory of days of the month (a month-end job), longer than its four weeks;
- ``incidents`` and ``state``: one incident per subject until it resolves, kept in ``detector_incidents``;
- ``budgets``: daily/monthly budgets crossed or about to be;
- ``gpu``: idle GPUs that cost money, saturated KV caches (fed by the worker's GPU loop);
- ``unpriced``: models with no price, once a day per model (fed by the worker);
- ``conflicts``: copies of stored events arriving with other content (fed by the writer's resolution).
- ``windows``: exact windows from the rollups (whole periods) and raw (edges); ``layered``: days, then hours,
  then raw, as budgets read them.

Alerts are stored in ``alerts``; delivering them is ``spendstream.alerting``'s job.
"""
