# compare_transformers.py: the runtime against Hugging Face transformers on every architecture
# variant of mixrt.devtools.model_variants: a random tiny checkpoint per variant, converted to an
# f32 .mixrt, and transformers' own model class for it (LlamaForCausalLM, MistralForCausalLM,
# Qwen2ForCausalLM) in float64; prints the largest logit difference over a prompt per variant.
# Needs torch and transformers (not mixrt dependencies; not run in CI). The dynamic-NTK variant is
# compared decoding token by token (transformers recomputes that scaling per forward call).
#   python tools/compare_transformers.py --tokenizer SPM_DIR [--tokens 48]
import argparse
import tempfile
from pathlib import Path

import numpy as np


def transformers_logits(hf_dir: Path, ids: list, stepwise: bool) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float64, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        if not stepwise:
            return model(torch.tensor([ids])).logits[0].numpy()
        rows, past = [], None
        for token in ids:
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            rows.append(out.logits[0, -1].numpy())
            past = out.past_key_values
        return np.stack(rows)


def main() -> None:
    import mixrt
    import transformers
    from mixrt.convert import convert
    from mixrt.devtools.model_variants import VARIANTS
    from mixrt.devtools.random_model import make_random_model

    parser = argparse.ArgumentParser(description="mixrt against transformers on every Llama-family variant")
    parser.add_argument("--tokenizer", required=True, help="a directory with a sentencepiece tokenizer.model "
                                                           "(tools/train_tokenizer.py)")
    parser.add_argument("--tokens", type=int, default=48, help="prompt length (48)")
    args = parser.parse_args()
    print(f"transformers {transformers.__version__}; prompt {args.tokens} random tokens; float64 vs mixrt f32")
    with tempfile.TemporaryDirectory() as tmp:
        for name in VARIANTS:
            hf = make_random_model(Path(tmp) / name, shape="tiny", tokenizer=Path(args.tokenizer) / "tokenizer.model",
                                   seed=1, variant=name)
            file = Path(tmp) / f"{name}.mixrt"
            convert(hf, file, dtype="f32", progress=False)
            model = mixrt.load(file, backend="cpu", kv_cache="f32")
            ids = np.random.default_rng(7).integers(3, model.n_vocab, args.tokens).tolist()
            got = model.eval_logits(ids)
            want = transformers_logits(hf, ids, stepwise=name == "rope-dynamic")
            print(f"{name:14s} {type(transformers.AutoConfig.from_pretrained(hf)).__name__:14s} "
                  f"max |logit difference| {np.abs(got - want).max():.2e} (logits up to {np.abs(want).max():.1f})")


if __name__ == "__main__":
    main()
