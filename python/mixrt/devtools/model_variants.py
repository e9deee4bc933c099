# model_variants.py: the architecture variants of the Llama family as their Hugging Face
# config.json files state them (Llama 3.x and other RoPE scalings, biases, an explicit head_dim,
# Mistral's sliding window, Qwen2), for random checkpoints in real layout
# (random_model.make_random_model(variant=...)), and hf_config(), the config.json a checkpoint of
# a variant carries, written with the keys and values transformers writes for that family.
# Tested by tests/test_model_variants.py.
from __future__ import annotations

# variant -> config.json entries over a plain Llama's. The tiny shape's context is 256 positions;
# the scalings use a short original context so that prompts of a few dozen tokens reach the
# positions where they differ from plain RoPE.
VARIANTS = {
    "llama": {},
    "rope-linear": {"rope_scaling": {"rope_type": "linear", "factor": 4.0}},
    # dynamic NTK changes the rotation only past max_position_embeddings (the original context)
    "rope-dynamic": {"max_position_embeddings": 24, "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}},
    "rope-yarn": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}},
    "llama3": {"rope_theta": 500000.0,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
    "bias": {"attention_bias": True, "mlp_bias": True},
    # Mistral-Nemo style: head_dim x heads differs from hidden_size
    "head-dim": {"head_dim": 32},
    "mistral": {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 16,
                "rope_theta": 1000000.0, "attention_bias": None, "mlp_bias": None},
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "rope_theta": 1000000.0,
              "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "use_sliding_window": False,
              "sliding_window": 131072, "max_window_layers": 2, "attention_bias": None, "mlp_bias": None},
}


def hf_config(base: dict, variant: str) -> dict:
    """base (a plain Llama's config.json entries) with the variant's; None values drop a key
    (e.g. attention_bias, which MistralConfig and Qwen2Config do not have)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}, found {variant!r}")
    config = {**base, **VARIANTS[variant]}
    return {key: value for key, value in config.items() if value is not None}


def bias_names(config: dict, layer: int) -> list[str]:
    """The HF names of the bias tensors a checkpoint with this config.json has in one layer."""
    p = f"model.layers.{layer}."
    if config["model_type"] == "qwen2":
        kinds = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]
    else:
        kinds = (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
                 if config.get("attention_bias") else [])
        kinds += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] if config.get("mlp_bias") else []
    return [p + kind + ".bias" for kind in kinds]
