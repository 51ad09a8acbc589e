"""An evaluation of the detectors that does not flatter them (issue 18).

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval [--seeds 1 2 3 4 5] [--shapes conv code mooncake]

- ``traces``: the real traces whose per-minute volume and request sizes shape the traffic;
- ``traffic``: seeded per-minute traffic per leaf (team × feature × customer), incidents and negative controls;
- ``rules``: the detectors run over that traffic exactly as the package computes them (current, new, LiteLLM-style);
- ``score``: recall, precision, false alarms, delays, dollars before the first alert, messages per destination;
- ``real_path``: one run through the real path: events -> chdb store -> ``AlertCycle`` -> a local HTTP receiver.
"""
