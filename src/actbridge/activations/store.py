"""Hidden-state shards: extract once per model and split, read back verified.

Layout of ``activations/{model}/{split}/``::

    part-00000.parquet ...   one row per example x role: a row group per role, examples in dataset order
    manifest.json            what produced the shards; rows and row group per role of each shard
    SHA256SUMS               the sha256 of every file above (actbridge.io), checked by every reader

Each layer is its own ``fixed_size_list<float>[d]`` column (``layer_00`` is the
embedding output, ``layer_{L}`` the last entry of HF ``hidden_states``). The
bridges read one layer pair and one role at a time, so a column per layer
and a row group per role let Parquet decode exactly the bytes of that layer
and role (column projection, row-group selection), where a row per layer
would make every reader scan and filter all layers, and example-major rows
would make it decode every role to keep one.

Examples are processed in chunks of at most ``shard_rows`` rows; within a
chunk they are sorted by length into batches (less padding) and put back in
dataset order before the shard is written, so the shards of two models list
the same examples in the same order and memory stays bounded by one chunk.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actbridge.config import default_of
from actbridge import integrity
from actbridge.integrity import seal_problem
from actbridge.io import atomic_directory, write_json
from actbridge.logs import Progress
from actbridge.activations.roles import role_positions_for_table

if TYPE_CHECKING:  # hints only: importing torch and transformers costs seconds in jobs that only read shards
    import torch
    from transformers import PreTrainedModel

    from actbridge.models.handle import ModelHandle

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: one row group per role
MANIFEST = "manifest.json"
NUMPY_DTYPES = {"float16": np.float16, "float32": np.float32}
ARROW_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
RowKey = tuple[str, str]  # (example_id, mode): unique per dataset row
# What a shard row is about, before its state columns. Only these columns are dictionary-encoded: float
# states hardly repeat, so a dictionary of them only adds a look-up per value and makes the files larger
# and slower to read and write than plain zstd.
KEY_TYPES = {"example_id": pa.string(), "mode": pa.string(), "hops": pa.int8(), "role": pa.string(),
             "position": pa.int32(), "n_tokens": pa.int32()}
KEY_COLUMNS = list(KEY_TYPES)


class ActivationStoreError(RuntimeError):
    """A shard or manifest does not match what was recorded: rerun the extraction rule."""


@dataclass(frozen=True)
class ExtractionPlan:
    """What to extract: ``layers`` index HF ``hidden_states`` (0 = embeddings)."""

    layers: tuple[int, ...]
    roles: tuple[str, ...]
    prompt: str  # which prompt column the model reads: sender, receiver or full
    dtype: str = field(default_factory=default_of("activations.dtype"))
    shard_rows: int = field(default_factory=default_of("activations.shard_rows"))
    batch_size: int = field(default_factory=default_of("activations.batch_size"))


PROMPT_FOR_MODEL = {"sender": "sender", "receiver": "full"}
"""Which prompt each model reads: the sender its own (in ``asymmetric`` mode, the first-hop
fact only; in ``relay`` mode, every fact), the receiver the full context, whose states are what a bridge should deliver.
In ``shared`` mode both are the same text."""


def layer_column(layer: int) -> str:
    return f"layer_{layer:02d}"


def trunk(model: PreTrainedModel) -> torch.nn.Module:
    """The transformer without its LM head: hidden states need no logits."""
    return model.base_model


def shard_schema(layers: Sequence[int], hidden_size: int, dtype: str) -> pa.Schema:
    fields = [(name, KEY_TYPES[name]) for name in KEY_COLUMNS]
    fields += [(layer_column(layer), pa.list_(ARROW_DTYPES[dtype], hidden_size)) for layer in layers]
    return pa.schema(fields)


def example_chunks(n_examples: int, rows_per_example: int, shard_rows: int) -> list[range]:
    per_chunk = max(1, shard_rows // max(rows_per_example, 1))
    return [range(start, min(start + per_chunk, n_examples)) for start in range(0, n_examples, per_chunk)]


def hidden_states_at(model: PreTrainedModel, token_ids: Sequence[Sequence[int]], positions: np.ndarray,
                     layers: Sequence[int], pad_id: int, device: torch.device | str, *,
                     width: int | None = None) -> np.ndarray:
    """States at ``positions`` ([batch, n_roles], token indices) -> [batch, n_roles, n_layers, d] float32.

    Right padding with an attention mask (to ``width`` tokens if given): positions index real tokens only.
    """
    import torch  # here, not at module level: the shard readers (every bridge job) never need it

    from actbridge.models.padding import right_padded

    input_ids, attention = right_padded(token_ids, pad_id, width=width)
    with torch.inference_mode():
        outputs = trunk(model)(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                               output_hidden_states=True, use_cache=False)
        index = torch.as_tensor(np.clip(positions, 0, None)).to(device)  # [batch, n_roles]
        batch_index = torch.arange(len(token_ids), device=index.device)[:, None]
        # gather each layer's few positions before stacking: never copy every state of every layer
        picked = torch.stack([outputs.hidden_states[layer][batch_index, index] for layer in layers], dim=2)
        return picked.float().cpu().numpy()  # [batch, n_roles, n_layers, d]


def extract_activations(handle: ModelHandle, examples: pa.Table, *, plan: ExtractionPlan,
                        out_dir: str | os.PathLike[str], identity: dict) -> dict:
    """Write ``out_dir`` (shards + manifest) atomically; returns the manifest.

    Rows exist only where the role does (no ``bridge`` row in a 1-hop example).
    ``identity`` describes the model (hub id and revision, or path and weights
    sha256) and goes into the manifest verbatim.
    """
    model, tokenizer, pad_id, device = handle.model, handle.tokenizer, handle.pad_id, handle.device
    prompts = examples.column(f"{plan.prompt}_prompt").to_pylist()
    positions = role_positions_for_table(handle, examples, plan.prompt, plan.roles)
    role_positions = np.stack([positions[role] for role in plan.roles], axis=1)  # [n, n_roles]
    token_ids = handle.prompt_ids(prompts)
    hidden_size = handle.shape["hidden_size"]
    schema = shard_schema(plan.layers, hidden_size, plan.dtype)
    example_ids = examples.column("example_id").to_pylist()
    modes = examples.column("mode").to_pylist()
    hops = examples.column("hops").to_pylist()
    shards = []
    chunks = example_chunks(len(prompts), len(plan.roles), plan.shard_rows)
    from actbridge.models.encoding import distinct_rows
    from actbridge.models.memory import batches_sized_by, check_batch_fits  # imports torch: the shard readers never need it

    # identical prompts (with the same role positions) run once per shard: see distinct_rows
    distinct = [distinct_rows([(tuple(token_ids[i]), tuple(role_positions[i])) for i in chunk]) for chunk in chunks]
    n_distinct = sum(len(rows) for rows, _ in distinct)
    progress = Progress(n_distinct, f"extract {plan.prompt} prompts ({n_distinct} distinct of {len(prompts)})",
                        unit="prompts")
    longest = max((len(ids) for ids in token_ids), default=1)
    # every hidden state of the batch is returned before the roles' few are gathered
    check_batch_fits(model, tokens=plan.batch_size * longest, keys_per_query=longest,
                     kept_states=handle.shape["num_layers"] + 1,
                     key="activations.batch_size", value=plan.batch_size, device=device)
    with atomic_directory(out_dir) as tmp, batches_sized_by("activations.batch_size", plan.batch_size):
        for shard_index, (chunk, (first_rows, inverse)) in enumerate(zip(chunks, distinct)):
            states = np.zeros((len(chunk), len(plan.roles), len(plan.layers), hidden_size), dtype=np.float32)
            order = sorted(chunk, key=lambda i: len(token_ids[i]))  # length buckets: little padding
            for begin in range(0, len(order), plan.batch_size):
                # the batches and their padded width of running every row; a repeat is dropped from its batch,
                # which changes no other row's float32 states (the width would)
                batch = order[begin: begin + plan.batch_size]
                firsts = [i for i in batch if first_rows[inverse[i - chunk.start]] == i - chunk.start]
                if firsts:
                    states[np.asarray(firsts) - chunk.start] = hidden_states_at(
                        model, [token_ids[i] for i in firsts], role_positions[firsts], plan.layers, pad_id, device,
                        width=max(len(token_ids[i]) for i in batch))
                progress.update(len(firsts))
            states = states[first_rows[inverse]]  # every row from its prompt's first occurrence
            tables = shard_tables(schema, plan, chunk, states=states, role_positions=role_positions,
                                  example_ids=example_ids, modes=modes, hops=hops,
                                  n_tokens=[len(token_ids[i]) for i in chunk])
            name = f"part-{shard_index:05d}.parquet"
            with pq.ParquetWriter(tmp / name, schema, compression="zstd", use_dictionary=KEY_COLUMNS) as writer:
                for table in tables.values():
                    writer.write_table(table, row_group_size=table.num_rows)
            shards.append({"file": name, "rows": sum(table.num_rows for table in tables.values()),
                           "row_groups": {role: index for index, role in enumerate(tables)}})
            del states, tables
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "model": identity,
            "tokenizer": {"name_or_path": str(tokenizer.name_or_path), "vocab_size": len(tokenizer)},
            "plan": asdict(plan),
            "hidden_size": hidden_size,
            "n_examples": len(prompts),
            "rows": sum(shard["rows"] for shard in shards),
            "shards": shards,
        }
        write_json(manifest, tmp / MANIFEST)
    return manifest


def shard_tables(schema: pa.Schema, plan: ExtractionPlan, chunk: range, *, states: np.ndarray,
                 role_positions: np.ndarray, example_ids: list, modes: list, hops: list, n_tokens: list
                 ) -> dict[str, pa.Table]:
    """One table per role (``plan.roles`` order): the examples of ``chunk`` where the role exists, in dataset
    order. ``states`` is [len(chunk), n_roles, n_layers, d]; a role without rows in the chunk is left out."""
    numpy_dtype = NUMPY_DTYPES[plan.dtype]
    tables = {}
    for role_index, role in enumerate(plan.roles):
        rows = np.flatnonzero(role_positions[chunk.start: chunk.stop, role_index] >= 0)  # offsets in the chunk
        if not len(rows):
            continue
        examples = rows + chunk.start
        columns = {
            "example_id": pa.array([example_ids[i] for i in examples], pa.string()),
            "mode": pa.array([modes[i] for i in examples], pa.string()),
            "hops": pa.array([hops[i] for i in examples], pa.int8()),
            "role": pa.array([role] * len(rows), pa.string()),
            "position": pa.array(role_positions[examples, role_index], pa.int32()),
            "n_tokens": pa.array([n_tokens[offset] for offset in rows], pa.int32()),
        }
        for layer_index, layer in enumerate(plan.layers):
            flat = states[rows, role_index, layer_index].astype(numpy_dtype).reshape(-1)  # [rows * d]
            field = schema.field(layer_column(layer))
            columns[layer_column(layer)] = pa.FixedSizeListArray.from_arrays(
                pa.array(flat, field.type.value_type), field.type.list_size)
        tables[role] = pa.table(columns, schema=schema)
    return tables


class ActivationStore:
    """Verified read access to one ``activations/{model}/{split}/`` directory.

    Opening checks every file against the directory's seal (:mod:`actbridge.integrity`), then the manifest
    and every shard's rows, row groups and schema, so a truncated, missing or altered shard is an error
    naming the file, never a silent wrong read.
    """

    def __init__(self, directory: str | os.PathLike[str], *, verify: bool = True, quarantine: bool = False,
                 cached_shards: int = 8) -> None:
        """``quarantine``: on a failed check, move the directory aside to ``<name>.corrupt`` (derived data,
        kept for inspection) so that the next ``snakemake`` run sees the output missing and rebuilds it."""
        self.directory = Path(directory)
        # Fitting reads the same layer several times (normalization, fit, validation); keep the last few
        # decoded shards. Memory stays bounded: at most `cached_shards` shard-columns, whatever the split size.
        self._read_shard = functools.lru_cache(maxsize=cached_shards)(self._read_shard_uncached)
        try:
            problem = seal_problem(self.directory) if verify else None
            if problem is not None:
                raise ActivationStoreError(f"{self.directory} {problem}: rerun the rule that extracts it")
            self.manifest = self._read_manifest()
            if verify:
                self.verify()
        except ActivationStoreError as error:
            if not quarantine or not self.directory.is_dir():
                raise
            integrity.quarantine(self.directory, f"is not what its extraction job wrote ({error})")

    def _read_manifest(self) -> dict:
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise ActivationStoreError(f"{manifest_path} is missing: rerun the rule that extracts "
                                       f"{self.directory} (delete the directory first)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ActivationStoreError(f"{manifest_path}: schema version {manifest.get('schema_version')}, "
                                       f"this code reads {SCHEMA_VERSION}; rerun the extraction")
        return manifest

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.manifest["plan"]["layers"])

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.manifest["plan"]["roles"])

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["hidden_size"])

    @property
    def dtype(self) -> str:
        return self.manifest["plan"]["dtype"]

    def verify(self) -> None:
        expected = shard_schema(self.layers, self.hidden_size, self.dtype)
        for shard in self.manifest["shards"]:
            path = self.directory / shard["file"]
            hint = f"rerun the rule that extracts {self.directory} (delete the directory first)"
            if not path.is_file():
                raise ActivationStoreError(f"shard {path} is missing: {hint}")
            metadata = pq.read_metadata(path)
            if metadata.num_rows != shard["rows"]:
                raise ActivationStoreError(f"shard {path} has {metadata.num_rows} rows, manifest says "
                                           f"{shard['rows']}: {hint}")
            if metadata.num_row_groups != len(shard["row_groups"]):
                raise ActivationStoreError(f"shard {path} has {metadata.num_row_groups} row groups, the "
                                           f"manifest lists {len(shard['row_groups'])} (one per role): {hint}")
            if not metadata.schema.to_arrow_schema().equals(expected):
                raise ActivationStoreError(f"shard {path} has a different schema (dtype or hidden size) "
                                           f"than its manifest: {hint}")

    def _check_request(self, layer: int, role: str) -> None:
        if layer not in self.layers:
            raise ActivationStoreError(f"{self.directory} holds layers {list(self.layers)}, not {layer}: "
                                       "extract it (activations.layers) or pick another pair")
        if role not in self.roles:
            raise ActivationStoreError(f"{self.directory} holds roles {list(self.roles)}, not {role!r}")

    def iter_chunks(self, layer: int, role: str, modes: Sequence[str] | None = None
                    ) -> Iterator[tuple[list[RowKey], np.ndarray]]:
        """(row keys, states [rows, d] float32) per shard, one layer and role, dataset order.

        A row key is (example_id, mode): a world's shared and asymmetric rows share its example_id.
        """
        self._check_request(layer, role)
        for shard in self.manifest["shards"]:
            if role not in shard["row_groups"]:
                continue  # no example of this shard has the role
            ids, states = self._read_shard(self.directory / shard["file"], shard["row_groups"][role],
                                           layer_column(layer), None if modes is None else tuple(modes))
            if ids:
                yield ids, states

    def _read_shard_uncached(self, path: Path, row_group: int, column: str, modes: tuple[str, ...] | None
                             ) -> tuple[list[RowKey], np.ndarray]:
        # ParquetFile, not pq.read_table: no dataset machinery, which costs more than these small reads;
        # the role's row group only
        table = pq.ParquetFile(path).read_row_group(row_group, columns=["example_id", "mode", column])
        if modes is not None:
            table = table.filter(pc.is_in(table.column("mode"), value_set=pa.array(list(modes), pa.string())))
        flat = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        keys = list(zip(table.column("example_id").to_pylist(), table.column("mode").to_pylist()))
        return keys, flat.reshape(table.num_rows, self.hidden_size).astype(np.float32, copy=False)

    def read(self, layer: int, role: str, modes: Sequence[str] | None = None) -> tuple[list[RowKey], np.ndarray]:
        """Every row of one layer and role: (row keys, states [rows, d])."""
        ids, arrays = [], []
        for chunk_ids, states in self.iter_chunks(layer, role, modes):
            ids.extend(chunk_ids)
            arrays.append(states)
        if not arrays:
            return [], np.zeros((0, self.hidden_size), dtype=np.float32)
        return ids, np.concatenate(arrays)


def iter_aligned(sender: Iterator[tuple[list[RowKey], np.ndarray]],
                 receiver: Iterator[tuple[list[RowKey], np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Zip two (row keys, states) streams whose rows name the same examples in the same order.

    Shard boundaries may differ between the two models; a buffer of at most
    one shard per side re-cuts them. A mismatch of example ids is an error.
    """
    sides = ("sender", "receiver")
    buffer_ids: dict[str, list[RowKey]] = {side: [] for side in sides}
    buffer_states: dict[str, list[np.ndarray]] = {side: [] for side in sides}
    streams = {"sender": sender, "receiver": receiver}
    exhausted = {side: False for side in sides}

    def pull(side: str) -> None:
        try:
            ids, states = next(streams[side])
            buffer_ids[side].extend(ids)
            buffer_states[side].append(states)
        except StopIteration:
            exhausted[side] = True

    while True:
        for side in sides:
            if not buffer_ids[side] and not exhausted[side]:
                pull(side)
        if not buffer_ids["sender"] or not buffer_ids["receiver"]:
            if buffer_ids["sender"] or buffer_ids["receiver"]:
                raise ActivationStoreError("sender and receiver shards hold different numbers of rows "
                                           "for this role; re-extract both from the same dataset")
            return
        n_rows = min(len(buffer_ids["sender"]), len(buffer_ids["receiver"]))
        if buffer_ids["sender"][:n_rows] != buffer_ids["receiver"][:n_rows]:
            raise ActivationStoreError("sender and receiver shards list different examples; "
                                       "re-extract both from the same dataset")
        aligned = {}
        for side in sides:
            states = np.concatenate(buffer_states[side]) if len(buffer_states[side]) > 1 else buffer_states[side][0]
            aligned[side] = states[:n_rows]
            rest = states[n_rows:]
            buffer_states[side] = [rest] if len(rest) else []
            buffer_ids[side] = buffer_ids[side][n_rows:]
        yield aligned["sender"], aligned["receiver"]
