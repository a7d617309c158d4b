import numpy as np
import pytest

from common.compression import CompressionConfig, compress, decompress, from_fields, to_fields
from common.config import parse_run_config
from common.errors import ConfigError


def _params(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    reference = {
        "item_embedding": rng.normal(size=(50, 8)).astype(np.float32),
        "item_bias": rng.normal(size=50).astype(np.float32),
    }
    params = {
        n: a + rng.normal(scale=0.05, size=a.shape).astype(np.float32) for n, a in reference.items()
    }
    return params, reference


def test_int8_round_trip_error_is_within_half_a_step_per_row() -> None:
    params, reference = _params()
    config = CompressionConfig("int8")
    encoded = compress(params, reference, config)
    assert encoded["item_embedding::q"].dtype == np.int8
    assert encoded["item_embedding::scale"].shape == (50,)
    decoded = decompress(encoded, reference, config)
    for name in params:
        delta = (params[name] - reference[name]).reshape(len(encoded[f"{name}::scale"]), -1)
        step = np.abs(delta).max(axis=1, keepdims=True) / 127
        error = np.abs(decoded[name] - params[name]).reshape(delta.shape)
        assert np.all(error <= step / 2 + 1e-6)
    wire = sum(a.nbytes for a in encoded.values())
    assert wire < sum(a.nbytes for a in params.values()) / 2.5  # int8 + a scale per row of 8


def test_topk_keeps_exactly_the_largest_entries() -> None:
    params, reference = _params(1)
    config = CompressionConfig("topk", topk_fraction=0.1)
    encoded = compress(params, reference, config)
    decoded = decompress(encoded, reference, config)
    delta = (params["item_embedding"] - reference["item_embedding"]).ravel()
    kept = np.flatnonzero(decoded["item_embedding"].ravel() != reference["item_embedding"].ravel())
    assert len(kept) == 40  # ceil(0.1 * 400)
    threshold = np.sort(np.abs(delta))[-40]
    assert np.all(np.abs(delta[kept]) >= threshold)
    np.testing.assert_allclose(
        decoded["item_embedding"].ravel()[kept], params["item_embedding"].ravel()[kept], rtol=1e-6
    )


def test_a_zero_delta_decodes_to_the_reference() -> None:
    _, reference = _params()
    for kind in ("int8", "topk"):
        config = CompressionConfig(kind)
        decoded = decompress(compress(reference, reference, config), reference, config)
        for name in reference:
            np.testing.assert_array_equal(decoded[name], reference[name])


def test_a_malformed_update_is_refused() -> None:
    params, reference = _params()
    config = CompressionConfig("topk")
    encoded = compress(params, reference, config)
    encoded["item_bias::index"] = encoded["item_bias::index"] + 1000
    with pytest.raises(ValueError, match="out of range"):
        decompress(encoded, reference, config)
    del encoded["item_bias::value"]
    with pytest.raises(ValueError, match="must carry exactly"):
        decompress(encoded, reference, config)


def test_settings_round_trip_and_secagg_is_refused() -> None:
    config = parse_run_config({"compression": "topk", "topk-fraction": 0.05})
    assert config.compression == CompressionConfig("topk", 0.05)
    assert from_fields(to_fields(config.compression)) == config.compression
    assert to_fields(CompressionConfig()) == {}
    with pytest.raises(ConfigError, match="compression must be one of"):
        parse_run_config({"compression": "zip"})
    with pytest.raises(ConfigError, match="topk-fraction"):
        parse_run_config({"topk-fraction": 0})
    with pytest.raises(ConfigError, match="secagg=true cannot be combined"):
        parse_run_config({"compression": "int8", "secagg": True})
