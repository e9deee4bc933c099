"""mixrt.devtools: what the tests and the tools in tools/ share, installed with the package so
that both import it by name: random models in real shapes (random_model: Hugging Face
directories, .mixrt files in any recipe, the byte model), small tokenizers trained on the
repository's text (train_tokenizer), a GGUF to Hugging Face directory builder (gguf_to_hf), copies of .mixrt files with tensors
decoded to f32 (decoded_copy) and the independent float64 numpy Llama (reference_llama). Not part of the runtime API."""
