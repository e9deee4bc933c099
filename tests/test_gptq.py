# test_gptq.py: the calibrated mix quantizer (mixrt.quant.gptq) and the calibration that feeds it
# (mixrt.quant.calibration): GPTQ against round-to-nearest on identity and correlated Hessians,
# the outlier budget and residuals, the validity of what it returns (also for the alternatives of
# tools/ablate_gptq.py, whose default reproduces it bit for bit), and the Hessians captured
# through the runtime (and the numpy layer stack used for sequential quantization) on the tiny
# generated model.
import numpy as np
import pytest

from mixrt.quant.gptq import (column_gains, hessian_weighted_error, mix_permutation,
                              quantize_mix_gptq)
from mixrt.quant.layouts import dequantize_mix, pack_mix, padded_k2
from mixrt.quant.rtn import quantize_mix_rtn

from conftest import tool_module

ablate_gptq = tool_module("ablate_gptq")
VARIANTS, quantize_variant = ablate_gptq.VARIANTS, ablate_gptq.quantize_variant

# [M, K, k4]: square, K not a multiple of 64 (2-bit padding), a partial last 2-bit group,
# no 4-bit columns, and a 2-bit part longer than one block of 16 groups (two super-scales).
CASES = [(24, 128, 32), (16, 200, 64), (8, 96, 0), (12, 640, 64)]


def weights(rng, m, k):
    """Heavy-tailed weights with a few large input columns, like trained layers."""
    w = rng.standard_t(5, size=(m, k)).astype(np.float32) * 0.02
    w[:, rng.choice(k, size=max(1, k // 50), replace=False)] *= 6
    return w


def correlated_hessian(rng, k, n=None):
    """A mean x x^T of correlated inputs with uneven channel scales, like real activations."""
    n = n or 4 * k
    mixing = rng.standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    x = rng.standard_normal((n, k)) @ mixing * np.exp(rng.standard_normal(k))
    return x.T @ x / n


def frobenius(w, mix):
    return float(((dequantize_mix(mix) - w) ** 2).sum())


@pytest.mark.parametrize("m,k,k4", CASES)
def test_identity_hessian_matches_or_beats_rtn(m, k, k4):
    rng = np.random.default_rng(k)
    w = weights(rng, m, k)
    n_out = m * k // 200
    rtn = quantize_mix_rtn(w, k4, n_out)
    gptq = quantize_variant(w, np.eye(k), k4, n_out, select="range")
    # same strips as the range-chosen ones of round-to-nearest (identity: no act-order)
    np.testing.assert_array_equal(gptq.perm, rtn.perm)
    assert frobenius(w, gptq) <= frobenius(w, rtn) * (1 + 1e-6)
    # the clipping searches only lower the error
    plain = quantize_variant(w, np.eye(k), k4, 0, select="range", clip2=1, clip4=1)
    assert frobenius(w, plain) >= frobenius(w, gptq)


@pytest.mark.parametrize("m,k,k4", CASES)
def test_correlated_hessian_lowers_weighted_error(m, k, k4):
    rng = np.random.default_rng(1000 + k)
    w = weights(rng, m, k)
    h = correlated_hessian(rng, k)
    n_out = m * k // 300
    rtn = quantize_mix_rtn(w, k4, n_out)
    info = {}
    gptq = quantize_mix_gptq(w, h, k4, n_out, info=info)
    e_rtn = hessian_weighted_error(w, dequantize_mix(rtn), h)
    e_gptq = hessian_weighted_error(w, dequantize_mix(gptq), h)
    assert e_gptq < 0.8 * e_rtn
    assert info["error"] == pytest.approx(e_gptq)
    assert 0 < info["error_rel"] < 1


@pytest.mark.parametrize("variant", [None, *VARIANTS])
@pytest.mark.parametrize("m,k,k4", CASES)
def test_result_is_valid_with_exact_outliers(m, k, k4, variant):
    """The quantizer (variant None) and each alternative of tools/ablate_gptq.py."""
    rng = np.random.default_rng(7 + k)
    w = weights(rng, m, k)
    h = correlated_hessian(rng, k)
    n_out = m * k // 100 + 1
    mix = quantize_mix_gptq(w, h, k4, n_out) if variant is None else \
        quantize_variant(w, h, k4, n_out, **VARIANTS[variant])
    mix.validate()  # shapes, code ranges, CSR rules, finite values, super-scales > 0
    np.testing.assert_array_equal(np.sort(mix.perm), np.arange(k))
    assert mix.k4 == k4 and mix.q2.shape == (m, k - k4)
    assert mix.nnz == n_out
    assert set(mix.cols.tolist()) <= set(mix.perm[:k - k4].tolist())  # only 2-bit columns
    g2 = padded_k2(k - k4) // 32
    real_groups = -(-(k - k4) // 32)
    assert np.all(mix.scale_code2[:, real_groups:g2] == 0)
    assert np.all(mix.zero2[:, real_groups:] == 0)
    assert np.all(np.isfinite(dequantize_mix(mix)))


def test_outlier_residuals_restore_the_weights():
    """With H = identity the sweep feeds no error forward, so the target of an outlier is the
    original weight: dense value + fp16 residual = w up to the residual's fp16 rounding."""
    rng = np.random.default_rng(3)
    m, k, k4 = 32, 256, 64
    w = weights(rng, m, k)
    n_out = 150
    mix = quantize_mix_gptq(w, np.eye(k), k4, n_out)
    rows = np.repeat(np.arange(m), np.diff(mix.row_ptr.astype(np.int64)))
    restored = dequantize_mix(mix)[rows, mix.cols]
    residual = mix.vals.astype(np.float32)
    assert np.all(np.abs(restored - w[rows, mix.cols]) <= np.abs(residual) * 2 ** -10 + 1e-7)
    # the outliers are the worst-fitting weights: removing them lowers the error a lot
    none = quantize_mix_gptq(w, np.eye(k), k4, 0)
    assert frobenius(w, mix) < 0.9 * frobenius(w, none)
    with pytest.raises(ValueError):
        quantize_mix_gptq(w, np.eye(k), k4, m * (k - k4) + 1)


def test_strip_choice_and_gains():
    rng = np.random.default_rng(5)
    m, k = 16, 128
    w = weights(rng, m, k)
    diag = np.exp(rng.standard_normal(k))
    h = np.diag(diag)
    gains = column_gains(w, h)
    assert gains.shape == (k,) and np.all(gains >= 0)
    # scaling a column's input energy scales its gain
    h2 = h.copy()
    h2[5, 5] *= 10
    assert column_gains(w, h2)[5] == pytest.approx(10 * gains[5])
    perm = mix_permutation(w, h, 32)
    np.testing.assert_array_equal(np.sort(perm[-32:]), np.sort(np.argsort(-gains)[:32]))
    # act-order: decreasing H_jj inside each part
    assert np.all(np.diff(diag[perm[:-32]]) <= 0) and np.all(np.diff(diag[perm[-32:]]) <= 0)
    with pytest.raises(TypeError):
        quantize_mix_gptq(w, h, 32, 0, no_such_option=1)
    np.testing.assert_array_equal(quantize_mix_gptq(w, h, 32, 0).perm, perm)


@pytest.mark.parametrize("m,k,k4", CASES)
def test_ablation_default_is_the_quantizer(m, k, k4):
    """tools/ablate_gptq.py rebuilds the quantizer from its steps: without options it gives the
    same packed parts, so its variants differ from the quantizer only where they say."""
    rng = np.random.default_rng(20 + k)
    w = weights(rng, m, k)
    h = correlated_hessian(rng, k)
    n_out = m * k // 100 + 1
    for a, b in zip(pack_mix(quantize_mix_gptq(w, h, k4, n_out)),
                    pack_mix(quantize_variant(w, h, k4, n_out))):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="sweep: expected one of 2first, 4first, found 'x'"):
        quantize_variant(w, h, k4, n_out, sweep="x")


def test_dead_inputs_and_singular_hessian():
    rng = np.random.default_rng(9)
    m, k = 8, 64
    w = weights(rng, m, k)
    x = rng.standard_normal((10, k))  # rank 10 < 64
    x[:, 3] = 0  # a dead input channel
    h = x.T @ x / 10
    mix = quantize_mix_gptq(w, h, 32, 5)
    mix.validate()
    assert np.all(np.isfinite(dequantize_mix(mix)))


def _tokens_text():
    return ("The quick brown fox jumps over the lazy dog. " * 40
            + "Pack my box with five dozen liquor jugs; how vexingly quick daft zebras jump! " * 20)


def test_collect_hessians_on_tiny_model(random_model):
    from mixrt.format import read_mixrt
    from mixrt.quant.calibration import SITE_OF, calibration_windows, collect_hessians

    import mixrt

    meta = read_mixrt(random_model).metadata
    d, f, n_layers = meta["llama.hidden_size"], meta["llama.ffn_size"], meta["llama.n_layers"]
    q_width = meta["llama.n_heads"] * meta["llama.head_dim"]
    ctx = 64
    text = _tokens_text()
    n_windows = len(mixrt.load(random_model).tokenize(text, add_bos=False,
                                                             special=False)) // ctx
    assert n_windows >= 4
    hessians = collect_hessians(random_model, text, n_tokens=3 * ctx, ctx=ctx, threads=1,
                                progress=False)
    assert hessians.n_tokens == 3 * ctx
    widths = {0: d, 1: q_width, 2: d, 3: f}
    assert set(hessians) == {(layer, site) for layer in range(n_layers) for site in range(4)}
    for (layer, site), h in hessians.items():
        assert h.dtype == np.float64 and h.shape == (widths[site], widths[site])
        np.testing.assert_array_equal(h, h.T)
        assert np.linalg.eigvalsh(h).min() > -1e-6 * np.trace(h)
        assert hessians.counts[(layer, site)] == 3 * ctx
    assert hessians.for_tensor("blk.1.ffn_down.weight") is hessians[(1, SITE_OF["ffn_down"])]
    # a subset of layers
    only = collect_hessians(random_model, text, n_tokens=ctx, ctx=ctx, threads=1,
                            progress=False, layers=[1])
    assert set(only) == {(1, site) for site in range(4)}
    # windows spread over the text, whole, non-overlapping
    tokens = list(range(1000))
    wins = calibration_windows(tokens, 256, 100)
    assert len(wins) == 2 and all(len(w) == 100 for w in wins) and wins[0][0] == 0


def test_layer_stack_matches_the_runtime(random_model):
    """The numpy decoder of sequential calibration sees the same layer inputs as the runtime."""
    from mixrt.format import read_mixrt
    from mixrt.quant.calibration import (SITE_OF, calibration_windows, collect_hessians,
                                         run_layer_stack)

    import mixrt

    ctx = 64
    text = _tokens_text()
    hessians = collect_hessians(random_model, text, n_tokens=2 * ctx, ctx=ctx, threads=1,
                                progress=False)
    tokens = mixrt.load(random_model).tokenize(text, add_bos=False, special=False)
    windows = calibration_windows(tokens, 2 * ctx, ctx)
    model = read_mixrt(random_model)
    seen = {}

    def keep(name, w, h):
        seen[(int(name.split(".")[1]), SITE_OF[name.split(".")[2]])] = h
        return w

    run_layer_stack(model.metadata, lambda name: np.asarray(model.tensors[name].array(),
                                                            np.float32),
                    windows, keep, sequential=False)
    assert set(seen) == set(hessians)
    for key, h in hessians.items():
        np.testing.assert_allclose(seen[key], h, rtol=1e-4, atol=1e-5 * np.abs(h).max())


@pytest.mark.parametrize("sequential", [True, False])
def test_calibrated_mix_on_tiny_model(random_model, sequential):
    from mixrt.format import read_mixrt
    from mixrt.quant.calibration import calibration_windows
    from mixrt.quant.gptq import calibrated_mix
    from mixrt.quant.plan import plan_mix

    import mixrt

    model = read_mixrt(random_model)
    linear = {name: t.dims for name, t in model.tensors.items()
              if len(t.dims) == 2 and name.startswith("blk.")}
    plan = plan_mix(linear.values(), 4.0, 0.005)
    storage = {name: (k4, nnz) for name, k4, nnz in zip(linear, plan.k4, plan.nnz)}
    tokens = mixrt.load(random_model).tokenize(_tokens_text(), add_bos=False,
                                                      special=False)
    windows = calibration_windows(tokens, 128, 64)
    report = {}
    out = calibrated_mix(model.metadata,
                         lambda name: np.asarray(model.tensors[name].array(), np.float32),
                         windows, storage, sequential=sequential, report=report)
    assert list(out) == list(storage)  # file order
    for name, mix in out.items():
        mix.validate()
        assert mix.shape == tuple(linear[name])
        assert (mix.k4, mix.nnz) == storage[name]
        assert 0 < report["errors"][name] < 1
    assert report["n_tokens"] == 128


def test_kl_gains_weigh_rows_by_fisher():
    """kl_gains = 1/2 column_gains with each row's squared-error savings weighted by its Fisher
    entry: uniform Fisher 2 gives column_gains exactly; a row of Fisher 0 counts for nothing."""
    from mixrt.quant.gptq import kl_gains

    rng = np.random.default_rng(11)
    w = weights(rng, 16, 128)
    h = correlated_hessian(rng, 128)
    np.testing.assert_allclose(kl_gains(w, h, np.full(16, 2.0)), column_gains(w, h), rtol=1e-9)
    fisher = np.ones(16)
    fisher[3] = 0.0
    changed = w.copy()
    changed[3] *= 50  # a row of no consequence, whatever its errors
    np.testing.assert_allclose(kl_gains(changed, h, fisher), kl_gains(w, h, fisher), rtol=1e-9)
    assert np.all(kl_gains(w, h, fisher) >= 0)
    # linear in the Fisher (before the clip at 0 of a column's net saving)
    np.testing.assert_allclose(kl_gains(w, h, 3 * fisher), 3 * kl_gains(w, h, fisher), rtol=1e-9)
