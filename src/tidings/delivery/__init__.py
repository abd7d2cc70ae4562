"""Recording and executing the plan: deliveries, their states, the worker, dead letters."""
