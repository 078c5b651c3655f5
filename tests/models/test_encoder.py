"""The one encoder: raw values of any kind become the same model inputs wherever they come from."""

import sys

import numpy as np
import pandas as pd
import pytest

from tamor.models.encoder import MISSING, OOV, CategoricalEncoding, Encoder, as_text, canonical_text, parse_number, tier_index
from tamor.models.feature_spec import NumericField

ENCODER = Encoder(
    dataset="toy",
    categorical=[
        CategoricalEncoding(name="year", side="context", vocabulary={"94": 1, "95": 2}),
        CategoricalEncoding(name="page", side="context", vocabulary={"home": 1, MISSING: 2, "首页": 3}),
        CategoricalEncoding(name="brand", side="item", vocabulary={"b1": 1}),
    ],
    numeric=[NumericField(name="amount", side="user", mean=1.0, std=2.0, log1p=True)],
    tiers=["new", "low", "high"],
    tier_thresholds=[0.01, 100.0],
    scenarios=["<other>", "fund", "gold"],
)


WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())  # all that str.strip() removes


def test_as_text_is_canonical_text_on_every_value_of_every_column_type():
    """The vectorised column paths agree with the one-value definition, value by value."""
    rng = np.random.default_rng(0)
    floats = np.concatenate([rng.normal(size=500) * 10.0 ** rng.integers(-9, 22, 500), rng.integers(-999, 999, 200) / 4,
                             rng.lognormal(0, 8, 2000), rng.random(500) * 1e-3,  # Arrow's notation differs from Python's in both
                             [0.0, -0.0, 1e-4, 1e15 + 0.5, 2.0**53 - 0.5, 1e16, 2.0**63, 1e300, np.inf, -np.inf, np.nan, 5e-324]])
    with np.errstate(over="ignore"):  # 1e300 as float32 is inf on purpose
        floats32 = floats.astype(np.float32)
    columns = [
        pd.Series(floats), pd.Series(floats32), pd.Series(rng.integers(-10**12, 10**12, 300)),
        pd.Series(np.array([0, 7, 2**64 - 1], dtype=np.uint64)), pd.Series([True, False, True]),
        pd.Series([" a ", "b", "", "  ", None, "94"], dtype=object), pd.Series(["x ", None, "y"], dtype="string"),
        pd.Series([b" 94 ", 94.0, 94, "94", None, float("nan"), True, "  "], dtype=object),
        pd.Series([f"{c}x{c}" for c in WHITESPACE] + [WHITESPACE, "\u200bx\u200b", "é ", pd.NA]),  # Arrow's trim
        pd.Series([" a ", None, "b \u3000"], dtype="str"), pd.Series(["a\ud800 ", "b "], dtype=object),  # a lone surrogate
    ]
    for column in columns:
        for strip in (True, False):
            expected = [canonical_text(None if pd.isna(v) else v, strip) for v in column.astype(object)]
            assert as_text(column, strip).tolist() == expected, column.dtype


NUMBER_TEXTS = ["0", "-0", "+1.5", "1.", ".5", "1e5", "1E-5", "1e400", "1e-400", "-3", "9007199254740993", "1" * 30,
                "0.1", "2.675", "inf", "-Infinity", "nan", "NaN", None, repr(np.pi), repr(1 / 3)]
NOT_NUMBERS = [" 1.5", "1.5 ", "0x10", "1_000", "1,5", "", "abc", "True", "١"]


@pytest.mark.parametrize("junk", [None, *NOT_NUMBERS])
def test_parse_number_reads_text_as_pandas_does_whichever_parser_takes_the_column(junk):
    rng = np.random.default_rng(0)
    numbers = [*NUMBER_TEXTS, *map(repr, rng.lognormal(0, 5, 300)), *map(str, rng.integers(-10**12, 10**12, 300))]
    text = pd.Series([*numbers, junk], index=np.arange(len(numbers) + 1) * 2, dtype=object)  # an index parse_number keeps
    expected = pd.to_numeric(text, errors="coerce").astype("float64")
    got = parse_number(text)
    assert got.dtype == np.float64 and got.index.equals(text.index)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())  # NaN where NaN; -0.0 and 0.0 are equal


@pytest.mark.parametrize("raw, text", [(94, "94"), (94.0, "94"), (np.float32(94.0), "94"), ("94", "94"), (" 94 ", "94"),
                                       (np.int64(94), "94"), (b"u223", "u223"), (True, "True"), (0.5, "0.5"),
                                       (None, None), (float("nan"), None), ("", None), ("  ", None), ("首页", "首页")])
def test_canonical_text_makes_one_category_of_every_spelling(raw, text):
    assert canonical_text(raw) == text
    assert as_text(pd.Series([raw], dtype=object)).iloc[0] == text


def test_request_values_and_frames_encode_alike():
    frame = pd.DataFrame({"year": ["94", "95", "96", None], "page": ["home", None, "首页", "elsewhere"], "amount": ["3", "inf", "-1e300", None]})
    offline = ENCODER.encode(frame, sides=["context", "user"])
    online = [ENCODER.encode({"year": y, "page": p, "amount": a}, sides=["context", "user"], n=1)
              for y, p, a in [(94.0, "home", 3), (95, None, float("inf")), (96, " 首页 ", -1e300), (None, "elsewhere", None)]]
    for key, column in offline.items():
        np.testing.assert_array_equal(column, np.concatenate([o[key] for o in online]))
    assert offline["f_year"].tolist() == [1, 2, OOV, OOV]  # unseen and missing without a <missing> id are OOV
    assert offline["f_page"].tolist() == [1, 2, 3, OOV]  # missing has its own id when train had it
    z = (np.log1p(3.0) - 1.0) / 2.0
    np.testing.assert_allclose(offline["f_amount"], [z, 0.0, 0.0, 0.0], rtol=1e-6)  # inf and beyond ±1e100 are missing: the mean


def test_a_scalar_context_broadcasts_and_absent_features_are_missing():
    cols = ENCODER.encode({"year": 95}, n=3)
    assert cols["f_year"].tolist() == [2, 2, 2] and cols["f_page"].tolist() == [2, 2, 2] and cols["f_brand"].tolist() == [OOV] * 3
    assert cols["f_amount"].dtype == np.float32 and cols["f_year"].dtype == np.int64


def test_tiers_scenarios_fingerprint_and_file(tmp_path):
    assert tier_index(np.array([0.0, 0.01, 99.9, 100.0, 1e9]), [0.01, 100.0]).tolist() == [0, 1, 1, 2, 2]
    assert ENCODER.scenario_ids(["gold", "fund ", "unknown", None]).tolist() == [2, 1, 0, 0]
    ENCODER.save(tmp_path / "encoder.json")
    assert Encoder.load(tmp_path).fingerprint == ENCODER.fingerprint
    other = ENCODER.model_copy(update={"tier_thresholds": [1.0, 100.0]})
    assert other.fingerprint != ENCODER.fingerprint
    spec = ENCODER.feature_spec(tasks=[])
    assert {f.name: f.vocab_size for f in spec.categorical} == {"year": 3, "page": 4, "brand": 2}
