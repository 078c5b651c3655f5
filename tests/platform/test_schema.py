"""The tiered-log schema: shipped schemas load; a bad schema fails with a message naming the problem."""

import pytest
import yaml

from tamor.platform.schema import SchemaError, load_schema


def write(tmp_path, **overrides):
    raw = yaml.safe_load(load_schema.__globals__["SCHEMA_DIR"].joinpath("synthetic.yaml").read_text())
    raw.update(overrides)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", ["synthetic", "census_income"])
def test_shipped_schemas_load(name):
    schema = load_schema(name)
    assert schema.name == name
    assert len(schema.tiers.names) == len(schema.tiers.thresholds) + 1
    assert schema.present_tasks


def test_synthetic_schema_names_the_five_tasks_on_one_chain():
    schema = load_schema("synthetic")
    assert [t.name for t in schema.tasks] == ["click", "conversion", "invest", "large_invest", "high_holding"]
    assert [t.after for t in schema.tasks[:4]] == [None, "click", "conversion", "invest"]
    assert schema.tasks[4].level == "user"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tiers": {"column": "holdings", "names": ["new", "low", "high"], "thresholds": [1.0]}}, "need 2 thresholds"),
        ({"tasks": [{"name": "click", "column": "click", "after": "view"}]}, "after='view' is not a task"),
        ({"tasks": [{"name": "click", "column": "page"}]}, "cannot also be features"),
        ({"splitt": {"by": "time"}}, "splitt"),
        ({"timestamp": None}, "split.by=time needs a timestamp"),
        ({"tasks": [{"name": "click", "column": "click", "tiers": ["vip"]}]}, "unknown tiers ['vip']"),
    ],
)
def test_bad_schema_is_a_clear_error(tmp_path, overrides, message):
    with pytest.raises(SchemaError) as err:
        load_schema(write(tmp_path, **overrides))
    assert message in str(err.value)


def test_unknown_schema_name_lists_the_shipped_ones():
    with pytest.raises(SchemaError, match="census_income"):
        load_schema("no_such_schema")


def test_absent_label_is_declared_not_faked(tmp_path):
    tasks = [{"name": "click", "column": "click"}, {"name": "invest", "column": None}]
    schema = load_schema(write(tmp_path, tasks=tasks))
    assert [t.name for t in schema.present_tasks] == ["click"]


def test_tier_and_scenario_columns_are_features_for_every_model_unless_declared_otherwise():
    schema = load_schema("census_income")
    implied = {f.column: f for f in schema.model_features if f.column not in {g.column for g in schema.features}}
    assert implied["stock_dividends"].side == "user" and implied["stock_dividends"].type == "numeric"
    assert implied["class_worker"].side == "item" and implied["class_worker"].type == "categorical"
    hidden = schema.model_copy(update={"tiers": schema.tiers.model_copy(update={"feature": False}),
                                       "scenario": schema.scenario.model_copy(update={"feature": False})})
    assert hidden.model_features == hidden.features
