"""Conversion of BERT-family (MHA) checkpoints to MHE: the fit, the alignment, the checkpoint and its failure modes."""

import copy
import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizer,
    GPT2Config,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
)

from mhe_transformers import MHEForMaskedLM, MHEForSequenceClassification
from mhe_transformers.interop.conversion import (
    REPORT_NAME,
    ConversionError,
    HeadProjections,
    SharedProjection,
    align_and_fit,
    convert_checkpoint,
    convert_model,
    fit_shared_projection,
    layer_input_moments,
    relative_error,
    split_heads,
    squared_norm,
)
from mhe_transformers.interop.distillation import RecoveryArguments, distill_hidden_states, hidden_state_mse
from mhe_transformers.utils.run_folder import OutputDirError

REPO = Path(__file__).resolve().parents[1]
WORDS = "the a of to and in is it that for cat dog sat on mat big small red runs sleeps".split()
TEXTS = ["the cat sat on the mat", "a big dog runs", "the small red cat sleeps", "it is a dog", "the mat is red"] * 4
NUM_HEADS, HEAD_DIM = 4, 8


def merge_heads(heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `split_heads` (checked below): (heads, hidden + 1, head_dim) -> (weight, bias)."""
    augmented = heads.transpose(0, 1).reshape(heads.shape[1], -1)
    return augmented[:-1].T, augmented[-1]


def tiny_bert_config(**overrides) -> BertConfig:
    values = dict(
        vocab_size=len(WORDS) + 5,
        hidden_size=NUM_HEADS * HEAD_DIM,
        num_hidden_layers=2,
        num_attention_heads=NUM_HEADS,
        intermediate_size=37,
        max_position_embeddings=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertConfig(**values | overrides)


def tiny_tokenizer(special=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")) -> BertTokenizer:
    return BertTokenizer(vocab={token: i for i, token in enumerate(list(special) + WORDS)})


@torch.no_grad()
def randomise(model, seed=0):
    """Random values everywhere (not BERT's init, whose zero biases and unit LayerNorms would hide mapping bugs)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


@torch.no_grad()
def give_mhe_form(model, attention_type, seed=1):
    """Overwrite every head's Q/K/V with exactly MHE form: W_i = W diag(e_i) (MUL) or W_i = W, b_i = b + e_i (ADD)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    for layer in model.base_model.encoder.layer:
        for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            shared = SharedProjection(
                torch.randn(hidden + 1, HEAD_DIM, generator=generator, dtype=torch.float64) * 0.3,
                1 + torch.randn(NUM_HEADS, HEAD_DIM, generator=generator, dtype=torch.float64) * 0.5,
            )
            weight, bias = merge_heads(shared.per_head(attention_type))
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
    return model


def save_checkpoint(folder: Path, model, tokenizer=None) -> Path:
    model.save_pretrained(folder)
    (tokenizer or tiny_tokenizer()).save_pretrained(folder)
    return folder


def batch(pad_token_id=0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, len(WORDS) + 5, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0  # right padding, as tokenizers do by default
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = pad_token_id
    return input_ids, attention_mask


# ------------------------------------------------------------------------------------------------------------------
# The fit and the alignment.
# ------------------------------------------------------------------------------------------------------------------


def objective(heads, shared: SharedProjection, attention_type, input_moment=None):
    """sum_i ||heads_i - fitted_i||^2, Frobenius or in the norm weighted by the inputs' second moment G."""
    difference = heads - shared.per_head(attention_type)
    weighted = difference if input_moment is None else input_moment @ difference
    return (difference * weighted).sum()


def input_moment(hidden, generator, num_inputs=200):
    """The second moment of `[x, 1]` for anisotropic inputs x (a few directions carry most of the variance)."""
    scales = torch.logspace(1, -2, hidden, dtype=torch.float64)
    inputs = torch.randn(num_inputs, hidden, generator=generator, dtype=torch.float64) * scales + 0.5
    augmented = torch.cat([inputs, torch.ones(num_inputs, 1, dtype=torch.float64)], 1)
    return augmented.T @ augmented / num_inputs


@pytest.mark.parametrize("weighted", [False, True], ids=["frobenius", "input-weighted"])
@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_fit_reaches_least_squares_optimum(attention_type, weighted):
    """No numerical optimiser, from any of several random starts, finds a lower objective than the closed form."""
    generator = torch.Generator().manual_seed(0)
    heads = torch.randn(4, 6, 3, generator=generator, dtype=torch.float64)
    moment = input_moment(5, generator) if weighted else None
    ours = float(objective(heads, fit_shared_projection(heads, attention_type, moment), attention_type, moment))

    best_numerical = float("inf")
    for _ in range(3):
        weight = torch.randn(6, 3, generator=generator, dtype=torch.float64).requires_grad_()
        embeddings = torch.randn(4, 3, generator=generator, dtype=torch.float64).requires_grad_()
        optimizer = torch.optim.LBFGS([weight, embeddings], max_iter=500, tolerance_grad=1e-12,
                                      tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = objective(heads, SharedProjection(weight, embeddings), attention_type, moment)
            loss.backward()
            return loss

        optimizer.step(closure)
        best_numerical = min(best_numerical, float(closure().detach()))
    assert ours <= best_numerical + 1e-9
    assert ours > 1e-3  # random heads are not of MHE form: the test compares two non-trivial optima
    # The optimum is reached, not merely approached: the numerical solver ends at the same value.
    assert best_numerical == pytest.approx(ours, rel=1e-6)


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_input_weighted_fit_with_identity_moment_is_the_plain_fit(attention_type):
    heads = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain = fit_shared_projection(heads, attention_type)
    identity = fit_shared_projection(heads, attention_type, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(identity.per_head(attention_type), plain.per_head(attention_type))


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_input_weighted_alignment_fits_the_outputs_better_and_never_increases(attention_type):
    """Weighting by the inputs trades weight error for output error on those inputs, which is what a layer computes;
    the weighted alignment is still a descent, from the weighted fit at identity."""
    generator = torch.Generator().manual_seed(2)
    heads = [torch.randn(NUM_HEADS, 7, HEAD_DIM, generator=generator, dtype=torch.float64) for _ in range(3)]
    projections = HeadProjections(*heads, torch.randn(NUM_HEADS, HEAD_DIM, 6, dtype=torch.float64))
    moment = input_moment(6, generator)
    objectives = []  # the weighted objective: sum over Q/K/V of (relative output error x ||heads||_G)^2
    for max_iterations in (0, 1, 3, 20):
        fit = align_and_fit(projections, attention_type, max_iterations, input_moment=moment)
        objectives.append(sum(error**2 * squared_norm(getattr(projections, name), moment)
                              for name, error in fit.output_fit_error.items()))  # fmt: skip
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(objectives, objectives[1:]))
    assert objectives[-1] < objectives[0]
    plain = align_and_fit(projections, attention_type, max_iterations=0)
    weighted = align_and_fit(projections, attention_type, max_iterations=0, input_moment=moment)
    for name in ("query", "key", "value"):
        plain_fitted = getattr(plain, name).per_head(attention_type)
        assert weighted.output_fit_error[name] < relative_error(getattr(projections, name), plain_fitted, moment)
        assert weighted.fit_error[name] > plain.fit_error[name]  # the weights themselves are fitted less well


@torch.no_grad()
def test_layer_input_moments_are_the_second_moments_of_each_layers_real_token_inputs():
    bert = randomise(BertModel(tiny_bert_config())).eval()
    tokenizer = tiny_tokenizer()
    texts = ["the cat sat on the mat", "a dog", "the small red cat sleeps on it"]
    moments = layer_input_moments(bert, tokenizer, texts, batch_size=2)  # padded batches of different lengths
    assert len(moments) == bert.config.num_hidden_layers
    inputs = [[] for _ in moments]
    for text in texts:  # one text at a time: no padding at all
        states = bert(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        for layer, state in enumerate(states[:-1]):
            inputs[layer].append(state[0].double())
    for moment, layer_inputs in zip(moments, inputs):
        x = torch.cat(layer_inputs)
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        torch.testing.assert_close(moment, x.T @ x / len(x), atol=1e-5, rtol=1e-5)
        assert moment[-1, -1] == 1.0


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_fit_is_exact_for_heads_of_mhe_form(attention_type):
    generator = torch.Generator().manual_seed(0)
    shared = SharedProjection(torch.randn(7, 3, generator=generator, dtype=torch.float64),
                              torch.randn(5, 3, generator=generator, dtype=torch.float64))
    heads = shared.per_head(attention_type)
    projections = HeadProjections(heads, heads.clone(), heads.clone(), torch.randn(5, 3, 6, dtype=torch.float64))
    fit = align_and_fit(projections, attention_type)
    assert max(fit.fit_error.values()) < 1e-10
    torch.testing.assert_close(fit.aligned.output, projections.output)  # nothing to rotate


def test_split_and_merge_heads_follow_berts_head_layout():
    linear = torch.nn.Linear(6, 4 * 3)
    heads = split_heads(linear, 4)
    x = torch.randn(2, 6, dtype=torch.float64)
    per_head_output = linear.double()(x).view(2, 4, 3)  # what BERT's .view(..., heads, head_dim) reads
    for i in range(4):
        torch.testing.assert_close(torch.cat([x, torch.ones(2, 1, dtype=x.dtype)], 1) @ heads[i], per_head_output[:, i])
    weight, bias = merge_heads(heads)
    assert torch.equal(weight, linear.weight.double()) and torch.equal(bias, linear.bias.double())


@torch.no_grad()
def test_alignment_keeps_the_mha_function_and_lowers_the_fit_error():
    """The aligned heads, with the output projection the converted model carries, compute the original function."""
    bert = randomise(BertModel(tiny_bert_config()))
    mhe, _ = convert_model(bert, "mhe_mul")
    aligned_bert = copy.deepcopy(bert)
    for layer, mhe_layer in zip(aligned_bert.encoder.layer, mhe.layers):
        attention = layer.attention
        projections = HeadProjections.from_linears(
            attention.self.query, attention.self.key, attention.self.value, attention.output.dense, NUM_HEADS
        )
        fit = align_and_fit(projections, "mhe_mul")
        assert fit.iterations > 0
        for name in ("query", "key", "value"):
            assert fit.fit_error[name] < fit.unaligned_fit_error[name]  # the change of basis pays off
            weight, bias = merge_heads(getattr(fit.aligned, name))
            getattr(attention.self, name).weight.copy_(weight)
            getattr(attention.self, name).bias.copy_(bias)
        attention.output.dense.weight.copy_(mhe_layer.attention.o_proj.weight)
    changed = aligned_bert.encoder.layer[0].attention.self.query.weight
    assert not torch.allclose(changed, bert.encoder.layer[0].attention.self.query.weight, atol=1e-3)
    input_ids, attention_mask = batch()
    expected = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    actual = aligned_bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_alignment_objective_never_increases():
    bert = randomise(BertModel(tiny_bert_config()))
    attention = bert.encoder.layer[0].attention
    projections = HeadProjections.from_linears(
        attention.self.query, attention.self.key, attention.self.value, attention.output.dense, NUM_HEADS
    )
    norms = {name: float(getattr(projections, name).norm()) for name in ("query", "key", "value")}
    objectives = []
    for max_iterations in (0, 1, 2, 5, 20):
        errors = align_and_fit(projections, "mhe_add", max_iterations).fit_error
        objectives.append(sum((errors[name] * norms[name]) ** 2 for name in norms))
    assert all(later <= earlier + 1e-9 for earlier, later in zip(objectives, objectives[1:]))
    assert objectives[-1] < 0.95 * objectives[0]


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints.
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_mlm_folder(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("bert") / "source", randomise(BertForMaskedLM(tiny_bert_config())))


@pytest.fixture(scope="module")
def converted(bert_mlm_folder):
    output_dir = bert_mlm_folder.parent / "mhe"
    result = convert_checkpoint(str(bert_mlm_folder), output_dir, "mhe_mul")
    return output_dir, result


def test_converted_checkpoint_shapes_files_and_report(converted):
    output_dir, result = converted
    model = result.model
    assert isinstance(model, MHEForMaskedLM)
    attention = model.model.layers[1].attention
    assert attention.q_proj.weight.shape == (HEAD_DIM, NUM_HEADS * HEAD_DIM)
    assert attention.v_head_embeddings.shape == (NUM_HEADS, HEAD_DIM)
    assert attention.o_proj.weight.shape == (NUM_HEADS * HEAD_DIM, NUM_HEADS * HEAD_DIM)
    names = {path.name for path in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_mhe.py", "modeling_mhe.py", REPORT_NAME,
            "tokenizer_config.json"} <= names
    assert not [path for path in output_dir.parent.iterdir() if path.name.startswith(".")]  # no temp folder left
    report = json.loads((output_dir / REPORT_NAME).read_text())
    assert [layer["layer"] for layer in report["layers"]] == [0, 1]
    for layer in report["layers"]:
        assert set(layer["fit_error"]) == {"query", "key", "value"}
        assert all(0 < error < 1 for error in layer["fit_error"].values())
    config = json.loads((output_dir / "config.json").read_text())
    assert config["attention_type"] == "mhe_mul" and "AutoModelForSequenceClassification" in config["auto_map"]


def test_copied_weights_are_bit_identical(bert_mlm_folder, converted):
    source = BertForMaskedLM.from_pretrained(bert_mlm_folder).state_dict()
    target = MHEForMaskedLM.from_pretrained(converted[0]).state_dict()
    pairs = {
        "embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight": "bert.embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias": "bert.embeddings.LayerNorm.bias",
    }
    for i in range(2):
        ours, theirs = f"layers.{i}.", f"bert.encoder.layer.{i}."
        for parameter in ("weight", "bias"):
            pairs[ours + f"attention_norm.{parameter}"] = theirs + f"attention.output.LayerNorm.{parameter}"
            pairs[ours + f"feed_forward.up_proj.{parameter}"] = theirs + f"intermediate.dense.{parameter}"
            pairs[ours + f"feed_forward.down_proj.{parameter}"] = theirs + f"output.dense.{parameter}"
            pairs[ours + f"output_norm.{parameter}"] = theirs + f"output.LayerNorm.{parameter}"
        pairs[ours + "attention.o_proj.bias"] = theirs + "attention.output.dense.bias"
    pairs = {"model." + ours: theirs for ours, theirs in pairs.items()}
    pairs |= {
        "lm_head.dense.weight": "cls.predictions.transform.dense.weight",
        "lm_head.dense.bias": "cls.predictions.transform.dense.bias",
        "lm_head.LayerNorm.weight": "cls.predictions.transform.LayerNorm.weight",
        "lm_head.LayerNorm.bias": "cls.predictions.transform.LayerNorm.bias",
        "lm_head.decoder.bias": "cls.predictions.bias",
        "lm_head.decoder.weight": "bert.embeddings.word_embeddings.weight",  # tied
    }
    for ours, theirs in pairs.items():
        assert torch.equal(target[ours], source[theirs]), ours


@pytest.mark.parametrize("attention_type", ["mhe_mul", "mhe_add"])
def test_conversion_is_exact_when_heads_have_mhe_form(attention_type):
    bert = give_mhe_form(randomise(BertForMaskedLM(tiny_bert_config())), attention_type)
    mhe, report = convert_model(bert, attention_type)
    assert max(max(layer["fit_error"].values()) for layer in report) < 1e-6
    input_ids, attention_mask = batch()
    with torch.no_grad():
        expected = bert(input_ids=input_ids, attention_mask=attention_mask).logits
        actual = mhe(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "roberta_class, mhe_class",
    [(RobertaForSequenceClassification, MHEForSequenceClassification), (RobertaForMaskedLM, MHEForMaskedLM)],
)
def test_roberta_positions_and_heads_convert_exactly(tmp_path, roberta_class, mhe_class):
    config = RobertaConfig(**tiny_bert_config(max_position_embeddings=26, type_vocab_size=1, num_labels=3).to_dict()
                           | {"pad_token_id": 1, "model_type": "roberta"})
    roberta = give_mhe_form(randomise(roberta_class(config)), "mhe_mul")
    tokenizer = tiny_tokenizer(("[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"))  # RoBERTa-style pad id 1
    folder = save_checkpoint(tmp_path / "roberta", roberta, tokenizer)
    mhe = convert_checkpoint(str(folder), tmp_path / "mhe", "mhe_mul").model
    assert type(mhe) is mhe_class
    assert mhe.config.max_position_embeddings == 24  # 26 minus RoBERTa's offset of pad_token_id + 1
    input_ids, attention_mask = batch(pad_token_id=1)
    with torch.no_grad():
        expected = roberta(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        actual = mhe(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    real = attention_mask.bool()  # RoBERTa gives pads their own position; real tokens must match exactly
    torch.testing.assert_close(actual.hidden_states[-1][real], expected.hidden_states[-1][real], atol=1e-4, rtol=1e-4)
    if mhe_class is MHEForMaskedLM:
        torch.testing.assert_close(actual.logits[real], expected.logits[real], atol=1e-4, rtol=1e-4)
    else:  # reads the first token only
        torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=1e-4)


def test_exact_conversion_loads_as_remote_code_and_matches_bert(tmp_path):
    """End to end: a MUL-form BERT, converted and saved, loads with trust_remote_code=True in a process where
    mhe_transformers cannot be imported, and computes the original BERT's logits."""
    bert = give_mhe_form(randomise(BertForMaskedLM(tiny_bert_config())), "mhe_mul")
    source = save_checkpoint(tmp_path / "bert", bert)
    output_dir = tmp_path / "mhe"
    convert_checkpoint(str(source), output_dir, "mhe_mul")
    input_ids, attention_mask = batch()
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, tmp_path / "batch.pt")
    check = textwrap.dedent(f"""
        import sys, torch
        sys.modules["mhe_transformers"] = None  # importing the package now fails: only the checkpoint's code is used
        from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM
        converted = AutoModelForMaskedLM.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        assert type(converted).__module__.startswith("transformers_modules"), type(converted).__module__
        AutoTokenizer.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
        original = BertForMaskedLM.from_pretrained({str(source)!r})
        inputs = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            torch.testing.assert_close(converted(**inputs).logits, original(**inputs).logits, atol=1e-4, rtol=1e-4)
        print("match")
    """)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "match" in result.stdout


# ------------------------------------------------------------------------------------------------------------------
# Refusals: a clear error, and nothing written.
# ------------------------------------------------------------------------------------------------------------------


def assert_refused(source, output_dir, match, **kwargs):
    with pytest.raises(ConversionError, match=match):
        convert_checkpoint(str(source), output_dir, **kwargs)
    assert not output_dir.exists()
    assert not [path for path in output_dir.parent.iterdir() if path.name.startswith(f".{output_dir.name}")]


def test_non_bert_architecture_is_refused(tmp_path):
    GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20).save_pretrained(tmp_path / "gpt2")
    assert_refused(tmp_path / "gpt2", tmp_path / "out", "'gpt2'")


def test_unmappable_head_count_is_refused(tmp_path):
    tiny_bert_config(hidden_size=30, num_attention_heads=4).save_pretrained(tmp_path / "bert")
    assert_refused(tmp_path / "bert", tmp_path / "out", "not a multiple of num_attention_heads=4")


def test_target_attention_type_must_be_mhe(bert_mlm_folder, tmp_path):
    assert_refused(bert_mlm_folder, tmp_path / "out", "attention_type", attention_type="mha")


@pytest.mark.parametrize(
    "missing, match",
    [("model.safetensors", "Cannot load the masked-lm model weights"), ("tokenizer", "Cannot load a tokenizer")],
)
def test_missing_file_is_refused(bert_mlm_folder, tmp_path, missing, match):
    source = tmp_path / "source"
    source.mkdir()
    for path in bert_mlm_folder.iterdir():
        is_tokenizer_file = path.name.startswith(("tokenizer", "vocab", "special_tokens"))
        if path.name != missing and not (missing == "tokenizer" and is_tokenizer_file):
            (source / path.name).write_bytes(path.read_bytes())
    assert_refused(source, tmp_path / "out", match)


def test_missing_weights_for_the_chosen_head_are_refused(bert_mlm_folder, tmp_path):
    # A masked-LM checkpoint has no pooler, which the base MHE model needs.
    assert_refused(bert_mlm_folder, tmp_path / "out", "no weights for", task="base")


def test_existing_output_is_kept_unless_overwrite(bert_mlm_folder, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("x")
    for overwrite in (False, True):  # not this tool's output: never replaced
        with pytest.raises(OutputDirError, match="did not write"):
            convert_checkpoint(str(bert_mlm_folder), output_dir, overwrite_output_dir=overwrite)
    assert (output_dir / "keep.txt").exists()
    with pytest.raises(OutputDirError, match="is, or holds, an input"):
        convert_checkpoint(str(bert_mlm_folder), bert_mlm_folder, overwrite_output_dir=True)
    assert (bert_mlm_folder / "config.json").is_file()


def test_failure_while_writing_leaves_nothing(bert_mlm_folder, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(MHEForMaskedLM, "save_pretrained", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        convert_checkpoint(str(bert_mlm_folder), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------------------
# Recovery training and the command line.
# ------------------------------------------------------------------------------------------------------------------


def test_hidden_state_mse_ignores_padding():
    teacher = (torch.zeros(1, 3, 2), torch.zeros(1, 3, 2))
    student = (torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]]))
    mask = torch.tensor([[1, 1, 0]])
    assert float(hidden_state_mse(student, teacher, mask, "last")) == pytest.approx(5.0)  # (1 + 9) / 2
    assert float(hidden_state_mse(student, teacher, mask, "all")) == pytest.approx(5.0)  # layer outputs only


def test_distillation_brings_the_student_closer_to_the_teacher():
    teacher = randomise(BertModel(tiny_bert_config()))
    student, _ = convert_model(teacher, "mhe_mul")
    tokenizer = tiny_tokenizer()
    inputs = tokenizer(TEXTS[:5], padding=True, return_tensors="pt")

    def distance():
        with torch.no_grad():
            student.eval()
            student_states = student(**inputs, output_hidden_states=True).hidden_states
            return float(hidden_state_mse(student_states, teacher(**inputs, output_hidden_states=True).hidden_states,
                                          inputs["attention_mask"]))

    before = distance()
    args = RecoveryArguments(recover_steps=25, recover_learning_rate=3e-3, recover_batch_size=8, recover_warmup_ratio=0)
    summary = distill_hidden_states(student, teacher, tokenizer, TEXTS, args)
    assert summary["steps"] == 25
    assert distance() < 0.5 * before


def test_command_line_converts_evaluates_and_recovers(bert_mlm_folder, tmp_path, monkeypatch, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    output_dir = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "convert_mha_to_mhe.py", "--model_name_or_path", str(bert_mlm_folder), "--output_dir", str(output_dir),
        "--attention_type", "mhe_add", "--evaluate", "--eval_file", str(texts), "--eval_samples", "6",
        "--recover_steps", "2", "--recover_batch_size", "4", "--train_file", str(texts),
    ])
    runpy.run_path(str(REPO / "scripts" / "convert_mha_to_mhe.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert "layer  1:" in printed and "similarity" in printed
    report = json.loads((output_dir / REPORT_NAME).read_text())
    assert report["attention_type"] == "mhe_add" and report["recovery"]["steps"] == 2
    assert set(report["similarity"]) == {"converted", "random_qkv", "random_init", "recovered", "texts"}
    assert report["similarity"]["texts"] == 6
    assert -1 <= report["similarity"]["recovered"] <= 1


def test_command_line_rejects_a_missing_text_file_before_converting(bert_mlm_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [
        "convert_mha_to_mhe.py", "--model_name_or_path", str(bert_mlm_folder), "--output_dir", str(tmp_path / "out"),
        "--evaluate", "--eval_file", str(tmp_path / "nope.txt"),
    ])
    with pytest.raises(SystemExit):
        runpy.run_path(str(REPO / "scripts" / "convert_mha_to_mhe.py"), run_name="__main__")
    assert not (tmp_path / "out").exists()
