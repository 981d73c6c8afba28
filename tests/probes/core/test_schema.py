"""The results schema: sweep conditions round-trip, undeclared names fail loudly, old runs are
refused with a message naming the schema version."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyses.results import store
from analyses.sweeps.plan import Unit
from dashboard import frames
from probes.core import schema
from probes.core.schema import SweepCondition


@pytest.mark.parametrize(
    "condition",
    [
        SweepCondition("zero"),
        SweepCondition("scale", 2.0, "heads", heads="L3H1,L5H2"),
        SweepCondition("zero", None, "top", 4, "sink/alpha@0"),
        SweepCondition("mean", None, "random", 4, "retrieval/retrieval_score", seed=7),
        SweepCondition("softpag", 0.25, "top", 2, "sink/alpha@0[x]-asc"),
    ],
)
def test_sweep_conditions_round_trip(condition):
    assert SweepCondition.decode(condition.encode()) == condition


def test_plan_units_encode_through_the_schema():
    top = Unit("ioi", "zero", ((3, 1), (4, 2)), group=SweepCondition.top_group(2, "sink/alpha@0"))
    assert top.condition == "zero|top2:sink/alpha@0"
    control = SweepCondition.top_group(2, "sink/alpha@0", seed=1, random=True)
    decoded = SweepCondition.decode(Unit("ioi", "zero", ((3, 0), (4, 1)), group=control).condition)
    assert (decoded.selection, decoded.k, decoded.seed) == ("random", 2, 1)
    scaled = Unit("ioi", "scale", ((3, 1),), 0.5, group=SweepCondition.heads_group(((3, 1),)))
    assert SweepCondition.decode(scaled.condition) == SweepCondition(
        "scale", 0.5, "heads", heads="L3H1"
    )
    assert Unit("lm", "mean", ((0, 2),)).condition == "mean"


def test_an_undeclared_metric_fails_the_reader_instead_of_blanking_a_page():
    assert schema.metric("sink", "alpha") == "alpha"
    with pytest.raises(schema.SchemaError, match="declares no metric 'alfa'"):
        schema.metric("sink", "alfa")
    table = pd.DataFrame(columns=list(schema.COLUMNS))
    with pytest.raises(schema.SchemaError, match=r"retrieval.*'retrieval_scores'"):
        frames.head_values(table, "retrieval", "retrieval_scores")


def test_the_store_and_the_schema_agree():
    assert list(schema.COLUMNS) == store.COLUMNS
    assert set(schema.ROW_FIELDS) | {"run_id", "model", "probe"} == set(schema.COLUMNS)


def test_a_run_of_the_old_schema_is_refused_naming_the_version(tmp_path):
    path = tmp_path / "results.parquet"
    old = pa.table({"probe": ["sink"], "value": [1.0]}).replace_schema_metadata(
        {store.SCHEMA_KEY: b"1"}
    )
    pq.write_table(old, path)
    with pytest.raises(store.StoreError, match="schema version 1; this headlab reads version 2"):
        store.read_table(path)
