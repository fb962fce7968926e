import pytest

import protocol
from protocol import ErrorCode, NodeError, action


def test_action_is_the_handler_name():
    assert action(protocol.TRAIN_H2L) == "h2l"
    assert action(protocol.TRAIN_DENSE_GENERATOR) == "dense_generator"
    with pytest.raises(ValueError, match="default handler"):
        action(protocol.TRAIN)


def _message_types() -> list[str]:
    return [v for k, v in vars(protocol).items() if k.startswith(("TRAIN", "QUERY"))]


def test_message_types_and_keys_are_unique():
    keys = [v for k, v in vars(protocol).items() if k.endswith("_KEY")]
    assert len(_message_types()) == len(set(_message_types()))
    assert len(keys) == len(set(keys))


def test_every_message_type_has_a_client_handler():
    from client_app.app import app

    # A bare category ("train") goes to the default handler, registered as "train.default".
    routed = {t if "." in t else f"{t}.default" for t in _message_types()}
    assert routed == set(app._registered_funcs)


def test_node_error_carries_its_code():
    err = NodeError(ErrorCode.SEED_SET_MISSING, "gone")
    assert err.code == 4101 and err.reason == "gone" and str(err) == "gone"
