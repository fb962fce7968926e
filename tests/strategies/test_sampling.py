from strategies.fedavg import FedAvg


class _Grid:
    def __init__(self, ids):
        self.ids = ids

    def get_node_ids(self):
        return self.ids


def test_sampling_keeps_full_64_bit_node_ids_and_is_seeded():
    ids = [2**64 - 1 - 7 * i for i in range(1000)]  # Flower node ids use all 64 bits
    strategy = FedAvg(model_fn=lambda arch: None, node_config={}, clients_per_round=10, seed=3)
    picked = strategy.sample_nodes(_Grid(ids), server_round=1)
    assert len(picked) == 10 and set(picked) <= set(ids)
    assert picked == strategy.sample_nodes(_Grid(ids), server_round=1)
    assert picked != strategy.sample_nodes(_Grid(ids), server_round=2)


def test_all_nodes_when_clients_per_round_is_zero():
    strategy = FedAvg(model_fn=lambda arch: None, node_config={}, clients_per_round=0)
    assert strategy.sample_nodes(_Grid([5, 3, 9]), server_round=1) == [3, 5, 9]
