"""PEFT and sentence-transformers with MHE checkpoints, each checked by reloading in a fresh process."""

import inspect
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mhe_transformers.hub.push import run_without_package

SENTENCES = ["a small dog seen near the river", "to run in a quick way across the field", "the old chair"]


def result_of(process):
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


# Every head PEFT can adapt, with the Auto class that builds it, PEFT's task type for a plain `LoraConfig` (multiple
# choice has none of its own: SEQ_CLS saves its `classifier`) and the extra arguments of its model.
HEADS = {
    "sequence-classification": ("AutoModelForSequenceClassification", "SEQ_CLS", {"num_labels": 3}),
    "token-classification": ("AutoModelForTokenClassification", "TOKEN_CLS", {"num_labels": 3}),
    "question-answering": ("AutoModelForQuestionAnswering", "QUESTION_ANS", {}),
    "multiple-choice": ("AutoModelForMultipleChoice", "SEQ_CLS", {}),
    "causal-lm": ("AutoModelForCausalLM", "CAUSAL_LM", {}),
    "base": ("AutoModel", "FEATURE_EXTRACTION", {}),
}
SEEDS = (123, 987)


# Shared by the training here and the reload in a fresh process (PEFT_RELOAD carries their source).
def head_inputs(head, tokenizer, sentences):
    inputs = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    if head == "multiple-choice":  # two questions, each with the sentences as its choices
        inputs = {key: torch.stack([value, value.flip(0)]) for key, value in inputs.items()}
    return inputs


def head_outputs(head, output):
    if head == "question-answering":
        return torch.stack([output.start_logits, output.end_logits])
    if head == "base":  # every output: the hidden states, and the pooled one if there is one
        pooled = [output.pooler_output.flatten()] if output.pooler_output is not None else []
        return torch.cat([output.last_hidden_state.flatten(), *pooled])
    return output.logits


# Loads the base checkpoint and an adapter for every head, under each seed, in a process where mhe_transformers
# cannot be imported: only the checkpoint's remote code and the adapter define the model.
PEFT_RELOAD = "import json, sys, torch\n" + inspect.getsource(head_inputs) + inspect.getsource(head_outputs) + """
import transformers
from peft import PeftModel
checkpoint, sentences, heads, adapters = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4:]
tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
outputs = {}
for adapter in adapters:
    head = adapter.rsplit("/", 1)[-1].split("+")[0]
    auto_class, _, kwargs = heads[head]
    inputs = head_inputs(head, tokenizer, sentences)
    for seed in %r:
        torch.manual_seed(seed)
        base = getattr(transformers, auto_class).from_pretrained(checkpoint, trust_remote_code=True, **kwargs)
        model = PeftModel.from_pretrained(base, adapter).eval()
        with torch.no_grad():
            outputs[f"{adapter} {seed}"] = head_outputs(head, model(**inputs)).tolist()
print("RESULT " + json.dumps({"outputs": outputs, "blocked": "mhe_transformers" not in sys.modules}))
""" % (SEEDS,)


def training_loss(head, model, inputs):
    """A loss that trains every new weight of the head (random targets: the point is that the weights move)."""
    generator = torch.Generator().manual_seed(1)
    batch, length = inputs["input_ids"].shape[0], inputs["input_ids"].shape[-1]
    if head in ("sequence-classification", "multiple-choice"):
        labels = torch.randint(0, 3 if head == "sequence-classification" else inputs["input_ids"].shape[1], (batch,), generator=generator)
        return model(**inputs, labels=labels).loss
    if head == "token-classification":
        return model(**inputs, labels=torch.randint(0, 3, (batch, length), generator=generator)).loss
    if head == "question-answering":
        positions = torch.randint(1, length, (2, batch), generator=generator)
        return model(**inputs, start_positions=positions[0], end_positions=positions[1]).loss
    if head == "causal-lm":
        return model(**inputs, labels=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)).loss
    return model(**inputs).last_hidden_state[:, 0].pow(2).mean()


def train_lora(checkpoint, head, config_for, steps=5):
    import transformers
    from peft import get_peft_model

    auto_class, _, kwargs = HEADS[head]
    torch.manual_seed(0)
    base = getattr(transformers, auto_class).from_pretrained(checkpoint, **kwargs)
    model = get_peft_model(base, config_for(base))
    inputs = head_inputs(head, AutoTokenizer.from_pretrained(checkpoint), SENTENCES)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        training_loss(head, model, inputs).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        outputs = head_outputs(head, model(**inputs))
    return model, outputs


@pytest.fixture(scope="module")
def reloaded_adapters(tiny_pretrained_dir, tmp_path_factory):
    """For every head and both configs (a plain `peft.LoraConfig(task_type=...)` and `lora_config`): the adapter's
    folder, the outputs it gave when trained, and the outputs of its reloads in a fresh process under each seed."""
    peft = pytest.importorskip("peft", reason="needs the [peft] extra: pip install 'mhe-transformers[peft]'")
    from mhe_transformers.interop.lora import lora_config, register_peft

    register_peft()  # a plain LoraConfig then finds MHE's target modules
    folder = tmp_path_factory.mktemp("adapters")
    trained = {}
    for head, (_, task_type, _) in HEADS.items():
        configs = {"plain": lambda base, task_type=task_type: peft.LoraConfig(task_type=task_type, r=4),
                   "recipe": lambda base: lora_config(base, r=4)}  # fmt: skip
        for config_name, config_for in configs.items():
            model, outputs = train_lora(tiny_pretrained_dir, head, config_for)
            adapter = folder / f"{head}+{config_name}"
            model.save_pretrained(adapter)
            trained[head, config_name] = (adapter, outputs)
    process = run_without_package(
        PEFT_RELOAD, str(tiny_pretrained_dir), json.dumps(SENTENCES), json.dumps(HEADS),
        *(str(adapter) for adapter, _ in trained.values()),
    )  # fmt: skip
    result = result_of(process)
    assert result["blocked"]
    return {key: (adapter, outputs, {seed: torch.tensor(result["outputs"][f"{adapter} {seed}"]) for seed in SEEDS})
            for key, (adapter, outputs) in trained.items()}  # fmt: skip


@pytest.mark.parametrize("config_name", ["plain", "recipe"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_lora_adapter_reloads_to_identical_logits_in_another_process_and_seed(reloaded_adapters, head, config_name):
    adapter, trained, reloads = reloaded_adapters[head, config_name]
    first, second = (reloads[seed] for seed in SEEDS)
    assert torch.equal(first, second)  # nothing the seed draws: every new weight is in the adapter or the checkpoint
    torch.testing.assert_close(first, trained, atol=1e-5, rtol=0)


def test_the_classifier_pooler_is_in_the_adapter_peft_saves_by_default(reloaded_adapters):
    """The classification head's pooler, new in a classifier made from a masked-LM checkpoint, would differ between
    processes if the adapter left it out: PEFT's default modules_to_save for SEQ_CLS ("classifier") holds it."""
    from safetensors import safe_open

    for head in ("sequence-classification", "multiple-choice"):
        adapter, _, _ = reloaded_adapters[head, "plain"]
        with safe_open(adapter / "adapter_model.safetensors", "pt") as saved:
            keys = set(saved.keys())
        assert any("classifier.dense.weight" in key for key in keys), sorted(keys)
        assert any("classifier.out_proj.weight" in key for key in keys) and any("lora_A" in key for key in keys)


def test_a_plain_lora_config_targets_mhe_default_modules(reloaded_adapters):
    adapter, _, _ = reloaded_adapters["sequence-classification", "plain"]
    assert set(json.loads((adapter / "adapter_config.json").read_text())["target_modules"]) == {"q_proj", "v_proj"}


def test_lora_config_defaults(tiny_pretrained_dir):
    pytest.importorskip("peft", reason="needs the [peft] extra: pip install 'mhe-transformers[peft]'")
    from transformers import AutoModelForMultipleChoice

    from mhe_transformers.interop.lora import lora_config

    base = AutoModelForSequenceClassification.from_pretrained(tiny_pretrained_dir, num_labels=3)
    config = lora_config(base, r=4)
    assert config.task_type == "SEQ_CLS" and not config.modules_to_save  # PEFT saves "classifier" on its own
    choice = lora_config(AutoModelForMultipleChoice.from_pretrained(tiny_pretrained_dir), r=4)
    assert choice.task_type is None and choice.modules_to_save == ["classifier"]


SENTENCE_TRANSFORMERS_LOAD = """
import json, sys
from sentence_transformers import SentenceTransformer
folder, sentences = sys.argv[1], json.loads(sys.argv[2])
model = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
embeddings = model.encode(sentences, convert_to_tensor=True)
print("RESULT " + json.dumps({
    "modules": [type(module).__name__ for module in model],
    "embeddings": embeddings.tolist(),
    "blocked": "mhe_transformers" not in sys.modules,
}))
"""


def test_sentence_transformers_model_loads_without_the_package(tiny_pretrained_dir, tmp_path):
    pytest.importorskip(
        "sentence_transformers",
        reason="needs the [sentence-transformers] extra: pip install 'mhe-transformers[sentence-transformers]'",
    )
    from transformers import AutoModel

    from mhe_transformers.interop.sentence_transformer import save_sentence_transformer
    from mhe_transformers.utils.run_folder import OutputDirError

    output_dir = save_sentence_transformer(tiny_pretrained_dir, tmp_path / "st", pooling="mean", normalize=True)
    modules = json.loads((output_dir / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((output_dir / "1_Pooling/config.json").read_text())["pooling_mode"] == "mean"
    assert {"configuration_mhe.py", "modeling_mhe.py"} <= {p.name for p in output_dir.iterdir()}
    assert "SentenceTransformer(" in (output_dir / "README.md").read_text()  # the card's usage snippet
    with pytest.raises(OutputDirError, match="already holds an earlier run"):
        save_sentence_transformer(tiny_pretrained_dir, output_dir)  # ours, but not asked to replace it
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    with pytest.raises(OutputDirError, match="did not write"):
        save_sentence_transformer(tiny_pretrained_dir, foreign, overwrite_output_dir=True)
    assert (foreign / "notes.txt").read_text() == "my notes"

    result = result_of(run_without_package(SENTENCE_TRANSFORMERS_LOAD, str(output_dir), json.dumps(SENTENCES)))
    assert result["blocked"] and result["modules"] == ["Transformer", "Pooling", "Normalize"]

    # The same embeddings by hand: masked mean of the encoder's token states, L2-normalised.
    tokenizer = AutoTokenizer.from_pretrained(tiny_pretrained_dir)
    encoder = AutoModel.from_pretrained(tiny_pretrained_dir).eval()
    inputs = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(torch.tensor(result["embeddings"]), expected, atol=1e-5, rtol=1e-5)
