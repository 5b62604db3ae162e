"""Domination on (cost, loss), both minimised: utils.pareto and export's all-pareto filter."""

from types import SimpleNamespace

from matta_rec.export.run_export import Size, pareto_sizes
from matta_rec.utils.pareto import dominates, non_dominated


def test_dominates():
    assert dominates((1, 0.2), (2, 0.3))
    assert dominates((1, 0.2), (1, 0.3))  # equal cost, lower loss
    assert dominates((1, 0.2), (2, 0.2))  # lower cost, equal loss
    assert not dominates((1, 0.2), (1, 0.2))  # equal points: neither
    assert not dominates((1, 0.3), (2, 0.2))  # a trade-off


def test_non_dominated_on_a_hand_made_family():
    points = [
        (100, 0.30),  # 0 cheapest: front
        (150, 0.31),  # 1 dearer and worse than 0: dominated
        (200, 0.25),  # 2 front
        (200, 0.26),  # 3 same cost as 2, worse: dominated
        (300, 0.25),  # 4 same loss as 2, dearer: dominated
        (400, 0.20),  # 5 front
        (400, 0.20),  # 6 equal to 5: both stay
        (500, 0.21),  # 7 dominated by 5
    ]
    assert non_dominated(points) == [0, 2, 5, 6]
    assert non_dominated([]) == []
    assert non_dominated([(1, 1.0)]) == [0]


def test_all_pareto_keeps_the_front_and_every_size_named_explicitly():
    def size(name, flops, pareto=True):
        return Size(SimpleNamespace(name=name), SimpleNamespace(flops=flops), pareto=pareto)

    chosen = [size("student", 100), size("wnw:1", 150), size("wnw:2", 200), size("ta", 400),
              size("mix@ta:ta,-", 150, pareto=False)]
    loss = {"student": 0.30, "wnw:1": 0.31, "wnw:2": 0.25, "ta": 0.26, "mix@ta:ta,-": 0.9}
    kept, table = pareto_sizes(chosen, loss)
    assert [s.name for s in kept] == ["student", "wnw:2", "mix@ta:ta,-"]
    assert {r["spec"]: r["dominated"] for r in table} == {
        "student": False, "wnw:1": True, "wnw:2": False, "ta": True}
    assert all(r["holdout_auc_loss"] == loss[r["spec"]] for r in table)
