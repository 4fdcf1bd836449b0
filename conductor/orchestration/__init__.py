"""Fleet orchestration: sw-manager patch strategies and rolling re-image strategies.

Empty until the orchestration work lands; the strategy engine (phases -> stages ->
steps, persisted) will live here, between the service facade and the engine.
"""
