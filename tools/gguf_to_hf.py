# gguf_to_hf.py: the command line of mixrt.devtools.gguf_to_hf: builds a Hugging Face Llama
# checkpoint directory (float32 model.safetensors, config and tokenizer files) from a llama GGUF.
#   python tools/gguf_to_hf.py MODEL.gguf HF_FILES_DIR OUT_DIR
import argparse

from mixrt.devtools.gguf_to_hf import gguf_to_hf


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Build a Hugging Face checkpoint directory from a llama GGUF file.")
    parser.add_argument("gguf", help="llama GGUF file")
    parser.add_argument("hf_files_dir", help="directory with the model's config.json and "
                                             "tokenizer files")
    parser.add_argument("out_dir", help="checkpoint directory to write")
    args = parser.parse_args()
    print(f"wrote {gguf_to_hf(args.gguf, args.hf_files_dir, args.out_dir)}")


if __name__ == "__main__":
    main()
