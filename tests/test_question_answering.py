"""Question answering with MHEForQuestionAnswering: span decoding (Transformers 5 has no QA pipeline) and fine-tuning."""

import json

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from mhe_transformers.training.finetune_qa import answer_question, best_span
from mhe_transformers.utils.run_folder import OutputDirError

CONTEXT = "the quick dog runs near the river"
#          0   4     10  14   19   24  28
OFFSETS = [None, None, None, (0, 3), (4, 9), (10, 13), (14, 18), (19, 23), (24, 27), (28, 33), None]  # q q q | ctx | sep


def logits(peaks, length=len(OFFSETS)):
    values = np.zeros(length)
    for index, value in peaks.items():
        values[index] = value
    return values


def test_best_span_takes_the_highest_scoring_valid_span():
    best = best_span(logits({4: 5.0, 1: 9.0}), logits({5: 4.0, 2: 9.0}), OFFSETS, CONTEXT)
    # Question tokens (1, 2) score higher but are not context; "quick dog" = tokens 4..5.
    assert best == {"answer": "quick dog", "start": 4, "end": 13, "score": 9.0}
    assert CONTEXT[best["start"] : best["end"]] == best["answer"]


def test_best_span_drops_reversed_and_too_long_spans():
    # The best end comes before the best start: the best valid pair is chosen instead.
    best = best_span(logits({6: 5.0, 3: 1.0}), logits({4: 6.0, 8: 2.5}), OFFSETS, CONTEXT)
    assert best["answer"] == "runs near the" and best["score"] == 7.5
    # Limited to 2 tokens, "the quick" (3..4) beats "runs near the" (6..8).
    best = best_span(logits({6: 5.0, 3: 1.0}), logits({4: 6.0, 8: 2.5}), OFFSETS, CONTEXT, max_answer_length=2)
    assert best["answer"] == "the quick" and best["score"] == 7.0
    assert best_span(logits({}), logits({}), [None] * len(OFFSETS), CONTEXT) is None


def test_best_span_compares_windows():
    windows = [OFFSETS, OFFSETS]
    start = np.stack([logits({3: 1.0}), logits({9: 3.0})])
    end = np.stack([logits({3: 1.0}), logits({9: 3.0})])
    assert best_span(start, end, windows, CONTEXT)["answer"] == "river"


def test_answer_question_maps_the_model_span_back_to_the_context(tiny_pretrained_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_pretrained_dir).eval()
    filler = " ".join(["a small cat seen near the river"] * 6)
    context = f"{filler} then a quick horse runs across the field. {filler}"
    target_ids = tokenizer("horse", add_special_tokens=False)["input_ids"]

    def point_at_horse(module, args, kwargs, output):
        # Stand in for a trained model: high logits on the wordpieces of "horse" (which the question also contains,
        # where they must be ignored).
        input_ids = kwargs["input_ids"]
        is_target = torch.isin(input_ids, torch.tensor(target_ids))
        output.start_logits = torch.where(is_target, 10.0, 0.0)
        output.end_logits = torch.where(is_target, 10.0, 0.0)
        return output

    model.register_forward_hook(point_at_horse, with_kwargs=True)
    # max_length 32 with stride 8: the context is read in several windows.
    answer = answer_question(model, tokenizer, "which horse runs?", context, max_length=32, doc_stride=8)
    assert answer["answer"] == "horse"
    assert context[answer["start"] : answer["end"]] == "horse" and answer["start"] == context.index("horse")


# --- fine-tuning --------------------------------------------------------------------------------------------------


def squad_rows(rng, n, prefix):
    """SQuAD-shaped rows: the question names a class, the answer is that class's word in the context."""
    from conftest import CLASS_WORDS, make_sentence

    rows = []
    for i in range(n):
        label = list(CLASS_WORDS)[i % 3]
        context = " ".join(make_sentence(rng, rng.choice(list(CLASS_WORDS))) for _ in range(2))
        sentence = make_sentence(rng, label)
        word = next(w for w in CLASS_WORDS[label] if f" {w} " in f" {sentence} ")
        context = f"{context} {sentence}"
        start = context.rindex(f" {word} ") + 1 if f" {word} " in context else context.rindex(word)
        question = {"noun.animal": "which animal ?", "noun.artifact": "which object ?", "verb.motion": "which motion ?"}
        rows.append({"id": f"{prefix}-{i}", "question": question[label], "context": context,
                     "answers": {"text": [word], "answer_start": [start]}})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory):
    import random

    folder = tmp_path_factory.mktemp("squad")
    rng = random.Random(0)
    for split, n in (("train", 48), ("validation", 12)):
        rows = squad_rows(rng, n, split)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "train.jsonl", folder / "validation.jsonl"


def test_answer_spans_are_labelled_on_the_answer_tokens(tiny_pretrained_dir, squad_files):
    from mhe_transformers.training.finetune_qa import label_answer_spans

    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    rows = [json.loads(line) for line in squad_files[0].read_text().splitlines()[:8]]
    # Short windows with a stride: most answers fall in some windows only; the others point at [CLS].
    encoding = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                         max_length=24, stride=4, return_overflowing_tokens=True, return_offsets_mapping=True,
                         padding="max_length")  # fmt: skip
    samples = list(encoding["overflow_to_sample_mapping"])
    labelled = label_answer_spans(encoding, [r["answers"] for r in rows])
    found = set()
    for i, (start, end) in enumerate(zip(labelled["start_positions"], labelled["end_positions"])):
        if start == 0:
            assert end == 0
            continue
        answer = rows[samples[i]]["answers"]["text"][0]
        assert tokenizer.decode(labelled["input_ids"][i][start : end + 1]).replace(" ", "") == answer
        found.add(samples[i])
    assert found == set(range(len(rows)))  # every answer is labelled in at least one window


def test_question_answering_fine_tuning_end_to_end(tiny_pretrained_dir, squad_files, tmp_path):
    """The shipped config with local files, as its comment says to run it offline: its checkpoints (one per epoch),
    the final folder, and a rerun that replaces it."""
    from conftest import QUICK_TRAINING_ARGS

    from mhe_transformers.training import finetune_qa as question_answering

    output_dir = tmp_path / "qa"
    argv = [
        "--config", str(REPO_ROOT / "configs/finetune/squad.yaml"), *QUICK_TRAINING_ARGS,
        "--model_name_or_path", str(tiny_pretrained_dir),
        "--train_file", str(squad_files[0]), "--validation_file", str(squad_files[1]), "--output_dir", str(output_dir),
        "--max_seq_length", "48", "--doc_stride", "16", "--num_train_epochs", "8", "--per_device_train_batch_size", "8",
        "--learning_rate", "2e-3", "--warmup_steps", "0", "--logging_steps", "1",
    ]  # fmt: skip
    metrics = question_answering.main(argv)
    assert [path.name for path in output_dir.glob("checkpoint-*")] == ["checkpoint-48"]  # save_total_limit: 1
    assert 0 <= metrics["eval_exact_match"] <= 100 and 0 <= metrics["eval_f1"] <= 100
    assert metrics["eval_exact_match"] > 50  # the task is easy: the question names the class of the answer word
    predictions = json.loads((output_dir / "eval_predictions.json").read_text())
    contexts = {json.loads(l)["id"]: json.loads(l)["context"] for l in squad_files[1].read_text().splitlines()}
    assert predictions.keys() == contexts.keys()
    assert all(answer in contexts[i] for i, answer in predictions.items())  # spans of the context
    model = AutoModelForQuestionAnswering.from_pretrained(output_dir)
    assert type(model).__name__ == "MHEForQuestionAnswering"
    card = (output_dir / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "exact_match" in card
    # A rerun replaces it when asked to, and only then.
    with pytest.raises(OutputDirError, match="already holds an earlier run"):
        question_answering.main(argv + ["--num_train_epochs", "1"])
    again = question_answering.main(argv + ["--num_train_epochs", "1", "--overwrite_output_dir", "true"])
    assert json.loads((output_dir / "all_results.json").read_text()) == again
    assert [path.name for path in output_dir.glob("checkpoint-*")] == ["checkpoint-6"]


def test_squad_scores_follow_squad_definitions():
    from mhe_transformers.training.finetune_qa import squad_scores

    scores = squad_scores({"a": "The Cat", "b": "big red dog"}, {"a": ["cat"], "b": ["red dog", "a dog"]})
    assert scores["exact_match"] == 50.0  # "The Cat" == "cat" after normalisation; "big red dog" matches neither
    assert scores["f1"] == pytest.approx(100 * (1.0 + 0.8) / 2)  # b: best reference "red dog", P=2/3, R=1
