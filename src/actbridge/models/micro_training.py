"""Train micro GPT-NeoX models (Pythia's architecture) on ``lm_train``.

What decides whether a few-million-parameter model learns to look facts up
instead of guessing among the names in its prompt (the probes behind each
point: docs/measurements.md):

* the prompt format (``data.template: compact``): the object right after its
  (subject, relation) key;
* answers of the same kind as the keys (people, not a dozen cities);
* several supervised questions per context, with the loss on the question
  tokens too (predicting a question's relation needs the same look-up);
* a learning rate near 1e-3 (higher rates stall or never learn the
  look-up), 0..``distractors`` distractor chains per training world, and
  1-hop questions only for the first ``curriculum_steps``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerBase

from actbridge.data.worlds import QUESTION_MARK, fact_lookup, first_relation_span

log = logging.getLogger(__name__)


SCHEDULES = ("cosine", "constant")
INITS = ("gpt_neox", "pytorch")


@dataclass(frozen=True)
class MicroModelConfig:
    """``models.<name>.micro`` in the config.

    The keys the schema requires have no default here; the others have the schema's default, or, for the
    keys the schema leaves unfilled (``loss_on``, ``hop_layer``, ``hop_weight``, ``tie_embeddings``, so that
    recipes of shipped models keep their hash), the trainer's default that the schema documents.
    """

    layers: int
    hidden: int
    heads: int
    steps: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    curriculum_steps: int = 500  # 1-hop questions only for the first steps
    seed: int = 0
    eval_every: int = 250
    rotary_fraction: float = 0.25  # Pythia's value; 1.0 rotates every head dimension
    loss_on: str = "questions"  # "answers": answer tokens only; "questions": every question and answer token
    # First-hop supervision (0 = off): the residual after this layer, read through the final layer norm and
    # the unembedding, must already name the first hop's entity at each question's first relation token.
    hop_layer: int = 0
    hop_weight: float = 1.0
    tie_embeddings: bool = False  # Pythia unties them
    schedule: str = "cosine"  # after the warm-up: "cosine" decays to 10% of the peak, "constant" keeps the peak
    # "gpt_neox": transformers' initialisation (everything N(0, 0.02)); "pytorch": each layer's own reset
    # (embeddings N(0, 1), projections uniform in +-1/sqrt(fan_in)), as Guo et al.'s model starts.
    init: str = "gpt_neox"

    @classmethod
    def from_dict(cls, values: dict) -> "MicroModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown micro-model keys {sorted(unknown)}; allowed: {sorted(fields)}")
        micro = cls(**values)
        if micro.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {micro.schedule!r}")
        if micro.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {micro.init!r}")
        if not 0 <= micro.hop_layer < micro.layers:
            raise ValueError(f"hop_layer must be in [0, layers) = [0, {micro.layers}), got {micro.hop_layer}")
        return micro


def build_gpt_neox_config(micro: MicroModelConfig, tokenizer: PreTrainedTokenizerBase, *,
                          max_positions: int = 512) -> GPTNeoXConfig:
    """Pythia's architecture (parallel residual, 25% rotary) at micro size."""
    return GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=micro.hidden,
        num_hidden_layers=micro.layers,
        num_attention_heads=micro.heads,
        intermediate_size=4 * micro.hidden,
        max_position_embeddings=max_positions,
        use_parallel_residual=True,
        tie_word_embeddings=micro.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "partial_rotary_factor": micro.rotary_fraction},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def initial_model(micro: MicroModelConfig, tokenizer: PreTrainedTokenizerBase, *,
                  max_positions: int = 512) -> GPTNeoXForCausalLM:
    """A fresh micro model, initialised as ``micro.init`` says.

    Why ``pytorch``: on Guo et al.'s in-context two-hop task, their network (PyTorch's layer defaults) leaves
    the plateau at uniform guessing among chain ends near step 800, while the same network under
    transformers' N(0, 0.02) init stayed below chance through step 1,000 (docs/findings.md, "Learning to
    compose"). Unit-scale embeddings keep each token's identity dominant in the residual stream at init.
    """
    model = GPTNeoXForCausalLM(build_gpt_neox_config(micro, tokenizer, max_positions=max_positions))
    if micro.init == "pytorch":
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm)):
                module.reset_parameters()
    return model


@dataclass
class TokenizedSequences:
    """Ragged token ids with a per-token loss mask (True on supervised tokens).

    ``hop_positions[i]`` are the token indices of sequence ``i``'s questions'
    first relations and ``hop_targets[i]`` the first token of the entity one
    hop from each question's subject (the bridge entity of a 2-hop question,
    the answer of a 1-hop one): the targets of first-hop supervision, filled
    in only when asked for.
    """

    input_ids: list[np.ndarray]
    loss_mask: list[np.ndarray]
    hop_positions: list[np.ndarray] = dataclasses.field(default_factory=list)
    hop_targets: list[np.ndarray] = dataclasses.field(default_factory=list)


def training_text(facts_text: str, questions: Sequence[tuple[str, str]]
                  ) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """Facts followed by question-answer pairs.

    Returns the text, the answers' character spans and the questions' spans
    (each question with its answer). Question tokens are predictable only by
    looking the subject up in the facts (which relations does it have?), so a
    loss on them trains the same retrieval the answers need, several times
    per sequence.
    """
    text = facts_text
    answer_spans, question_spans = [], []
    for question, answer in questions:
        question_start = len(text) + 1
        text += f" {question}"
        answer_spans.append((len(text) + 1, len(text) + 1 + len(answer)))
        text += f" {answer}."
        question_spans.append((question_start, len(text)))
    return text, answer_spans, question_spans


def tokenize_lm_split(table: pa.Table, tokenizer: PreTrainedTokenizerBase, *, loss_on: str,
                      max_question_hops: int | None = None, first_hop: bool = False) -> TokenizedSequences:
    """Tokenize ``lm_train`` rows into supervised sequences.

    ``loss_on`` picks the supervised tokens (``answers`` or whole ``questions``);
    ``max_question_hops`` keeps only questions up to that many hops (the
    curriculum's first phase); ``None`` keeps all. ``first_hop`` also locates
    each question's first relation and first-hop entity.
    """
    if loss_on not in ("answers", "questions"):
        raise ValueError(f"loss_on must be 'answers' or 'questions', got {loss_on!r}")
    texts, spans, hops = [], [], []
    for prompt, questions in zip(table.column("full_prompt").to_pylist(),
                                 table.column("train_questions").to_pylist()):
        facts_text = prompt[: prompt.rindex(f" {QUESTION_MARK}")]
        if max_question_hops is not None:
            questions = [q for q in questions if q["hops"] <= max_question_hops]
        text, answer_spans, question_spans = training_text(
            facts_text, [(q["question"], q["answer"]) for q in questions])
        texts.append(text + tokenizer.eos_token)
        spans.append(answer_spans if loss_on == "answers" else question_spans)
        if first_hop:
            hops.append(first_hops(facts_text, [q["question"] for q in questions], question_spans))
    encoded = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False)
    entities = sorted({entity for row in hops for _, entity in row})  # empty unless first_hop
    entity_ids = {entity: ids[0] for entity, ids in zip(
        entities, tokenizer([f" {e}" for e in entities], add_special_tokens=False)["input_ids"] if entities else [])}
    sequences = TokenizedSequences([], [])
    for row, (ids, offsets, supervised) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], spans)):
        offsets = np.asarray(offsets)
        mask = np.zeros(len(ids), dtype=bool)
        for start, end in supervised:
            # a token is supervised if its span overlaps (byte-level tokens carry the leading space)
            mask |= (offsets[:, 1] > start) & (offsets[:, 0] < end)
        sequences.input_ids.append(np.asarray(ids, dtype=np.int64))
        sequences.loss_mask.append(mask)
        if first_hop:
            # the relation's last token: the one whose span holds the relation's last character
            sequences.hop_positions.append(np.asarray(
                [int(np.flatnonzero(offsets[:, 1] >= end)[0]) for end, _ in hops[row]], dtype=np.int64))
            sequences.hop_targets.append(np.asarray([entity_ids[entity] for _, entity in hops[row]], dtype=np.int64))
    return sequences


def first_hops(facts_text: str, questions: Sequence[str], question_spans: Sequence[tuple[int, int]]
               ) -> list[tuple[int, str]]:
    """For each question: the end of its first relation in the training text, and that hop's entity."""
    lookup = fact_lookup(facts_text)
    hops = []
    for question, (question_start, _) in zip(questions, question_spans):
        _, end, subject, relation = first_relation_span(question)
        hops.append((question_start + end, lookup[(subject, relation)]))
    return hops


def pad_batch(sequences: Sequence[np.ndarray], pad_value: int | bool) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    padded = np.full((len(sequences), width), pad_value, dtype=sequences[0].dtype)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = sequence
    return torch.from_numpy(padded)


def lr_at(step: int, micro: MicroModelConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak or (``schedule: constant``) the peak throughout."""
    if step < micro.warmup_steps:
        return micro.learning_rate * (step + 1) / micro.warmup_steps
    if micro.schedule == "constant":
        return micro.learning_rate
    progress = (step - micro.warmup_steps) / max(micro.steps - micro.warmup_steps, 1)
    return micro.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def masked_lm_loss(model: GPTNeoXForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                   loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the positions where ``loss_mask`` is set ([batch, seq])."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [batch, seq, vocab]
    return _masked_next_token_loss(logits, input_ids, loss_mask)


def _masked_next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    predicted = logits[:, :-1].reshape(-1, logits.shape[-1])
    targets = input_ids[:, 1:].reshape(-1)
    weights = loss_mask[:, 1:].reshape(-1).float()
    losses = torch.nn.functional.cross_entropy(predicted, targets, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


def lm_and_hop_loss(model: GPTNeoXForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                    loss_mask: torch.Tensor, hop_layer: int, hop_rows: torch.Tensor, hop_positions: torch.Tensor,
                    hop_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM loss and the first-hop loss: cross-entropy of ``hop_targets`` read from the residual after
    ``hop_layer`` at ``(hop_rows, hop_positions)`` through the final layer norm and unembedding.

    Why: composing two hops needs the first hop's entity early enough that
    later layers can look its fact up; a model trained on answers alone looks
    it up only in its last layers (where a 1-hop question needs it) and
    plateaus at picking a random chain end. This loss asks for the look-up by
    ``hop_layer`` at every question's first relation, where 1-hop and 2-hop
    questions cannot yet be told apart.
    """
    output = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    lm_loss = _masked_next_token_loss(output.logits, input_ids, loss_mask)
    residual = output.hidden_states[hop_layer][hop_rows, hop_positions]  # [n_questions, hidden]
    hop_logits = model.get_output_embeddings()(model.gpt_neox.final_layer_norm(residual))
    return lm_loss, torch.nn.functional.cross_entropy(hop_logits, hop_targets)


def train_micro_model(
    micro: MicroModelConfig,
    tokenizer: PreTrainedTokenizerBase,
    lm_train: pa.Table,
    *,
    device: torch.device | str,
    evaluate: Callable[[GPTNeoXForCausalLM], dict[str, float]] | None = None,
    progress: Callable[[dict], None] | None = None,
    initial: GPTNeoXForCausalLM | None = None,
    checkpoint: str | Path | None = None,
) -> tuple[GPTNeoXForCausalLM, list[dict]]:
    """Train one micro model (from ``initial``'s weights if given); returns it and its training log
    (one dict per logged step).

    Bit-for-bit reproducible on CPU for the same inputs and seed. With ``checkpoint`` (a file path that only
    this recipe uses), the state is saved there at every logged step and a run that finds it resumes from it:
    a killed training loses at most ``eval_every`` steps and ends with the weights an unbroken run ends with.
    The caller removes the file once the model is stored.
    """
    torch.manual_seed(micro.seed)
    rng = np.random.Generator(np.random.PCG64(micro.seed))
    first_hop = micro.hop_layer > 0
    full = tokenize_lm_split(lm_train, tokenizer, loss_on=micro.loss_on, first_hop=first_hop)
    first_phase = tokenize_lm_split(lm_train, tokenizer, loss_on=micro.loss_on, max_question_hops=1,
                                    first_hop=first_hop)
    max_len = max(len(s) for s in full.input_ids)
    model = initial if initial is not None else initial_model(micro, tokenizer, max_positions=max(512, max_len))
    model.to(device).train()
    decay = [parameter for parameter in model.parameters() if parameter.ndim >= 2]
    no_decay = [parameter for parameter in model.parameters() if parameter.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": micro.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=micro.learning_rate, betas=(0.9, 0.98),
    )
    history: list[dict] = []
    first_step = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        first_step, history = _resume(Path(checkpoint), model=model, optimizer=optimizer, rng=rng)
        log.info("resumed from %s at step %d of %d", checkpoint, first_step, micro.steps)
    started = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    running_loss = running_hop_loss = 0.0
    pad_id = tokenizer.pad_token_id
    for step in range(first_step, micro.steps):
        data = first_phase if step < micro.curriculum_steps else full
        index = rng.integers(0, len(data.input_ids), size=micro.batch_size)
        input_ids = pad_batch([data.input_ids[i] for i in index], pad_id)
        loss_mask = pad_batch([data.loss_mask[i] for i in index], False)
        attention_mask = pad_batch([np.ones(len(data.input_ids[i]), dtype=np.int64) for i in index], 0)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, micro)
        if first_hop:
            hop_rows = np.concatenate([np.full(len(data.hop_positions[i]), row) for row, i in enumerate(index)])
            lm_loss, hop_loss = lm_and_hop_loss(
                model, input_ids.to(device), attention_mask.to(device), loss_mask=loss_mask.to(device),
                hop_layer=micro.hop_layer, hop_rows=torch.from_numpy(hop_rows).to(device),
                hop_positions=torch.from_numpy(np.concatenate([data.hop_positions[i] for i in index])).to(device),
                hop_targets=torch.from_numpy(np.concatenate([data.hop_targets[i] for i in index])).to(device))
            loss = lm_loss + micro.hop_weight * hop_loss
            running_hop_loss += hop_loss.item()
        else:
            loss = masked_lm_loss(model, input_ids.to(device), attention_mask.to(device),
                                  loss_mask=loss_mask.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running_loss += loss.item()
        last = step == micro.steps - 1
        if (step + 1) % micro.eval_every == 0 or last:
            logged_steps = (step % micro.eval_every) + 1
            record = {"step": step + 1, "loss": running_loss / logged_steps,
                      "lr": lr_at(step, micro), "seconds": time.perf_counter() - started}
            if first_hop:  # the combined loss above; the first-hop part alone here
                record["hop_loss"] = running_hop_loss / logged_steps
            running_loss = running_hop_loss = 0.0
            if evaluate is not None:
                model.eval()
                record.update(evaluate(model))
                model.train()
            history.append(record)
            if checkpoint is not None and not last:
                _save_checkpoint(Path(checkpoint), step=step + 1, model=model, optimizer=optimizer, rng=rng,
                                 history=history)
            if progress is not None:
                progress(record)
    model.eval()
    return model, history


def _save_checkpoint(path: Path, *, step: int, model: GPTNeoXForCausalLM, optimizer: torch.optim.Optimizer,
                     rng: np.random.Generator, history: list[dict]) -> None:
    """Everything the next steps depend on, written to a temporary file and renamed onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history},
               temporary)
    os.replace(temporary, path)


def _resume(path: Path, *, model: GPTNeoXForCausalLM, optimizer: torch.optim.Optimizer,
            rng: np.random.Generator) -> tuple[int, list[dict]]:
    """Restore the state :func:`_save_checkpoint` wrote; returns the next step and the log so far."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), list(state["history"])


def heldout_evaluator(heldout: pa.Table, tokenizer: PreTrainedTokenizerBase
                      ) -> Callable[[GPTNeoXForCausalLM], dict[str, float]]:
    """Exact match and top-1 among the candidates by hop count on held-out ``lm_train`` worlds (full-context
    prompts), and top-1 on those with the most chains (``heldout_top1_{k}hop_{n}chains``: the eval split's
    shape, where a one-cue reader of a balanced world scores 0.50 and only composition more)."""
    from actbridge.models.handle import ModelHandle
    from actbridge.models.scoring import score_answers

    hops = np.asarray(heldout.column("hops").to_pylist())
    prompts = heldout.column("full_prompt").to_pylist()
    answers = heldout.column("answer").to_pylist()
    candidates = heldout.column("candidates").to_pylist()
    chains = np.asarray([len(names) for names in candidates])
    crowded = chains == chains.max()

    def evaluate(model: GPTNeoXForCausalLM) -> dict[str, float]:
        scores = score_answers(ModelHandle.of(model, tokenizer), prompts, answers, candidates)
        top1 = scores.gold_rank == 1
        record = {}
        for n_hops in sorted(set(hops)):
            rows = hops == n_hops
            record[f"heldout_em_{n_hops}hop"] = round(float(scores.exact_match[rows].mean()), 4)
            record[f"heldout_top1_{n_hops}hop"] = round(float(top1[rows].mean()), 4)
            if (rows & crowded).any():
                record[f"heldout_top1_{n_hops}hop_{chains.max()}chains"] = round(float(top1[rows & crowded].mean()), 4)
        return record

    return evaluate


def split_heldout(lm_train: pa.Table, n_heldout: int) -> tuple[pa.Table, pa.Table]:
    """Last ``n_heldout`` rows (at most 10%) held out of training, for progress only."""
    n_heldout = min(n_heldout, lm_train.num_rows // 10)
    return lm_train.slice(0, lm_train.num_rows - n_heldout), lm_train.slice(lm_train.num_rows - n_heldout)
