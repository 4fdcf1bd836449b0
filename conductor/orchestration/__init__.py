"""Fleet orchestration: StarlingX sw-manager patch strategies and metalcast's rolling
re-image strategy (image-update), one strategy of any type at a time.

``model`` (strategy -> phases -> stages -> steps, StarlingX's JSON), ``options`` (the
create options), ``hosts`` (StarlingX host states from nodes and host-agent reports,
and what has no counterpart here), ``patch_build`` and ``image_build`` (build checks
and stages, pure),
``lifecycle`` (apply, abort, running a phase), ``steps`` (what each step kind does),
``fleet`` (the appliance the steps act on), ``alarms`` (900.101-103) and
``orchestrator`` (the facade the API calls and the runner thread). Persistence is
conductor/db/strategies.py; the REST API is api/starlingx/orchestration.py.
"""
