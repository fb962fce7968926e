"""bouquet ServerApp: parse the run config, then hand over to the round loop."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the whole configuration before round 1, then run the experiment."""
    from .config import load_config
    from .runner import run_experiment

    # Flower has already merged the defaults and the user's overrides into run_config; the
    # Run still says which keys the user set, and those beat the experiment file.
    explicit = set(grid.run.override_config)
    cfg = load_config(dict(context.run_config), explicit)
    run_experiment(grid, cfg)
