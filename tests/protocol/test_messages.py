import pytest

import protocol
from protocol import ErrorCode, NodeError, action


def test_action_is_the_handler_name():
    assert action(protocol.TRAIN_H2L) == "h2l"
    assert action(protocol.TRAIN_DENSE_GENERATOR) == "dense_generator"
    with pytest.raises(ValueError, match="default handler"):
        action(protocol.TRAIN)


def test_message_types_and_keys_are_unique():
    types = [v for k, v in vars(protocol).items() if k.startswith(("TRAIN", "QUERY"))]
    keys = [v for k, v in vars(protocol).items() if k.endswith("_KEY")]
    assert len(types) == len(set(types)) == 10
    assert len(keys) == len(set(keys))


def test_node_error_carries_its_code():
    err = NodeError(ErrorCode.SEED_SET_MISSING, "gone")
    assert err.code == 4101 and err.reason == "gone" and str(err) == "gone"
