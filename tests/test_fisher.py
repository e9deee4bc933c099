# test_fisher.py: the backpropagation of mixrt.quant.fisher through the numpy decoder, against
# central finite differences of the log-likelihood on the tiny generated model, and the Fisher
# diagonal it accumulates.
import numpy as np
import pytest

from mixrt.quant.fisher import LINEAR_KINDS, gradients, output_fisher


def _model(random_model):
    from mixrt.format import read_mixrt

    model = read_mixrt(random_model)
    weights = {name: np.asarray(t.array(), np.float32) for name, t in model.tensors.items()}
    return model.metadata, weights


def _loader(weights, override=None):
    def load(name):
        if override is not None and name == override[0]:
            return override[1]
        return weights[name]  # KeyError for an absent head: tied
    return load


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_gradients_match_finite_differences(random_model, kind):
    """dL/dW = sum_t g_t x_t^T along a random direction D (entries of the weights' own spread)
    equals (L(W + eD) - L(W - eD)) / 2e. The decoder computes in float32: with e = 1e-2 the
    rounding of L (~1e-5 of ~100) is ~1e-4 of the quotient and its O(e^2) truncation ~1e-4;
    2e-3 leaves room for the float32 backward."""
    hparams, weights = _model(random_model)
    rng = np.random.default_rng(1)
    window = list(rng.integers(0, weights["token_embd.weight"].shape[0], 24))
    labels = rng.integers(0, weights["token_embd.weight"].shape[0], 24)
    layer = int(hparams["llama.n_layers"]) // 2
    name = f"blk.{layer}.{kind}.weight"
    inputs = []
    _, grads = gradients(hparams, _loader(weights), [window], [labels], inputs=inputs)
    grads = {name: per_window[0] for name, per_window in grads}
    inputs = inputs[0]
    assert set(grads) == {f"blk.{i}.{k}.weight" for i in range(int(hparams["llama.n_layers"]))
                          for k in LINEAR_KINDS}
    w = weights[name]
    direction = rng.standard_normal(w.shape) * w.std()
    predicted = float(np.einsum("tc,tk,ck->", grads[name].astype(np.float64),
                                inputs[name].astype(np.float64), direction))
    eps = 1e-2
    (plus,), _ = gradients(hparams, _loader(weights, (name, w + eps * direction)), [window],
                           [labels])
    (minus,), _ = gradients(hparams, _loader(weights, (name, w - eps * direction)), [window],
                            [labels])
    measured = (plus - minus) / (2 * eps)
    assert abs(predicted - measured) <= 2e-3 * abs(measured) + 1e-6


def test_fisher_diagonal(random_model):
    hparams, weights = _model(random_model)
    rng = np.random.default_rng(2)
    # windows of different lengths
    windows = [list(rng.integers(0, weights["token_embd.weight"].shape[0], n)) for n in (16, 9)]
    fisher = output_fisher(hparams, _loader(weights), windows, seed=3)
    for name, f in fisher.items():
        assert f.shape == (weights[name].shape[0],) and f.dtype == np.float64
        assert np.all(f >= 0) and np.all(np.isfinite(f)) and f.sum() > 0
    # the same seed samples the same labels
    again = output_fisher(hparams, _loader(weights), windows, seed=3)
    for name in fisher:
        np.testing.assert_array_equal(fisher[name], again[name])
