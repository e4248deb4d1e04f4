"""Write a small random Llama or Qwen2 model as a GGUF file with weights and a BPE tokenizer, through the
``gguf`` package, the way llama.cpp's converter lays it out (for Llama, q and k rows permuted for its rotary
layout; Qwen2 keeps HF's order and adds the q/k/v biases), so that the real transformers GGUF path can be
tested without a download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (transformers undoes it when it loads a GGUF file)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def tiny_qwen2(tokenizer: PreTrainedTokenizerFast, seed: int = 0, layers: int = 2, hidden: int = 64,
               tied: bool = True) -> Qwen2ForCausalLM:
    """Qwen2.5's layout at toy size: q/k/v biases, grouped-query attention, full rotary, and (as the 0.5B and
    1.5B models) the LM head tied to the embeddings; the biases are drawn large enough to matter."""
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=tied,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                projection.bias.normal_(0.0, 0.5)
    return model


def write_llama_gguf(model: LlamaForCausalLM | Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast,
                     path: str | Path) -> Path:
    """Write ``model`` (a Llama, or a Qwen2 with its biases and its tokenizer's ``qwen2`` pre-tokenizer) as GGUF."""
    import gguf

    config = model.config
    qwen2 = config.model_type == "qwen2"
    writer = gguf.GGUFWriter(str(path), "qwen2" if qwen2 else "llama")
    writer.add_name("tiny-qwen2" if qwen2 else "tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = backend["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2" if qwen2 else "default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[prefix + "input_layernorm.weight"])
        query, key = state[prefix + "self_attn.q_proj.weight"], state[prefix + "self_attn.k_proj.weight"]
        if not qwen2:
            query = llama_cpp_permute(query, config.num_attention_heads)
            key = llama_cpp_permute(key, config.num_key_value_heads)
        writer.add_tensor(f"blk.{i}.attn_q.weight", query)
        writer.add_tensor(f"blk.{i}.attn_k.weight", key)
        writer.add_tensor(f"blk.{i}.attn_v.weight", state[prefix + "self_attn.v_proj.weight"])
        if qwen2:
            for name in ("q", "k", "v"):
                writer.add_tensor(f"blk.{i}.attn_{name}.bias", state[prefix + f"self_attn.{name}_proj.bias"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", state[prefix + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[prefix + "post_attention_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", state[prefix + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", state[prefix + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", state[prefix + "mlp.down_proj.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not config.tie_word_embeddings:  # a tied head is the embedding matrix: llama.cpp writes no output.weight
        writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
