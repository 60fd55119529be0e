"""The Llama 3 architecture, its tokenizer, checkpoint interop and KV-cache inference."""
