"""Cost models from TOML and flags: units, every field, and one-line errors naming the field.

.venv/bin/pytest tests/simulator/test_costs.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from schedules import build
from simulator import CostError, CostModel
from simulator.costfile import costs_from_dict, dumps_costs, load_costs, with_overrides
from simulator.units import parse_bandwidth, parse_bytes, parse_time

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (2, 2.0),
        (0.5, 0.5),
        ("250 us", 250e-6),
        ("1.5ms", 1.5e-3),
        ("3 ns", 3e-9),
        ("2 s", 2.0),
        ("1e-3", 1e-3),
    ],
)
def test_times_take_units(text: object, seconds: float) -> None:
    assert parse_time(text, "forward") == pytest.approx(seconds)


def test_sizes_and_bandwidths_take_units() -> None:
    assert parse_bytes("64 MiB", "x") == 64 * 2**20
    assert parse_bytes("2 GB", "x") == 2 * 10**9
    assert parse_bandwidth("25 GB/s", "x") == 25e9
    assert parse_bandwidth("100 Gbit/s", "x") == 12.5e9
    assert parse_bandwidth("inf", "x") == math.inf


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_time, "-1 ms", "forward: must be a finite non-negative time"),
        (parse_time, "fast", "forward: 'fast' is not a number"),
        (parse_time, "1 sec", "forward: unknown unit 'sec' in '1 sec'"),
        (parse_time, True, "forward: expected a time"),
        (parse_bandwidth, "10 GBs", "forward: unknown unit 'GBs' in '10 GBs'"),
        (parse_bandwidth, 0, "forward: bandwidth must be positive"),
        (parse_bytes, "1 GiBs", "forward: unknown unit 'GiBs'"),
    ],
)
def test_bad_numbers_name_the_field(parse, value: object, message: str) -> None:
    with pytest.raises(CostError, match=message.replace("(", r"\(")):
        parse(value, "forward")


def test_the_example_file_loads_with_every_field() -> None:
    costs = load_costs(ROOT / "simulator/presets/example.toml")
    assert len(costs.stages) == 4
    assert costs.stages[0].forward == pytest.approx(1.0e-3)  # [stages.0] overrides [defaults]
    assert costs.stages[1].forward == pytest.approx(1.2e-3)  # [defaults]
    assert (costs.stages[3].backward, costs.stages[3].input_grad) == (
        pytest.approx(3e-3),
        pytest.approx(1.8e-3),
    )
    assert costs.stages[2].stash_bytes == 512 * 2**20 and costs.stages[2].weight_bytes == int(1.5 * 2**30)
    assert (costs.latency, costs.bandwidth, costs.overlap) == (pytest.approx(5e-6), 400e9, True)
    assert (costs.data_parallel, costs.dp_bandwidth) == (4, 50e9)
    assert (costs.jitter, costs.jitter_sigma, costs.seed) == ("lognormal", 0.05, 1)
    assert costs.stragglers == ((3, 1.1),) and costs.straggler_factor(3) == 1.1
    assert (costs.microbatch_size, costs.sequence_length, costs.memory_capacity) == (8, 1024, 80 * 10**9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[stages.0]\nforward = 1\n[stages.2]\nforward = 1\n", r"\[stages.1\] missing"),
        ("[defaults]\nforward = -2\n", "defaults.forward: must be a finite non-negative time"),
        ('[defaults]\nforward = "quick"\n', "defaults.forward: 'quick' is not a number"),
        ('[defaults]\nbackwards = "2 ms"\n', "defaults.backwards: unknown key"),
        ('[link]\nbandwidth = "10 GBs"\n', "link.bandwidth: unknown unit 'GBs'"),
        ('[link]\noverlap = "yes"\n', "link.overlap: expected true or false"),
        ('optimizer = "adam"\n', "optimizer: unknown 'adam'"),
        ('[jitter]\ndistribution = "gamma"\n', "jitter: unknown distribution 'gamma'"),
        ("[stragglers]\nfirst = 2\n", r"stragglers.first \(rank\): expected a whole number"),
        ("colour = 1\n", "unknown key 'colour'"),
        (
            "[defaults]\nbackward = 1\nbackward_weight = 2\n",
            r"defaults.backward_weight \(2.0\) exceeds defaults.backward",
        ),
    ],
)
def test_bad_cost_files_get_one_line_naming_the_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "costs.toml"
    path.write_text(text)
    with pytest.raises(CostError, match=f"costs.toml: {message}") as error:
        load_costs(path)
    assert "\n" not in str(error.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CostError, match=r"missing\.toml: cannot read cost file"):
        load_costs(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[defaults\n")
    with pytest.raises(CostError, match=r"bad\.toml: not valid TOML"):
        load_costs(tmp_path / "bad.toml")


def test_a_file_must_cover_the_schedules_stages(tmp_path: Path) -> None:
    path = tmp_path / "three.toml"
    path.write_text("[stages.0]\n[stages.1]\n[stages.2]\n")
    costs = load_costs(path)
    costs.check_stages(3)
    with pytest.raises(CostError, match=r"three\.toml: cost model has 3 stages, the schedule needs 4"):
        costs.check_stages(4)


def test_interleaved_chunks_share_their_model_stage() -> None:
    # Two model stages of different speed; 2 ranks x 2 chunks = 4 virtual stages, each 1/2 of an entry:
    # virtual stages 0, 1 are model stage 0's halves, 2, 3 model stage 1's.
    from simulator.plan import make_plan

    costs = costs_from_dict({"stages": {"0": {"forward": 2}, "1": {"forward": 4}}})
    schedule = build("interleaved", 2, 2, chunks=2)
    plan = make_plan(schedule, costs)
    forwards = {
        action.stage: duration
        for rank in range(2)
        for action, duration in zip(schedule.actions[rank], plan.durations[rank], strict=True)
        if action.kind.value == "F"
    }
    assert forwards == {0: 1.0, 1: 1.0, 2: 2.0, 3: 2.0}


def test_flags_override_every_stage_and_accept_units() -> None:
    base = costs_from_dict({"stages": {"0": {"forward": 1}, "1": {"forward": 3}}})
    costs = with_overrides(
        base,
        forward="2ms",
        backward="4 ms",
        backward_weight="1ms",
        optimizer_step="10us",
        latency="5us",
        bandwidth="10 GB/s",
        overlap=False,
        data_parallel="2",
        seed=4,
        jitter="normal",
        jitter_sigma="0.1",
    )
    assert [stage.forward for stage in costs.stages] == [pytest.approx(2e-3)] * 2
    assert costs.stages[1].input_grad == pytest.approx(3e-3)
    assert (costs.latency, costs.bandwidth, costs.overlap, costs.data_parallel) == (
        pytest.approx(5e-6),
        1e10,
        False,
        2,
    )
    assert (costs.seed, costs.jitter, costs.jitter_sigma) == (4, "normal", 0.1)
    with pytest.raises(CostError, match="--tf: unknown unit 'sec'"):
        with_overrides(base, forward="2 sec")
    with pytest.raises(CostError, match="--dp: must be at least 1"):
        with_overrides(base, data_parallel=0)


def test_cost_model_rejects_impossible_values() -> None:
    with pytest.raises(CostError, match=r"stage\.forward: must be a finite time >= 0"):
        CostModel.uniform(forward=-1)
    with pytest.raises(CostError, match="bandwidth: must be a positive number"):
        CostModel.uniform(bandwidth=0)
    with pytest.raises(CostError, match="jitter_sigma"):
        CostModel.uniform(jitter="uniform", jitter_sigma=1.5)
    with pytest.raises(CostError, match="stragglers"):
        CostModel.uniform(stragglers=((0, 0.0),))


def test_a_cost_model_saves_to_toml_and_loads_back_equal(tmp_path: Path) -> None:
    # How a model fitted from a measured trace reaches `pipesim simulate --costs`.
    from simulator.analytic import cost_model
    from simulator.presets import device, model

    for costs in (
        cost_model(model("gpt2-small"), device("a100-80gb"), stages=3, optimizer="muon", data_parallel=2),
        load_costs(ROOT / "simulator/presets/example.toml"),
        CostModel.uniform(),
    ):
        path = tmp_path / "fitted.toml"
        path.write_text(dumps_costs(costs))
        assert load_costs(path) == costs
