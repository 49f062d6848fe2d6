"""The benchmark harness: ``hes bench`` / ``python -m bench`` (harness.py), and the simulator
scale and security-session measurements (``python -m bench.sim_scale``,
``python -m bench.security_sessions``). Figures go to the JSON/markdown files next to them."""
