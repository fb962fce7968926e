"""The server state's named groups of arrays (a module kept under a prefix), through a
checkpoint."""

import numpy as np

from strategies.state import ServerState


def test_arrays_put_under_a_prefix_come_back_alone_and_survive_a_checkpoint(tmp_path):
    state = ServerState(data={"seed/x": np.zeros(2), "gen-other/w": np.ones(1)})
    state.put_data_under("gen/", {"w": np.arange(3.0), "bn.num_batches_tracked": np.array(4)})
    assert set(state.data) == {"seed/x", "gen-other/w", "gen/w", "gen/bn.num_batches_tracked"}
    state.save(tmp_path / "s.npz")
    back = ServerState.load(tmp_path / "s.npz").data_under("gen/")
    assert set(back) == {"w", "bn.num_batches_tracked"}  # not gen-other/: the slash counts
    assert np.array_equal(back["w"], np.arange(3.0)) and int(back["bn.num_batches_tracked"]) == 4
    assert ServerState().data_under("gen/") == {}
