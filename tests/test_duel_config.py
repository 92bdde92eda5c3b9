import pytest

from bcarena.envs.duel import DuelConfig, DuelConfigError


def test_defaults_give_10_fps_decisions():
    cfg = DuelConfig()
    assert cfg.tick_rate_hz == 60 and cfg.action_repeat == 6
    assert cfg.decision_hz == 10.0
    assert cfg.max_decisions == 300  # 30 s round


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("max_hp", -5, "DuelConfig.max_hp must be a number > 0, got -5"),
        ("tick_rate_hz", 0, "DuelConfig.tick_rate_hz must be a positive integer, got 0"),
        ("action_repeat", 2.5, "DuelConfig.action_repeat must be a positive integer, got 2.5"),
        ("walk_speed", "fast", "DuelConfig.walk_speed must be a number > 0, got 'fast'"),
        ("start_gap", 50.0, "must fit in arena_width"),
    ],
)
def test_invalid_values_name_the_field(field, value, needle):
    with pytest.raises(DuelConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        DuelConfig(**{field: value})


def test_unknown_keys_are_errors_listing_valid_keys():
    with pytest.raises(DuelConfigError, match=r"unknown key\(s\) \['max_health'\]; valid keys are .*max_hp"):
        DuelConfig.from_dict({"max_health": 50})


def test_skill_dicts_are_validated_with_their_name():
    data = DuelConfig().to_dict()
    data["skills"][2]["cooldown"] = -1
    with pytest.raises(DuelConfigError, match=r"skills\[2\] \(special\)\.cooldown must be an integer >= 0, got -1"):
        DuelConfig.from_dict(data)
    data["skills"][2]["cooldown"] = 300
    data["skills"][0]["speed"] = 1
    with pytest.raises(DuelConfigError, match=r"skills\[0\] \(light\): unknown key\(s\) \['speed'\]"):
        DuelConfig.from_dict(data)


def test_round_trip_through_dict():
    cfg = DuelConfig(max_hp=150.0, round_seconds=20.0)
    assert DuelConfig.from_dict(cfg.to_dict()) == cfg
