"""Held-out scores with their per-item results, for the comparison's records (experiments/compare.py) and the
bootstrap over items (experiments/statistics.py).

Language-model scores: the held-out text (one line per gloss or example, `heldout/<split>.txt` of a prepared
WordNet folder) is tokenized line by line with the special tokens, concatenated and cut into blocks of
`block_size` tokens, as pretraining does. A masked-LM is scored on a FIXED masking: blocks are taken in an order
drawn from `mask_seed` until at least `positions` positions are masked, each non-special token masked with
probability `mlm_probability`, every masked position shown `[MASK]` (no kept or random tokens: the score measures
prediction from the context alone). The masking depends on the text, the tokenizer and the seed only, so every
attention type and every training seed is scored on the same positions. A causal LM is scored on next-token loss
and accuracy over the same blocks (every position predicts the next one), taken in the same order until at least
`positions` tokens are predicted.

Items are blocks: each carries (correct predictions, predicted positions, summed loss), so that a bootstrap can
resample blocks (positions within a block are not independent). Classification items are the rows of the test
file, correct (1) or not (0), in file order.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

# The three numbers of an LM item (block): stored as separate arrays of one record field each.
LM_ITEM_FIELDS = ("correct", "count", "loss")


def encode_array(values: np.ndarray, dtype: str) -> str:
    """A numeric array as base64 of its little-endian bytes (`dtype`: "uint8", "uint16", "float32"), or of its
    packed bits ("bits", for 0/1 values): a record stays small (11,700 test items in 2 kB)."""
    values = np.asarray(values)
    if dtype == "bits":
        if values.size and not np.isin(values, (0, 1)).all():
            raise ValueError("bits encoding needs 0/1 values.")
        raw = np.packbits(values.astype(np.uint8)).tobytes()
    else:
        raw = values.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    return base64.b64encode(raw).decode("ascii")


def decode_array(text: str, dtype: str, length: int) -> np.ndarray:
    raw = base64.b64decode(text.encode("ascii"))
    if dtype == "bits":
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:length].astype(np.float64)
    values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(np.float64)
    if len(values) != length:
        raise ValueError(f"Encoded array holds {len(values)} values, expected {length}.")
    return values


def classification_items(correct: np.ndarray, split: str) -> dict[str, Any]:
    """A record's item field for a classification task: one bit per row of the split's file."""
    return {"split": split, "kind": "classification", "n": int(len(correct)), "correct": encode_array(correct, "bits")}


def lm_items(correct: np.ndarray, count: np.ndarray, loss: np.ndarray, split: str) -> dict[str, Any]:
    """A record's item field for a language-model score: per block, correct predictions, predicted positions (at
    most the block size) and the summed loss (float32)."""
    return {
        "split": split, "kind": "lm", "n": int(len(count)),
        "correct": encode_array(correct, "uint16"), "count": encode_array(count, "uint16"),
        "loss": encode_array(loss, "float32"),
    }  # fmt: skip


def decode_items(items: dict[str, Any]) -> dict[str, np.ndarray]:
    """{"correct", "count", "loss"?} arrays of one item field (a classification row counts 1)."""
    n = items["n"]
    if items["kind"] == "classification":
        return {"correct": decode_array(items["correct"], "bits", n), "count": np.ones(n)}
    return {
        "correct": decode_array(items["correct"], "uint16", n),
        "count": decode_array(items["count"], "uint16", n),
        "loss": decode_array(items["loss"], "float32", n),
    }


def prediction_correctness(predictions_file: str | Path, test_file: str | Path, label_column: str) -> np.ndarray:
    """0/1 per row of `test_file` (JSON lines): whether the fine-tuning pipeline's prediction (its predictions.jsonl:
    {"index", "prediction"} per row) equals the row's label. Every row must have exactly one prediction."""
    labels = [json.loads(line)[label_column] for line in Path(test_file).read_text(encoding="utf-8").splitlines() if line]
    predictions = {}
    for line in Path(predictions_file).read_text(encoding="utf-8").splitlines():
        if line:
            row = json.loads(line)
            predictions[int(row["index"])] = row["prediction"]
    if sorted(predictions) != list(range(len(labels))):
        raise ValueError(
            f"{predictions_file} holds predictions for {len(predictions)} rows, {test_file} has {len(labels)}: every "
            "row needs one (no max_predict_samples when the comparison scores items)."
        )
    return np.array([predictions[i] == label for i, label in enumerate(labels)], dtype=np.uint8)


def heldout_blocks(text_file: str | Path, tokenizer, block_size: int) -> dict[str, np.ndarray]:
    """The held-out text as pretraining cuts it: every line tokenized with its special tokens, concatenated, cut
    into full blocks of `block_size` tokens (the remainder dropped). Returns "input_ids" and "special" (1 where a
    special token), each of shape (blocks, block_size)."""
    lines = [line for line in Path(text_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{text_file} holds no text.")
    encoded = tokenizer(lines, return_special_tokens_mask=True, verbose=False)
    ids = np.fromiter((i for row in encoded["input_ids"] for i in row), dtype=np.int64)
    special = np.fromiter((m for row in encoded["special_tokens_mask"] for m in row), dtype=np.int64)
    blocks = len(ids) // block_size
    if blocks == 0:
        raise ValueError(f"{text_file} holds fewer than {block_size} tokens.")
    shape = (blocks, block_size)
    return {"input_ids": ids[: blocks * block_size].reshape(shape), "special": special[: blocks * block_size].reshape(shape)}


def fixed_masks(blocks: dict[str, np.ndarray], probability: float, positions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(block order, mask): blocks in an order drawn from `seed`, cut where at least `positions` positions are
    masked; mask[i, j] is whether position j of the i-th chosen block is masked (never a special token)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks["input_ids"]))
    mask = (rng.random(blocks["input_ids"].shape) < probability) & (blocks["special"] == 0)
    mask = mask[order]
    cumulative = np.cumsum(mask.sum(axis=1))
    if cumulative[-1] < positions:
        raise ValueError(f"The held-out text gives {int(cumulative[-1])} masked positions, fewer than {positions}.")
    keep = int(np.searchsorted(cumulative, positions)) + 1
    return order[:keep], mask[:keep]


def evaluate_masked_lm(model, blocks, probability: float, positions: int, seed: int, mask_token_id: int,
                       batch_size: int = 64) -> dict[str, Any]:  # fmt: skip
    """Masked-LM scores on the fixed masking (`fixed_masks`): accuracy and mean loss over the masked positions,
    with per-block items."""
    import torch

    order, mask = fixed_masks(blocks, probability, positions, seed)
    ids = torch.as_tensor(blocks["input_ids"][order])
    mask = torch.as_tensor(mask)
    correct, count, loss = [], [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            targets, shown = ids[start : start + batch_size], mask[start : start + batch_size]
            inputs = torch.where(shown, torch.full_like(targets, mask_token_id), targets)
            labels = torch.where(shown, targets, torch.full_like(targets, -100))
            logits = model(input_ids=inputs, attention_mask=torch.ones_like(inputs), labels=labels).logits
            logits = logits if logits.dim() == 2 else logits[shown]  # sparse prediction: the masked rows already
            token_loss = torch.nn.functional.cross_entropy(logits.float(), targets[shown], reduction="none")
            block_of = torch.nonzero(shown)[:, 0]
            n = len(targets)
            correct.append(torch.bincount(block_of, weights=(logits.argmax(-1) == targets[shown]).double(), minlength=n))
            count.append(shown.sum(dim=1).double())
            loss.append(torch.bincount(block_of, weights=token_loss.double(), minlength=n))
    return _lm_result(*(torch.cat(parts).numpy() for parts in (correct, count, loss)), perplexity=False)


def evaluate_causal_lm(model, blocks, positions: int, seed: int, batch_size: int = 64) -> dict[str, Any]:
    """Causal-LM scores (next-token accuracy, mean loss, perplexity) over blocks in the order of `fixed_masks`, until
    at least `positions` tokens are predicted, with per-block items."""
    import torch

    per_block = blocks["input_ids"].shape[1] - 1
    order = np.random.default_rng(seed).permutation(len(blocks["input_ids"]))
    needed = math.ceil(positions / per_block)
    if needed > len(order):
        raise ValueError(f"The held-out text gives {len(order) * per_block} predicted tokens, fewer than {positions}.")
    ids = torch.as_tensor(blocks["input_ids"][order[:needed]])
    correct, loss = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits[:, :-1].float()
            targets = batch[:, 1:]
            token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            correct.append((logits.argmax(-1) == targets).double().sum(dim=1))
            loss.append(token_loss.double().sum(dim=1))
    count = np.full(needed, float(per_block))
    return _lm_result(torch.cat(correct).numpy(), count, torch.cat(loss).numpy(), perplexity=True)


def _lm_result(correct: np.ndarray, count: np.ndarray, loss: np.ndarray, perplexity: bool) -> dict[str, Any]:
    mean_loss = float(loss.sum() / count.sum())
    metrics = {"accuracy": float(correct.sum() / count.sum()), "loss": mean_loss, "positions": int(count.sum())}
    if perplexity:
        metrics["perplexity"] = math.exp(mean_loss)
    return {"metrics": metrics, "arrays": (correct, count, loss)}


def evaluate_checkpoint(model_dir: str | Path, text_file: str | Path, objective: str, evaluation: dict[str, Any],
                        split: str) -> dict[str, Any]:  # fmt: skip
    """Load the pretrained model and its tokenizer from `model_dir` and score it on `text_file` (`evaluate_masked_lm`
    or `evaluate_causal_lm`, with `evaluation`: positions, mask_seed, mlm_probability, block_size). Returns
    {"metrics", "items"} for a record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    torch.manual_seed(0)  # nothing here is random, but a model built in eval mode should not depend on the state
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    blocks = heldout_blocks(text_file, tokenizer, evaluation["block_size"])
    if objective == "clm":
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        result = evaluate_causal_lm(model, blocks, evaluation["positions"], evaluation["mask_seed"])
    else:
        model = AutoModelForMaskedLM.from_pretrained(model_dir)
        result = evaluate_masked_lm(model, blocks, evaluation["mlm_probability"], evaluation["positions"],
                                    evaluation["mask_seed"], tokenizer.mask_token_id)  # fmt: skip
    return {"metrics": result["metrics"], "items": lm_items(*result["arrays"], split=split)}


__all__ = [
    "classification_items", "decode_items", "evaluate_causal_lm", "evaluate_checkpoint", "evaluate_masked_lm",
    "fixed_masks", "heldout_blocks", "lm_items", "prediction_correctness",
]  # fmt: skip
