# fisher.py: how much each output channel of each decoder linear layer matters to the model's
# next-token distributions, measured by backpropagation through the numpy decoder (LayerStack of
# quant/calibration.py): the diagonal of the Fisher information of the model's own predictions with
# respect to every linear layer's outputs. A weight error dW of layer i then costs about
#   KL(f16 || quantized) ~= 1/2 sum_c F_i[c] (dW_c H_i dW_c^T)       (per token, second order)
# which makes the errors of different layers comparable (the planner's sensitivities, plan.py).
# Tested by tests/test_fisher.py (gradients against finite differences).
#
#   fisher = output_fisher(hparams, load, windows)      # name -> float64 [d_out]
#   logliks, grads = gradients(hparams, load, windows)  # (name, [dL/dy per window]) from the top
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .calibration import LayerStack, _rms_norm, layer_biases

LINEAR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# Positions whose logits are formed at once (bounds the [positions, vocabulary] temporaries).
HEAD_ROWS = 64


def _rms_norm_backward(x: np.ndarray, weight: np.ndarray, eps: float, dy: np.ndarray) -> np.ndarray:
    """dL/dx of y = x / rms(x) * weight, given dL/dy (rows of x [T, d])."""
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32) + eps)
    gdy = dy * weight
    return (r * gdy - x * (r ** 3) * np.mean(gdy * x, axis=-1, keepdims=True)).astype(np.float32)


class _Layer:
    """One decoder layer's weights and the forward/backward of one window through it."""

    def __init__(self, stack: LayerStack, load, layer: int, hparams: dict):
        p = f"blk.{layer}."
        self.stack = stack
        self.b = layer_biases(hparams, load, layer)
        self.names = {kind: p + kind + ".weight" for kind in LINEAR_KINDS}
        self.w = {kind: np.asarray(load(name), np.float32) for kind, name in self.names.items()}
        self.attn_norm = np.asarray(load(p + "attn_norm.weight"), np.float32)
        self.ffn_norm = np.asarray(load(p + "ffn_norm.weight"), np.float32)

    def _heads(self, x: np.ndarray):
        """Rotated q [nkv, group, T, hd], rotated k and v [nkv, T, hd] of normed inputs x [T, d]."""
        s, w, b = self.stack, self.w, self.b
        t, hd, nkv = x.shape[0], s.head_dim, s.n_kv_heads
        q = s._rope((x @ w["attn_q"].T + b["attn_q"]).reshape(t, s.n_heads, hd))
        k = s._rope((x @ w["attn_k"].T + b["attn_k"]).reshape(t, nkv, hd))
        v = (x @ w["attn_v"].T + b["attn_v"]).reshape(t, nkv, hd)
        q = q.transpose(1, 0, 2).reshape(nkv, s.n_heads // nkv, t, hd)
        return q, k.transpose(1, 0, 2), v.transpose(1, 0, 2)

    def _probs(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Attention probabilities [nkv, group, T, T]."""
        scores = (q @ k[:, None].transpose(0, 1, 3, 2)) * np.float32(1 / math.sqrt(q.shape[-1]))
        scores += self.stack.mask
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        return scores

    def _activations(self, x: np.ndarray):
        """The layer's forward pass for inputs x [T, d]: (normed attention input, rotated q,
        rotated k, v, attention probabilities, attention output a, residual after attention,
        normed FFN input, gate, up, SwiGLU output)."""
        s, w, b = self.stack, self.w, self.b
        t = x.shape[0]
        xn1 = _rms_norm(x, self.attn_norm, s.eps)
        q, k, v = self._heads(xn1)
        probs = self._probs(q, k)
        a = (probs @ v[:, None]).reshape(s.n_heads, t, s.head_dim).transpose(1, 0, 2).reshape(t, -1)
        x2 = x + a @ w["attn_output"].T + b["attn_output"]
        xn2 = _rms_norm(x2, self.ffn_norm, s.eps)
        gate, up = xn2 @ w["ffn_gate"].T + b["ffn_gate"], xn2 @ w["ffn_up"].T + b["ffn_up"]
        act = (gate / (1.0 + np.exp(-gate)) * up).astype(np.float32)  # LayerStack.swiglu
        return xn1, q, k, v, probs, a, x2, xn2, gate, up, act

    def forward(self, x: np.ndarray) -> np.ndarray:
        *_, x2, _, _, _, act = self._activations(x)
        return x2 + act @ self.w["ffn_down"].T + self.b["ffn_down"]

    def backward(self, x: np.ndarray, dx3: np.ndarray, grads: dict,
                 inputs: Optional[dict] = None) -> np.ndarray:
        """dL/dx of the layer's input x [T, d] given dL/d(output) dx3; stores dL/d(output) of
        each linear layer in grads[name] ([T, d_out], float32), and its input in inputs[name] if
        inputs is a dict. Runs the layer's forward pass again (one layer's activations at a
        time)."""
        s, w = self.stack, self.w
        t, hd, nh, nkv = x.shape[0], s.head_dim, s.n_heads, s.n_kv_heads
        group = nh // nkv
        xn1, q, k, v, probs, a, x2, xn2, gate, up, act = self._activations(x)
        sig = 1.0 / (1.0 + np.exp(-gate))
        if inputs is not None:
            inputs.update({self.names[kind]: xn1 for kind in ("attn_q", "attn_k", "attn_v")})
            inputs.update({self.names[kind]: xn2 for kind in ("ffn_gate", "ffn_up")})
            inputs[self.names["attn_output"]] = a
            inputs[self.names["ffn_down"]] = act
        # feed-forward
        grads[self.names["ffn_down"]] = dx3
        dact = dx3 @ w["ffn_down"]
        dgate = dact * up * sig * (1.0 + gate * (1.0 - sig))
        dup = dact * gate * sig
        grads[self.names["ffn_gate"]], grads[self.names["ffn_up"]] = dgate, dup
        dx2 = dx3 + _rms_norm_backward(x2, self.ffn_norm, s.eps,
                                       dgate @ w["ffn_gate"] + dup @ w["ffn_up"])
        # attention
        grads[self.names["attn_output"]] = dx2
        do = (dx2 @ w["attn_output"]).reshape(t, nh, hd).transpose(1, 0, 2).reshape(nkv, group, t, hd)
        dprobs = do @ v[:, None].transpose(0, 1, 3, 2)
        dv = (probs.transpose(0, 1, 3, 2) @ do).sum(axis=1)  # [nkv, T, hd]
        dscores = probs * (dprobs - (dprobs * probs).sum(axis=-1, keepdims=True))
        dscores *= np.float32(1 / math.sqrt(hd))
        dq = dscores @ k[:, None]  # [nkv, group, T, hd]
        dk = (dscores.transpose(0, 1, 3, 2) @ q).sum(axis=1)  # [nkv, T, hd]
        dq = self._unrope(dq.reshape(nh, t, hd).transpose(1, 0, 2)).reshape(t, nh * hd)
        dk = self._unrope(dk.transpose(1, 0, 2)).reshape(t, nkv * hd)
        dv = dv.transpose(1, 0, 2).reshape(t, nkv * hd)
        grads[self.names["attn_q"]], grads[self.names["attn_k"]] = dq, dk
        grads[self.names["attn_v"]] = dv
        dxn1 = dq @ w["attn_q"] + dk @ w["attn_k"] + dv @ w["attn_v"]
        return dx2 + _rms_norm_backward(x, self.attn_norm, s.eps, dxn1)

    def _unrope(self, d: np.ndarray) -> np.ndarray:
        """The transpose of the rotate-half RoPE rotation applied to gradients [T, heads, hd]."""
        s = self.stack
        half = s.head_dim // 2
        a, b = d[..., :half], d[..., half:]
        return np.concatenate([a * s.cos + b * s.sin, -a * s.sin + b * s.cos], axis=-1)


def _head(load):
    """The output head (the embedding when tied) and the final norm weight, float32."""
    try:
        head = load("output.weight")
    except KeyError:
        head = load("token_embd.weight")
    return np.asarray(head, np.float32), np.asarray(load("output_norm.weight"), np.float32)


def gradients(hparams: dict, load, windows: list, labels: Optional[list] = None,
              rng: Optional[np.random.Generator] = None, inputs: Optional[list] = None,
              progress=None):
    """Per window of token ids: the log-likelihood L = sum_t log p(label_t | tokens <= t), and
    dL/d(output) [T, d_out] of every decoder linear layer, as a generator of (name, list of the
    windows' arrays) from the last layer to the first (the backward pass runs as it is consumed;
    each layer's arrays are then dropped). labels: the target of each position per window, or
    None to sample each from the model's own distribution there (with rng), which makes
    E[grad grad^T] the Fisher information. Layer-major: each
    layer's weights are loaded twice (forward, backward) and dropped, so memory is the windows'
    activations plus one layer. inputs: a list that receives, per window, a dict of every linear
    layer's input [T, d_in] (for tests). progress: a tqdm bar advanced once per layer pass.
    Returns (log-likelihoods [per window], generator)."""
    n_layers = int(hparams["llama.n_layers"])
    embedding = load("token_embd.weight")
    stacks = [LayerStack(hparams, embedding, [list(window)]) for window in windows]
    # forward, keeping each layer's input
    xs = [[stack.x[0] for stack in stacks]]
    for i in range(n_layers):
        layer = _Layer(stacks[0], load, i, hparams)
        out = []
        for stack, x in zip(stacks, xs[-1]):
            layer.stack = stack
            out.append(layer.forward(x))
        xs.append(out)
        if progress is not None:
            progress.update(1)
    head, out_norm = _head(load)
    rng = rng or np.random.default_rng(0)
    logliks, dx = [], []
    for w, (stack, x) in enumerate(zip(stacks, xs[-1])):
        xn = _rms_norm(x, out_norm, stack.eps)
        dxn = np.empty_like(xn)
        loglik = 0.0
        for r0 in range(0, len(x), HEAD_ROWS):
            logits = xn[r0:r0 + HEAD_ROWS] @ head.T
            logits -= logits.max(axis=-1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=-1, keepdims=True)
            rows = np.arange(len(probs))
            if labels is None:
                cum = np.cumsum(probs, axis=-1, dtype=np.float64)
                target = np.minimum((cum < rng.random((len(rows), 1)) * cum[:, -1:]).sum(axis=-1),
                                    probs.shape[-1] - 1)
            else:
                target = np.asarray(labels[w][r0:r0 + HEAD_ROWS], np.int64)
            loglik += float(np.log(np.maximum(probs[rows, target].astype(np.float64),
                                              1e-300)).sum())
            probs *= -1  # dL/dlogits = onehot(target) - probs
            probs[rows, target] += 1.0
            dxn[r0:r0 + HEAD_ROWS] = probs @ head
        logliks.append(loglik)
        dx.append(_rms_norm_backward(x, out_norm, stack.eps, dxn))
    del head
    if inputs is not None:
        inputs.extend({} for _ in windows)

    def backward():
        for i in reversed(range(n_layers)):
            layer = _Layer(stacks[0], load, i, hparams)
            per_window = [{} for _ in windows]
            for w, stack in enumerate(stacks):
                layer.stack = stack
                dx[w] = layer.backward(xs[i][w], dx[w], per_window[w],
                                       None if inputs is None else inputs[w])
            xs.pop()
            for name in layer.names.values():
                yield name, [g[name] for g in per_window]
            if progress is not None:
                progress.update(1)
    return logliks, backward()


def output_fisher(hparams: dict, load, windows: list, seed: int = 0, progress: bool = False) -> dict:
    """name -> float64 [d_out]: the mean over the windows' positions of (dL/dy_c)^2 for every
    output channel c of every decoder linear layer, L the log-likelihood of labels sampled from the
    model itself (one per position): the diagonal of the Fisher information of the model's
    predictions with respect to the layer's outputs. About three forward passes of the float32
    decoder (SmolLM2-135M, 2 cores: ~10 s per 512 tokens)."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=2 * int(hparams["llama.n_layers"]), unit="layer", desc="sensitivities")
    try:
        _, grads = gradients(hparams, load, windows, rng=np.random.default_rng(seed),
                             progress=bar)
        count = sum(len(w) for w in windows)
        return {name: sum(np.einsum("tc,tc->c", g, g, dtype=np.float64) for g in per_window) / count
                for name, per_window in grads}
    finally:
        if bar is not None:
            bar.close()
